"""Admin for knowledge bases, documents and remote deletions."""
