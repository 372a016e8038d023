"""Admin for knowledge bases, documents, remote deletions, runs and the webhook delivery log."""

from . import documents, runs, webhooks  # noqa: F401  (each module registers its ModelAdmins)
