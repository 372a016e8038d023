"""Every change of a row's state, one named function each: the only writers of the state fields.

A document's local push state (``sync_state``) and its mirror of PromptJuggler's status
(``remote_status``, ``chunk_count``, ``status_changed_at``) are written only through the functions
here; so is a knowledge base's mirrored ``status``. Each returns the field values of its change as
a dict, so the one definition serves both ways the engines write: ``QuerySet.update(**values)``
for set-based steps (claims, reconcile) and :func:`assign` on instances that are then saved in a
batch (the store step, the save receivers). A test keeps the rest of the package from assigning
those fields. The diagram in ``docs/sync.md`` names these functions::

    queue_for_push ──► queued ──claim──► uploading ──mark_synced──► synced
                         ▲                   │ schedule_retry ──► retrying ──(due)──► claim
                         │                   │ mark_failed ──► failed
                         │                   │ mark_needs_review ──► needs_review
                         └──── requeue ◄─────┘ (a refused batch, reconcile found no copy)
                         └──── hold ◄────────┘ (the knowledge base is blocked: no attempt spent)

    knowledge base ──block_knowledge_base──► blocked ──unblock_knowledge_base──► (not blocked)
    knowledge base ──apply_knowledge_base_status──► status and counts (the latest observation)

    synced ──apply_remote_status──► remote_status pending → sealed → ready | failed (forward only)

A run's send state (``send_state``) and its mirror (``remote_status``, ``status_changed_at``, the
stored result) are written here too. Creating a run is not idempotent, so only a send that
provably started nothing goes back to ``queued``::

    queued ──claim_run──► sending ──mark_run_started──► started ──apply_run_status──► pending
      ▲                      │ schedule_run_send ──► queued (nothing sent, a 429)    → completed
      │                      │ mark_run_failed ──► failed (a definite refusal)        | failed
      │                      │ mark_run_needs_review ──► needs_review (a run may exist)
      └──── resend_run ◄─────┘ (a person checked that no run was created)
    started ──store_run_result──► the result, usage and cost fetched from PromptJuggler

Which change applies (the forward-only rules, lease tokens, file versions) is decided by the
callers; this module only says what each change writes.

Tombstones (``RemoteDeletion``) are not row state but the outbox's records of remote deletes,
so the sync engine's outbox owns them: ``sync._outbox.write_tombstones`` writes them in the
transaction of the local change, ``sync._tombstones.drain_tombstones`` drops each one once
PromptJuggler answered 204 or 404 (and keeps a failed one with its backoff), and
``sync._reconcile._settle_markers`` points a marker of an unknown upload outcome at the remote
copy it found, or drops it when nothing had landed. Nothing else writes them.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import connections, models

from .client import RemoteDocument, RemoteRun, RunCreated
from .limits import MAX_STATUS_LENGTH
from .models import KnowledgeBase, KnowledgeDocument, RunSendState, SyncState

#: The longest error text kept on a row.
ERROR_LENGTH = 2000

#: The column length of ``remote_status`` and ``KnowledgeBase.status``.
STATUS_LENGTH = MAX_STATUS_LENGTH

Values = dict[str, Any]


def assign(instance: models.Model, values: Values) -> list[str]:
    """Set ``values`` on ``instance``; the field names, for ``save(update_fields=…)``."""
    for name, value in values.items():
        setattr(instance, name, value)
    return list(values)


def _error(text: str) -> str:
    return text[:ERROR_LENGTH]


# -- the local push state --------------------------------------------------------------------


def queue_for_push(now: datetime, *, error: str = "") -> Values:
    """Queue a document to be pushed from scratch: its remote copy is gone or being replaced.

    Resets everything a push learned (the remote id and status, the attempts). Used when a file
    is replaced or moved, when a document is pushed again, and when PromptJuggler no longer has
    it. The caller tombstones the old remote copy first.
    """
    return {
        "sync_state": SyncState.QUEUED,
        "attempts": 0,
        "last_error": _error(error),
        "next_attempt_at": None,
        "remote_id": None,
        "remote_status": "",
        "chunk_count": None,
        "status_changed_at": None,
        "pushed_at": None,
        "updated_at": now,
    }


def requeue(now: datetime, *, error: str = "") -> Values:
    """Put a document without a remote copy back in the queue, keeping its attempt count.

    A batch refused as a whole for another file's sake, or an unknown upload outcome for which
    reconcile found no remote copy.
    """
    return {
        "sync_state": SyncState.QUEUED,
        "last_error": _error(error),
        "next_attempt_at": None,
        "updated_at": now,
    }


def hold(until: datetime, error: str, now: datetime) -> Values:
    """Keep a document queued until ``until``: its knowledge base is blocked, not the file.

    The caller gives the attempt back: a refusal of the whole knowledge base (a bad key, an
    unknown slug) says nothing about this document.
    """
    return {
        "sync_state": SyncState.QUEUED,
        "last_error": _error(error),
        "next_attempt_at": until,
        "updated_at": now,
    }


def claim(token: datetime, now: datetime) -> Values:
    """Lease a due document for one upload until ``token`` (the lease's end and its identity).

    The caller counts the attempt (``attempts + 1``) in the same update.
    """
    return {"sync_state": SyncState.UPLOADING, "next_attempt_at": token, "updated_at": now}


def mark_synced(remote: RemoteDocument, now: datetime) -> Values:
    """Store the remote copy PromptJuggler created (the upload answer, or one found by reconcile).

    No observation time: the upload answer is the weakest news there is, so any webhook (even
    one logged before this answer was stored) or poll may move the status forward.
    """
    return {
        "sync_state": SyncState.SYNCED,
        "last_error": "",
        "next_attempt_at": None,
        "remote_id": remote.id,
        "remote_status": remote.status[:STATUS_LENGTH],
        "chunk_count": remote.chunk_count,
        "status_changed_at": None,
        "pushed_at": now,
        "updated_at": now,
    }


def schedule_retry(error: str, when: datetime, now: datetime) -> Values:
    """Wait until ``when`` before the next attempt (a 429, a 5xx, a request not sent)."""
    return {
        "sync_state": SyncState.RETRYING,
        "last_error": _error(error),
        "next_attempt_at": when,
        "updated_at": now,
    }


def mark_failed(error: str, now: datetime) -> Values:
    """Give up on a document: PromptJuggler refused the file, or the attempts ran out."""
    return {
        "sync_state": SyncState.FAILED,
        "last_error": _error(error),
        "next_attempt_at": None,
        "updated_at": now,
    }


def mark_needs_review(error: str, now: datetime) -> Values:
    """The upload's outcome is unknown (a timeout after sending, an expired lease).

    Reconcile resolves it: it adopts the matching remote copy or queues the document again.
    """
    return {
        "sync_state": SyncState.NEEDS_REVIEW,
        "last_error": _error(error),
        "next_attempt_at": None,
        "updated_at": now,
    }


# -- mirrors of PromptJuggler's statuses -----------------------------------------------------


def apply_remote_status(
    document: KnowledgeDocument, status: str, chunk_count: int | None, observed_at: datetime
) -> Values:
    """Move the mirrored status forward (the rules in :mod:`promptjuggler_django.status` decided).

    A ``chunk_count`` of ``None`` (a poll: listings carry no count) keeps the known count; a
    status change without a count leaves the count unknown rather than claiming a stale one.
    """
    if chunk_count is None and status == document.remote_status:
        chunk_count = document.chunk_count  # the same status again, without a count
    return {
        "remote_status": status[:STATUS_LENGTH],
        "chunk_count": chunk_count,
        "status_changed_at": observed_at,
    }


def apply_remote_status_where(
    remote_id: Any,
    status: str,
    chunk_count: int | None,
    observed_at: datetime,
    condition: tuple[str, list[Any]],
    *,
    using: str,
) -> int:
    """:func:`apply_remote_status` as one ``UPDATE`` of the document with ``remote_id``, made
    only where ``condition`` (an SQL clause and its parameters over the row's columns) holds.

    Returns the rows changed (0 or 1). The webhook's hot path: one statement where the locked
    read and the update take two (see :func:`promptjuggler_django.status.apply_document_status`).
    """
    sql, params = remote_status_update(
        remote_id, status, chunk_count, observed_at, condition, using=using
    )
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        changed: int = cursor.rowcount
    return changed


def remote_status_update(
    remote_id: Any,
    status: str,
    chunk_count: int | None,
    observed_at: datetime,
    condition: tuple[str, list[Any]],
    *,
    using: str,
) -> tuple[str, list[Any]]:
    """The ``UPDATE`` of :func:`apply_remote_status_where`, as SQL and its parameters, for a
    statement that writes more in the same breath (the delivery log, on PostgreSQL).

    The same values as :func:`apply_remote_status`: the count is kept when the status is the
    same again without one.
    """
    connection = connections[using]
    meta = KnowledgeDocument._meta
    column = mirror_columns(using)
    if chunk_count is None:
        count_sql = f"CASE WHEN {column['remote_status']} = %s THEN {column['chunk_count']} END"
        count_params: list[Any] = [status]
    else:
        count_sql, count_params = "%s", [chunk_count]
    where, where_params = condition
    # The count first: MySQL and MariaDB evaluate assignments left to right, so an assignment
    # after ``remote_status`` would read the new status (standard SQL reads the old row).
    # Only quoted names from the model and the rule's placeholders go into the text; every
    # value is a parameter.
    sql = (
        f"UPDATE {connection.ops.quote_name(meta.db_table)} "  # noqa: S608
        f"SET {column['chunk_count']} = {count_sql}, {column['remote_status']} = %s, "
        f"{column['status_changed_at']} = %s "
        f"WHERE {column['remote_id']} = %s AND ({where})"
    )
    params = [
        *count_params,
        status[:STATUS_LENGTH],
        connection.ops.adapt_datetimefield_value(observed_at),
        meta.get_field("remote_id").get_db_prep_value(remote_id, connection),
        *where_params,
    ]
    return sql, params


def mirror_columns(using: str) -> dict[str, str]:
    """The quoted columns of a document's remote id and mirrored status, by field name."""
    quote = connections[using].ops.quote_name
    fields = ("remote_id", "remote_status", "chunk_count", "status_changed_at")
    columns = {}
    for name in fields:
        field = KnowledgeDocument._meta.get_field(name)
        assert isinstance(field, models.Field)
        columns[name] = quote(field.column or name)
    return columns


def apply_knowledge_base_status(
    knowledge_base: KnowledgeBase,
    status: str,
    document_count: int | None,
    chunk_count: int | None,
    observed_at: datetime,
) -> Values:
    """Store a knowledge base's status and counts as observed at ``observed_at``."""
    return {
        "status": status[:STATUS_LENGTH],
        "document_count": (
            knowledge_base.document_count if document_count is None else document_count
        ),
        "chunk_count": knowledge_base.chunk_count if chunk_count is None else chunk_count,
        "status_changed_at": observed_at,
    }


# -- a knowledge base refused as a whole -----------------------------------------------------


def block_knowledge_base(reason: str, attempts: int, until: datetime, now: datetime) -> Values:
    """PromptJuggler refuses the knowledge base as a whole; try again at ``until``.

    ``attempts`` counts the refusals in a row (the backoff grows with them); ``blocked_at``
    keeps the first one's time, so the caller passes it on while the block lasts.
    """
    return {
        "blocked_reason": _error(reason),
        "blocked_attempts": attempts,
        "blocked_until": until,
        "blocked_at": now,
    }


def unblock_knowledge_base() -> Values:
    """PromptJuggler accepted the knowledge base again (an upload or a ``GET`` succeeded)."""
    return {
        "blocked_reason": "",
        "blocked_attempts": 0,
        "blocked_until": None,
        "blocked_at": None,
    }


# -- runs ------------------------------------------------------------------------------------


def claim_run(token: datetime, now: datetime) -> Values:
    """Lease a queued run for one create request until ``token`` (the lease's end and identity).

    The caller counts the attempt (``attempts + 1``) in the same update.
    """
    return {"send_state": RunSendState.SENDING, "next_attempt_at": token, "updated_at": now}


def mark_run_started(created: RunCreated, now: datetime) -> Values:
    """PromptJuggler answered the create request with the run's id (and its thread).

    The status is ``pending`` with no observation time: the weakest news, so a webhook logged
    before this answer was stored, or any poll, may move it forward.
    """
    values: Values = {
        "send_state": RunSendState.STARTED,
        "last_error": "",
        "next_attempt_at": None,
        "remote_id": created.id,
        "remote_status": "pending",
        "status_changed_at": None,
        "sent_at": now,
        "updated_at": now,
    }
    if created.thread is not None:
        values["thread"] = created.thread
    return values


def hold_run(error: str, now: datetime) -> Values:
    """Keep a run queued without spending an attempt: nothing could be sent (no API key)."""
    return {"last_error": _error(error), "updated_at": now}


def schedule_run_send(error: str, when: datetime, now: datetime) -> Values:
    """Send again at ``when``: the request provably started nothing (no byte left, or a 429)."""
    return {
        "send_state": RunSendState.QUEUED,
        "last_error": _error(error),
        "next_attempt_at": when,
        "updated_at": now,
    }


def mark_run_failed(error: str, now: datetime) -> Values:
    """No run was started and none will be: a definite refusal (404, 422), or given up."""
    return {
        "send_state": RunSendState.FAILED,
        "last_error": _error(error),
        "next_attempt_at": None,
        "updated_at": now,
    }


def mark_run_needs_review(error: str, now: datetime) -> Values:
    """The create request may have reached PromptJuggler: a run may exist, and a person decides
    (sending again could start a second, billed run)."""
    return {
        "send_state": RunSendState.NEEDS_REVIEW,
        "last_error": _error(error),
        "next_attempt_at": None,
        "updated_at": now,
    }


def resend_run(now: datetime) -> Values:
    """Queue a run to be sent from scratch: a person checked that no run was created."""
    return {
        "send_state": RunSendState.QUEUED,
        "attempts": 0,
        "last_error": "",
        "next_attempt_at": None,
        "updated_at": now,
    }


def apply_run_status(status: str, observed_at: datetime | None) -> Values:
    """Move the mirrored run status forward (the rules in :mod:`.status` decided)."""
    return {"remote_status": status[:STATUS_LENGTH], "status_changed_at": observed_at}


def store_run_result(remote: RemoteRun, now: datetime) -> Values:
    """Store what ``GET /promptruns/{id}`` or ``/workflowruns/{id}`` reported for a finished run."""
    usage = dict(remote.token_usage) if remote.token_usage is not None else None
    total = usage.get("total") if usage else None
    return {
        "output": remote.output or "",
        "emitted": list(remote.emitted),
        "transcript": list(remote.transcript),
        "outputs": dict(remote.outputs),
        "errors": list(remote.errors),
        "error": remote.error or "",
        "token_usage": usage,
        "total_tokens": total if isinstance(total, int) and total >= 0 else None,
        "cost": _amount(remote.cost),
        "remote_created_at": remote.created_at,
        "finished_at": remote.finished_at,
        "result_fetched_at": now,
        "updated_at": now,
    }


#: The cost column: 18 digits, 8 of them decimals.
_MAX_COST = Decimal("1e10")


def _amount(value: float | None) -> Decimal | None:
    """A cost that fits the column, else ``None`` (a garbage figure is not stored)."""
    if value is None:
        return None
    try:
        amount = Decimal(str(value)).quantize(Decimal("1e-8"))
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() and abs(amount) < _MAX_COST else None
