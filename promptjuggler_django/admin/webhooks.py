"""Admin for the webhook delivery log."""
