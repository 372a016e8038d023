"""Deprecated: the webhook delivery log is part of :mod:`promptjuggler_django.webhooks`.

Import these names from ``promptjuggler_django.webhooks``; this module re-exports them for one
release.
"""

from __future__ import annotations

import warnings

from .webhooks import (
    dedupe_key,
    log_copy,
    process_delivery,
    process_pending_deliveries,
    prune_deliveries,
    receive,
    replay_delivery,
)

__all__ = [
    "dedupe_key",
    "log_copy",
    "process_delivery",
    "process_pending_deliveries",
    "prune_deliveries",
    "receive",
    "replay_delivery",
]

warnings.warn(
    "promptjuggler_django.deliveries is deprecated: import from promptjuggler_django.webhooks.",
    DeprecationWarning,
    stacklevel=2,
)
