"""The webhook delivery log: record, deduplicate and apply verified deliveries.

Deliveries are at-least-once, duplicated and out of order. Each verified delivery is recorded
with a dedupe key (``sha256(t + "." + body)``) *in the same transaction as its effect*: a
duplicate finds the key taken and changes nothing, and an effect that fails leaves no key behind
that would swallow PromptJuggler's retry (the failure is logged apart as an ``error`` row, and a
retry of it is applied again). Effects go through :mod:`promptjuggler_django.status`, the
forward-only rules that polling uses too.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from . import signals, status, tasks
from .conf import pj_settings
from .events import DOCUMENT, KNOWLEDGE_BASE, RUN, Event, RejectedBody, parse_event, stored_event
from .models import WebhookDelivery
from .signature import VerifiedSignature

logger = logging.getLogger(__name__)

Outcome = WebhookDelivery.Outcome

_DETAIL_LENGTH = 1000


def dedupe_key(timestamp: int, body: bytes) -> str:
    """``sha256(<t>.<body>)``: a redelivery (same timestamp, same bytes) has the same key."""
    return hashlib.sha256(str(timestamp).encode("ascii") + b"." + body).hexdigest()


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


def _apply_run(event: Event, observed_at: datetime, delivery: WebhookDelivery) -> str:
    # Runs have no local row; the app relays them. A duplicate never gets here (its key is
    # taken), so a run is signalled once per delivery, and again per replay.
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


def log_copy(body: bytes, limit: int) -> tuple[str, bool]:
    """The body as text for the log, at most ``limit`` bytes, and whether it was cut."""
    # The incremental decoder drops a character split by the cut rather than mangling it;
    # undecodable bytes become U+FFFD, and so does NUL (PostgreSQL refuses it in text).
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(body[:limit], final=False)
    return text.replace("\x00", "\ufffd"), len(body) > limit


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_DETAIL_LENGTH]


def receive(
    body: bytes,
    verified: VerifiedSignature,
    *,
    expected: str | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    """Record one verified delivery and, in inline mode, apply it; return its outcome.

    ``expected`` is the event type of a per-event URL (``None``: told apart by shape). Three
    queries when a document event applies: the locked read, the update, the log insert.
    """
    key = dedupe_key(verified.timestamp, body)
    observed_at = datetime.fromtimestamp(verified.timestamp, tz=UTC)
    event: Event | None = None
    try:
        event = parse_event(body, expected)
    except RejectedBody as rejected:
        event_type, outcome, detail = rejected.event_type, rejected.outcome, rejected.detail
    else:
        event_type, outcome, detail = event.event_type, Outcome.RECEIVED, ""
    deferred = event is not None and pj_settings.WEBHOOK_PROCESSING == "deferred"
    # The deferred task reads the event back from the log, so it keeps the whole body.
    limit = pj_settings.WEBHOOK_MAX_BODY_BYTES if deferred else pj_settings.WEBHOOK_LOG_BODY_BYTES
    logged_body, truncated = log_copy(body, limit)
    delivery = WebhookDelivery(
        event_type=event_type,
        object_id=event.object_id if event else "",
        status=event.status if event else "",
        signature_timestamp=observed_at,
        secret_index=verified.secret_index,
        dedupe_key=key,
        body=logged_body,
        body_truncated=truncated,
        headers=headers or {},
        outcome=outcome,
        detail=detail,
    )
    try:
        with transaction.atomic():
            if event is not None and not deferred:
                delivery.outcome = apply_event(event, observed_at, delivery)
            if delivery.outcome != Outcome.RECEIVED:
                delivery.processed_at = timezone.now()
            # Inserted last: a taken key rolls the effect back with it.
            delivery.save(force_insert=True)
            if deferred:
                transaction.on_commit(
                    partial(tasks.enqueue, tasks.process_webhook_task, delivery.pk)
                )
    except IntegrityError as exc:
        again = _receive_again(key, event)
        if again is None:  # no row holds the key: the integrity error came from the effect
            logger.error("Applying a PromptJuggler webhook delivery hit %s.", _describe(exc))
            _record_error(delivery, exc)
            return Outcome.ERROR
        return again
    except Exception as exc:
        logger.exception("Applying a PromptJuggler webhook delivery failed; logged as error.")
        _record_error(delivery, exc)
        return Outcome.ERROR
    return delivery.outcome


def _receive_again(key: str, event: Event | None) -> str | None:
    """A delivery whose key is taken: a duplicate, or the retry of one that failed.

    ``None`` when no row holds the key after all.
    """
    duplicates = (
        WebhookDelivery.objects.filter(dedupe_key=key)
        .exclude(outcome=Outcome.ERROR)
        .update(duplicate_count=F("duplicate_count") + 1)
    )
    if duplicates:
        return Outcome.DUPLICATE
    return _process_stored({"dedupe_key": key}, event=event, retry=True)


def _record_error(delivery: WebhookDelivery, exc: BaseException) -> None:
    """Log a delivery whose effect rolled back, in a transaction of its own."""
    delivery.pk = None
    delivery.outcome = Outcome.ERROR
    delivery.detail = _describe(exc)
    delivery.processed_at = timezone.now()
    try:
        with transaction.atomic():
            delivery.save(force_insert=True)
    except Exception:
        logger.exception("Could not log a failed PromptJuggler webhook delivery.")


def _process_stored(
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
                detail=_describe(exc),
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
    return _process_stored({"pk": delivery_id}, only_if=Outcome.RECEIVED)


def replay_delivery(delivery_id: int) -> str | None:
    """Apply a logged delivery again through the same forward-only rules; the new outcome.

    Nothing moves backwards: replaying an old delivery usually ends ``stale``. The attempt is
    recorded (``replay_count``, ``outcome``, ``processed_at``); a run event is signalled again.
    ``None`` if the delivery is gone.
    """
    return _process_stored({"pk": delivery_id}, replay=True)


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


def prune_deliveries(cutoff: datetime, *, batch_size: int = 1000) -> int:
    """Delete deliveries received before ``cutoff``, ``batch_size`` per statement; how many.

    Each batch is its own short statement, so a large log is pruned without long locks.
    """
    deleted = 0
    old = WebhookDelivery.objects.filter(received_at__lt=cutoff).order_by("pk")
    while ids := list(old.values_list("pk", flat=True)[:batch_size]):
        # No relations and no delete receivers: Django issues one DELETE per batch.
        count, _ = WebhookDelivery.objects.filter(pk__in=ids).delete()
        deleted += count
    return deleted
