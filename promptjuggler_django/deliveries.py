"""Deprecated: the webhook delivery log is part of :mod:`promptjuggler_django.webhooks`.

Import the log's functions from ``promptjuggler_django.webhooks``, the appliers (``apply_event``,
``APPLIERS``) from ``promptjuggler_django.apply`` and ``Outcome`` as
``WebhookDelivery.Outcome`` from ``promptjuggler_django.models``; this module re-exports every
name it documented for one release.
"""

from __future__ import annotations

import warnings

from .apply import APPLIERS, apply_event
from .models import WebhookDelivery
from .webhooks import (
    dedupe_key,
    log_copy,
    process_delivery,
    process_pending_deliveries,
    prune_deliveries,
    receive,
    replay_delivery,
)

Outcome = WebhookDelivery.Outcome

__all__ = [
    "APPLIERS",
    "Outcome",
    "apply_event",
    "dedupe_key",
    "log_copy",
    "process_delivery",
    "process_pending_deliveries",
    "prune_deliveries",
    "receive",
    "replay_delivery",
]

warnings.warn(
    "promptjuggler_django.deliveries is deprecated: import from promptjuggler_django.webhooks "
    "(the delivery log), promptjuggler_django.apply (apply_event, APPLIERS) or "
    "promptjuggler_django.models (WebhookDelivery.Outcome).",
    DeprecationWarning,
    stacklevel=2,
)
