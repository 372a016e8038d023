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
from contextlib import nullcontext
from datetime import UTC, datetime
from functools import partial
from typing import Any

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, router, transaction
from django.db.models import F, signals
from django.utils import timezone

from ..apply import apply_event, apply_logged, describe_error, event_as_sql
from ..conf import pj_settings
from ..events import Event, RejectedBody, parse_event
from ..models import WebhookDelivery
from ..signature import VerifiedSignature
from ..status import OutcomeSQL
from ..taskqueue import enqueue
from .tasks import process_webhook_task

logger = logging.getLogger("promptjuggler_django.webhooks")

Outcome = WebhookDelivery.Outcome


def dedupe_key(timestamp: int, body: bytes) -> str:
    """``sha256(<t>.<body>)``: a redelivery (same timestamp, same bytes) has the same key."""
    return hashlib.sha256(str(timestamp).encode("ascii") + b"." + body).hexdigest()


def log_copy(body: bytes, limit: int) -> tuple[str, bool]:
    """The body as text for the log, at most ``limit`` bytes, and whether it was cut."""
    # The incremental decoder drops a character split by the cut rather than mangling it;
    # undecodable bytes become U+FFFD, and so does NUL (PostgreSQL refuses it in text).
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(body[:limit], final=False)
    return text.replace("\x00", "\ufffd"), len(body) > limit


def receive(
    body: bytes,
    verified: VerifiedSignature,
    *,
    expected: str | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    """Record one verified delivery and, in inline mode, apply it; return its outcome.

    ``expected`` is the event type of a per-event URL (``None``: told apart by shape). Two
    queries when a document event applies (the conditional update, the log insert), three while
    a ``document_status_changed`` receiver needs the old status (a locked read first).
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
        effect = None
        if event is not None and not deferred:
            effect = _in_one_statement(event, observed_at)
        if effect is not None:
            delivery.processed_at = timezone.now()
            _log_with_effect(delivery, *effect)
        else:
            with transaction.atomic():
                if event is not None and not deferred:
                    delivery.outcome = apply_event(event, observed_at, delivery)
                if delivery.outcome != Outcome.RECEIVED:
                    delivery.processed_at = timezone.now()
                # Inserted last: a taken key rolls the effect back with it.
                delivery.save(force_insert=True)
                if deferred:
                    transaction.on_commit(partial(enqueue, process_webhook_task, delivery.pk))
    except IntegrityError as exc:
        again = _receive_again(key, event)
        if again is None:  # no row holds the key: the integrity error came from the effect
            logger.error("Applying a PromptJuggler webhook delivery hit %s.", describe_error(exc))
            _record_error(delivery, exc)
            return Outcome.ERROR
        return again
    except Exception as exc:
        logger.exception("Applying a PromptJuggler webhook delivery failed; logged as error.")
        _record_error(delivery, exc)
        return Outcome.ERROR
    return delivery.outcome


def _in_one_statement(event: Event, observed_at: datetime) -> tuple[OutcomeSQL, str] | None:
    """The event's effect as part of the statement that logs it, and the database; ``None``
    where it goes the usual way (see :func:`~promptjuggler_django.apply.event_as_sql`), or
    where the log row's model signals have receivers (a raw insert sends none)."""
    if signals.pre_save.has_listeners(WebhookDelivery) or signals.post_save.has_listeners(
        WebhookDelivery
    ):
        return None
    using = router.db_for_write(WebhookDelivery) or DEFAULT_DB_ALIAS
    effect = event_as_sql(event, observed_at, using=using)
    return None if effect is None else (effect, using)


def _log_with_effect(delivery: WebhookDelivery, effect: OutcomeSQL, using: str) -> None:
    """Insert the delivery's row and make its effect in one statement (PostgreSQL).

    One statement is one transaction: the effect and the row are written together or not at
    all (a taken key rolls the effect back), with one round trip where a transaction of two
    statements takes four (``BEGIN``, the update, the insert, ``COMMIT``). Inside the caller's
    transaction a savepoint keeps a taken key from breaking it, as ``atomic()`` does.
    """
    connection = connections[using]
    meta = WebhookDelivery._meta
    quote = connection.ops.quote_name
    pk: Any = meta.pk
    outcome_field: Any = meta.get_field("outcome")
    fields = [f for f in meta.concrete_fields if not f.primary_key and f is not outcome_field]
    values = [f.get_db_prep_save(f.pre_save(delivery, True), connection) for f in fields]
    columns = ", ".join(quote(f.column) for f in [*fields, outcome_field])
    placeholders = ", ".join(["%s"] * len(fields))
    # Identifiers come from the model and are quoted; every value is a parameter.
    sql = (
        f"{effect.with_clause} INSERT INTO {quote(meta.db_table)} ({columns}) "  # noqa: S608
        f"VALUES ({placeholders}, {effect.outcome}) "
        f"RETURNING {quote(pk.column)}, {quote(outcome_field.column)}"
    )
    params = [*effect.with_params, *values, *effect.outcome_params]
    savepoint = transaction.atomic(using=using) if connection.in_atomic_block else nullcontext()
    with savepoint, connection.cursor() as cursor:
        cursor.execute(sql, params)
        delivery.pk, delivery.outcome = cursor.fetchone()
    delivery._state.adding = False
    delivery._state.db = using


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
    return apply_logged({"dedupe_key": key}, event=event, retry=True)


def _record_error(delivery: WebhookDelivery, exc: BaseException) -> None:
    """Log a delivery whose effect rolled back, in a transaction of its own."""
    delivery.pk = None
    delivery.outcome = Outcome.ERROR
    delivery.detail = describe_error(exc)
    delivery.processed_at = timezone.now()
    try:
        with transaction.atomic():
            delivery.save(force_insert=True)
    except Exception:
        logger.exception("Could not log a failed PromptJuggler webhook delivery.")


def prune_deliveries(cutoff: datetime, *, batch_size: int = 1000) -> int:
    """Delete deliveries received before ``cutoff``, ``batch_size`` per statement; how many.

    Each batch is its own short statement, so a large log is pruned without long locks, and
    each costs what the first did:

    - batches walk the primary key (keyset: each starts past the last one's highest id), so a
      batch never steps over the index entries of rows the earlier batches deleted;
    - only the first statement compares ``received_at`` with the cutoff (it finds the highest
      id to prune). The batches read ids up to that one and leave newer rows alone themselves:
      planning a comparison near the end of a column's statistics makes PostgreSQL look up the
      column's actual end in its index, and rows pruned oldest first leave their dead entries
      at the end ``received_at`` would look up, so each batch's planning would grow.
    """
    log = WebhookDelivery.objects.order_by("pk")
    last = (
        WebhookDelivery.objects.filter(received_at__lt=cutoff)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
    deleted = 0
    after = 0
    while last is not None and (
        rows := list(
            log.filter(pk__gt=after, pk__lte=last).values_list("pk", "received_at")[:batch_size]
        )
    ):
        # Ids and receipt times need not agree (clocks, concurrent inserts): keep newer ones.
        ids = [pk for pk, received_at in rows if received_at < cutoff]
        if ids:
            # No relations and no delete receivers: Django issues one DELETE per batch.
            count, _ = WebhookDelivery.objects.filter(pk__in=ids).delete()
            deleted += count
        after = rows[-1][0]
    return deleted
