"""Applying webhook events through the forward-only rules, and re-applying logged deliveries.

Shared by both engines: the webhook view applies a fresh delivery (:func:`apply_event`), its
deferred task applies a logged one (:func:`process_delivery`), the admin replays one
(:func:`replay_delivery`), and the push engine applies deliveries that arrived before the upload
answer was stored (:func:`replay_early_webhooks`). Every effect goes through
:mod:`promptjuggler_django.status`; every attempt on a logged delivery is recorded on its row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import F
from django.utils import timezone

from . import signals, status
from .events import DOCUMENT, KNOWLEDGE_BASE, RUN, Event, RejectedBody, stored_event
from .models import WebhookDelivery

logger = logging.getLogger("promptjuggler_django.webhooks")

Outcome = WebhookDelivery.Outcome

_DETAIL_LENGTH = 1000


def _apply_document(event: Event, observed_at: datetime, delivery: WebhookDelivery) -> str:
    return status.apply_document_status(
        remote_id=event.object_id,
        status=event.status,
        chunk_count=event.chunk_count,
        observed_at=observed_at,
        delivery=delivery,
    )


def _apply_knowledge_base(event: Event, observed_at: datetime, delivery: WebhookDelivery) -> str:
    return status.apply_knowledge_base_status(
        remote_id=event.object_id,
        status=event.status,
        document_count=event.document_count,
        chunk_count=event.chunk_count,
        observed_at=observed_at,
        delivery=delivery,
    )


#: The run kind each per-event URL names; the shared URL's ``run.finished`` names none.
_RUN_KINDS: dict[str, str] = {
    WebhookDelivery.EventType.PROMPT_RUN_FINISHED: "prompt",
    WebhookDelivery.EventType.WORKFLOW_RUN_FINISHED: "workflow",
}


def _apply_run(event: Event, observed_at: datetime, delivery: WebhookDelivery) -> str:
    outcome = status.apply_run_status(
        remote_id=event.object_id,
        status=event.status,
        observed_at=observed_at,
        kind=_RUN_KINDS.get(event.event_type),
        delivery=delivery,
    )
    if outcome != status.UNKNOWN_OBJECT:
        return outcome
    # Not a run the app started (or its start answer is not stored yet: the push of that
    # answer replays this delivery). The app relays it; a duplicate never gets here (its key
    # is taken), so it is signalled once per delivery, and again per replay.
    signals.send_on_commit(
        signals.run_finished,
        sender=None,
        event_type=event.event_type,
        run_id=event.object_id,
        status=event.status,
        delivery=delivery,
    )
    return Outcome.APPLIED


#: How each event family is applied, inside the caller's transaction; each returns an outcome.
APPLIERS: dict[str, Callable[[Event, datetime, WebhookDelivery], str]] = {
    DOCUMENT: _apply_document,
    KNOWLEDGE_BASE: _apply_knowledge_base,
    RUN: _apply_run,
}


def apply_event(event: Event, observed_at: datetime, delivery: WebhookDelivery) -> str:
    """Apply ``event`` through the forward-only rules and return the outcome.

    ``observed_at`` (the signature's timestamp) orders events: an older observation never
    overwrites a newer one.
    """
    return APPLIERS[event.family](event, observed_at, delivery)


def event_as_sql(event: Event, observed_at: datetime, *, using: str) -> status.OutcomeSQL | None:
    """:func:`apply_event` as part of the statement that logs its delivery on ``using``, or
    ``None`` where that cannot be (see :func:`status.document_status_as_sql`; a document's
    status only)."""
    if event.family != DOCUMENT:
        return None
    return status.document_status_as_sql(
        remote_id=event.object_id,
        status=event.status,
        chunk_count=event.chunk_count,
        observed_at=observed_at,
        using=using,
    )


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_DETAIL_LENGTH]


def apply_logged(
    lookup: dict[str, Any],
    *,
    event: Event | None = None,
    only_if: str | None = None,
    retry: bool = False,
    replay: bool = False,
) -> str | None:
    """Apply a logged delivery under its row lock and record the attempt; ``None`` if gone.

    ``only_if`` leaves a delivery whose outcome is another alone (a deferred task run twice);
    ``retry`` applies an ``error`` delivery received again and counts it as a duplicate;
    ``replay`` counts a replay. ``event`` (the body in hand) saves re-reading the logged body.
    """
    pk = None
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.select_for_update().filter(**lookup).first()
            if delivery is None:
                return None
            pk = delivery.pk
            if retry and delivery.outcome != Outcome.ERROR:  # another retry got there first
                delivery.duplicate_count += 1
                delivery.save(update_fields=["duplicate_count"])
                return Outcome.DUPLICATE
            if only_if is not None and delivery.outcome != only_if:
                return delivery.outcome
            try:
                event = event or stored_event(delivery)
            except RejectedBody as rejected:
                delivery.outcome, delivery.detail = rejected.outcome, rejected.detail
            else:
                observed_at = delivery.signature_timestamp or delivery.received_at
                delivery.outcome = apply_event(event, observed_at, delivery)
                delivery.detail = ""
            delivery.processed_at = timezone.now()
            delivery.duplicate_count += int(retry)
            delivery.replay_count += int(replay)
            delivery.save(
                update_fields=[
                    "outcome",
                    "detail",
                    "processed_at",
                    "duplicate_count",
                    "replay_count",
                ]
            )
            return delivery.outcome
    except Exception as exc:
        logger.exception("Applying a logged PromptJuggler webhook delivery failed.")
        if pk is not None:
            WebhookDelivery.objects.filter(pk=pk).update(
                outcome=Outcome.ERROR,
                detail=describe_error(exc),
                processed_at=timezone.now(),
                duplicate_count=F("duplicate_count") + int(retry),
                replay_count=F("replay_count") + int(replay),
            )
        return Outcome.ERROR


def process_delivery(delivery_id: int) -> str | None:
    """Apply a delivery stored by the deferred mode (the task's body); idempotent.

    A delivery no longer ``received`` is left alone and its outcome returned; ``None`` if it is
    gone (pruned).
    """
    return apply_logged({"pk": delivery_id}, only_if=Outcome.RECEIVED)


def replay_delivery(delivery_id: int) -> str | None:
    """Apply a logged delivery again through the same forward-only rules; the new outcome.

    Nothing moves backwards: replaying an old delivery usually ends ``stale``. The attempt is
    recorded (``replay_count``, ``outcome``, ``processed_at``); a run event is signalled again.
    ``None`` if the delivery is gone.
    """
    return apply_logged({"pk": delivery_id}, replay=True)


def process_pending_deliveries(limit: int = 500) -> int:
    """Apply deferred deliveries still ``received`` (their task was lost); how many were tried.

    ``promptjuggler_sync`` may call it; polling covers the same ground for documents anyway.
    """
    ids = list(
        WebhookDelivery.objects.filter(outcome=Outcome.RECEIVED)
        .order_by("received_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    for delivery_id in ids:
        process_delivery(delivery_id)
    return len(ids)


#: The event types a run's early deliveries may have been logged as.
RUN_EVENT_TYPES = (
    WebhookDelivery.EventType.RUN_FINISHED,
    WebhookDelivery.EventType.PROMPT_RUN_FINISHED,
    WebhookDelivery.EventType.WORKFLOW_RUN_FINISHED,
)


def replay_early_webhooks(remote_ids: Sequence[Any], *, using: str | None = None) -> int:
    """Apply logged ``knowledgedocument.finished`` deliveries that found no row at the time.

    PromptJuggler may finish a small document and send its webhook before the upload answer
    is stored here; that delivery was logged as ``unknown_object``. Once the remote id is on
    its row, the logged deliveries are applied again (forward-only, so order does not matter).
    One query when there is nothing to replay.
    """
    return _replay(
        remote_ids,
        outcome=Outcome.UNKNOWN_OBJECT,
        event_types=(WebhookDelivery.EventType.DOCUMENT_FINISHED,),
        using=using,
    )


def replay_early_run_webhooks(remote_ids: Sequence[Any], *, using: str | None = None) -> int:
    """Apply logged run deliveries that arrived before the run's start answer was stored.

    Such a delivery found no run with its id, so it was relayed as a run the app did not start
    (``applied``, :data:`~promptjuggler_django.signals.run_finished`). Once the id is on the
    row it is applied again, forward-only. One query when there is nothing to replay.
    """
    return _replay(remote_ids, outcome=Outcome.APPLIED, event_types=RUN_EVENT_TYPES, using=using)


def _replay(
    remote_ids: Sequence[Any], *, outcome: str, event_types: Sequence[str], using: str | None
) -> int:
    if not remote_ids:
        return 0
    deliveries = list(
        WebhookDelivery.objects.using(using or DEFAULT_DB_ALIAS)
        .filter(
            object_id__in=[str(r) for r in remote_ids],
            outcome=outcome,
            event_type__in=event_types,
        )
        .order_by("signature_timestamp", "pk")
        .values_list("pk", flat=True)
    )
    for delivery_id in deliveries:
        replay_delivery(delivery_id)
    return len(deliveries)
