"""Admin for knowledge bases, documents, remote deletions and the webhook delivery log."""

from . import documents, webhooks  # noqa: F401  (each module registers its ModelAdmins)
