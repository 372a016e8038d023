"""Forward-only status rules shared by webhooks and polling.

PromptJuggler's document statuses move ``pending`` → ``sealed`` → ``ready`` | ``failed``, and a
run's ``pending`` → ``completed`` | ``failed``. Events
arrive duplicated and out of order, so a status is applied only when it moves the row forward (a
higher rank always wins, whenever it was observed), or when it is at the same rank and was not
observed earlier than the one applied (e.g. a chunk count that grew). Webhook observation times
are whole seconds (the signature's ``t``) while polls carry microseconds, so times are compared
at whole-second precision: within one second the later arrival wins.
Unknown status strings (PromptJuggler may add some) are stored, never fatal: they rank like
``sealed`` (in progress) so they can neither undo a terminal state nor be skipped for good.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from django.db import DEFAULT_DB_ALIAS, connections, models, router, transaction
from django.dispatch import Signal

from . import signals, transitions
from .models import (
    DOCUMENT_STATUS_RANK,
    RUN_STATUS_RANK,
    TERMINAL_DOCUMENT_STATUSES,
    TERMINAL_RUN_STATUSES,
    KnowledgeBase,
    KnowledgeDocument,
    Run,
    WebhookDelivery,
)

_UNKNOWN_RANK = 1

_M = TypeVar("_M", KnowledgeDocument, KnowledgeBase, Run)


def rank(status: str, ranks: Mapping[str, int] = DOCUMENT_STATUS_RANK) -> int:
    """The forward order of a status; empty (never seen) ranks below everything."""
    if not status:
        return -1
    return ranks.get(status, _UNKNOWN_RANK)


def is_terminal(status: str) -> bool:
    return status in TERMINAL_DOCUMENT_STATUSES


def observed_before(observed_at: datetime, last: datetime) -> bool:
    """Whether ``observed_at`` is older than ``last``, compared at whole-second precision."""
    return observed_at.replace(microsecond=0) < last.replace(microsecond=0)


def forward_change(
    current: str,
    last: datetime | None,
    status: str,
    observed_at: datetime | None,
    *,
    ranks: Mapping[str, int] = DOCUMENT_STATUS_RANK,
    terminal: frozenset[str] = TERMINAL_DOCUMENT_STATUSES,
) -> bool:
    """Whether ``status`` observed at ``observed_at`` should replace ``current`` (seen at ``last``).

    - a terminal status is final: ``ready`` and ``failed`` (``completed`` and ``failed`` for a
      run) never replace each other;
    - otherwise a higher rank always wins and a lower one never does (``ready`` is never undone
      by a late ``pending``, and a ``ready`` signed in the second of a poll is not stale);
    - at equal rank an observation from an earlier second never wins, and a newer one (or a
      later arrival within the same second) may refresh counts.
    """
    if current in terminal and status != current:
        return False
    if rank(status, ranks) != rank(current, ranks):
        return rank(status, ranks) > rank(current, ranks)
    if last is None or observed_at is None:
        return True
    if observed_before(observed_at, last):
        return False
    return not (status == current and observed_at == last)  # not the very same observation


def forward_clause(
    status: str,
    observed_at: datetime | None,
    *,
    current: str,
    last: str,
    using: str,
    ranks: Mapping[str, int] = DOCUMENT_STATUS_RANK,
    terminal: frozenset[str] = TERMINAL_DOCUMENT_STATUSES,
) -> tuple[str, list[Any]]:
    """:func:`forward_change` as an SQL clause over the quoted columns ``current`` and ``last``.

    The rows it matches are those whose status and time :func:`forward_change` would let
    ``status`` observed at ``observed_at`` replace: the same rules, from the same rank table,
    for a conditional ``UPDATE`` that decides and writes in one statement. Plain SQL (``CASE``,
    ``IN``, comparisons), so it runs on SQLite, PostgreSQL and MySQL/MariaDB alike.
    "Not observed in an earlier second than ``last``" is ``last < the next whole second``.
    """
    ops = connections[using].ops
    # The rank table and the terminal statuses are this module's constants: written into the
    # text (checked to be plain words); the observation's values are parameters.
    row_rank = (
        f"CASE {current} WHEN '' THEN -1 "
        + " ".join(f"WHEN {_word(name)} THEN {value:d}" for name, value in ranks.items())
        + f" ELSE {_UNKNOWN_RANK:d} END"
    )
    new_rank = rank(status, ranks)
    final = ", ".join(_word(name) for name in sorted(terminal))
    sql = f"({current} NOT IN ({final}) OR {current} = %s) AND ({row_rank} < %s"
    params: list[Any] = [status, new_rank]
    if observed_at is None:
        sql += f" OR {row_rank} = %s)"
        params += [new_rank]
    else:
        next_second = observed_at.replace(microsecond=0) + timedelta(seconds=1)
        sql += (
            f" OR ({row_rank} = %s AND ({last} IS NULL OR ({last} < %s"
            f" AND NOT ({current} = %s AND {last} = %s)))))"
        )
        params += [
            new_rank,
            ops.adapt_datetimefield_value(next_second),
            status,
            ops.adapt_datetimefield_value(observed_at),
        ]
    return sql, params


def _word(name: str) -> str:
    """A status of the rank table as an SQL string literal (a plain lowercase word)."""
    if not re.fullmatch(r"[a-z_]+", name):
        raise ValueError(f"Not a plain status name: {name!r}")
    return f"'{name}'"


def document_change(
    document: KnowledgeDocument,
    status: str,
    observed_at: datetime | None,
) -> bool:
    """Whether ``status`` observed at ``observed_at`` should replace the document's status."""
    return forward_change(document.remote_status, document.status_changed_at, status, observed_at)


def run_change(run: Run, status: str, observed_at: datetime | None) -> bool:
    """Whether ``status`` observed at ``observed_at`` should replace the run's status."""
    return forward_change(
        run.remote_status,
        run.status_changed_at,
        status,
        observed_at,
        ranks=RUN_STATUS_RANK,
        terminal=TERMINAL_RUN_STATUSES,
    )


#: Outcomes of applying a remote observation (they match WebhookDelivery.Outcome values).
APPLIED = "applied"
STALE = "stale"
UNKNOWN_OBJECT = "unknown_object"


#: The columns the rules read, per model: all a locked read needs when nobody listens.
_RULE_FIELDS: dict[type[models.Model], tuple[str, ...]] = {
    KnowledgeDocument: ("remote_id", "remote_status", "chunk_count", "status_changed_at"),
    KnowledgeBase: ("remote_id", "status", "document_count", "chunk_count", "status_changed_at"),
    Run: ("remote_id", "kind", "remote_status", "status_changed_at"),
}


def _locked(model: type[_M], remote_id: UUID | str, signal: Signal) -> _M | None:
    """The row with ``remote_id``, locked until the transaction ends, or ``None``.

    ``signal``'s receivers get the whole row; without any, only the columns the rules read are
    fetched (webhooks are a hot path, and a wide row costs more to read than to lock).
    ``get()`` rather than ``first()``: a unique key needs no ORDER BY.
    """
    rows = model._default_manager.select_for_update()
    if not signal.has_listeners(model):
        rows = rows.only(*_RULE_FIELDS[model])
    try:
        return rows.get(remote_id=remote_id)
    except model.DoesNotExist:
        return None


def apply_document_status(
    *,
    remote_id: UUID | str,
    status: str,
    chunk_count: int | None,
    observed_at: datetime,
    delivery: WebhookDelivery | None = None,
) -> str:
    """Move the document with ``remote_id`` forward to ``status``; return the outcome.

    Runs in the caller's transaction (no savepoint of its own), or its own when there is none.
    The write sends no ``post_save`` (the public signal is the way to follow status changes)
    and leaves ``updated_at``, the time of the last local change, alone. Two ways, one rule:

    - while :data:`~promptjuggler_django.signals.document_status_changed` has receivers, it
      locks the row (``select_for_update``) so concurrent events for one document serialise,
      decides with :func:`document_change`, updates, and sends the signal after commit with
      the whole row and the old status: two queries when applied;
    - without receivers there is no old status to report, and one conditional ``UPDATE``
      (:func:`forward_clause`) decides and writes: one query when applied, a second only to
      tell ``stale`` from ``unknown_object``.
    """
    if not signals.document_status_changed.has_listeners(KnowledgeDocument):
        return _advance_document(remote_id, status, chunk_count, observed_at)
    with transaction.atomic(savepoint=False):
        document = _locked(KnowledgeDocument, remote_id, signals.document_status_changed)
        if document is None:
            return UNKNOWN_OBJECT
        if not document_change(document, status, observed_at):
            return STALE
        old_status = document.remote_status
        change = transitions.apply_remote_status(document, status, chunk_count, observed_at)
        transitions.assign(document, change)
        KnowledgeDocument.objects.filter(pk=document.pk).update(**change)
        if old_status != status:
            signals.send_on_commit(
                signals.document_status_changed,
                sender=KnowledgeDocument,
                document=document,
                old_status=old_status,
                new_status=status,
                delivery=delivery,
            )
        return APPLIED


def _advance_document(
    remote_id: UUID | str, status: str, chunk_count: int | None, observed_at: datetime
) -> str:
    """:func:`apply_document_status` when nobody listens for the change: one conditional
    ``UPDATE`` decides and writes (the database locks the row it changes, and re-checks the
    condition on the newest version), and a second statement runs only when nothing was
    changed, to tell a stale observation from an unknown document."""
    using = router.db_for_write(KnowledgeDocument) or DEFAULT_DB_ALIAS
    columns = transitions.mirror_columns(using)
    condition = _document_forward_clause(status, observed_at, columns, using)
    changed = transitions.apply_remote_status_where(
        remote_id, status, chunk_count, observed_at, condition, using=using
    )
    if changed:
        return APPLIED
    known = KnowledgeDocument._default_manager.using(using).filter(remote_id=remote_id).exists()
    return STALE if known else UNKNOWN_OBJECT


@dataclass(frozen=True)
class OutcomeSQL:
    """A status change written as part of another PostgreSQL statement: a data-modifying
    ``WITH`` clause that makes the change, and an SQL expression whose value is the outcome
    (``applied``, ``stale`` or ``unknown_object``), each with its parameters."""

    with_clause: str
    with_params: list[Any]
    outcome: str
    outcome_params: list[Any]


def _document_forward_clause(
    status: str, observed_at: datetime, columns: Mapping[str, str], using: str
) -> tuple[str, list[Any]]:
    """:func:`forward_clause` over a document's mirrored status columns."""
    return forward_clause(
        status,
        observed_at,
        current=columns["remote_status"],
        last=columns["status_changed_at"],
        using=using,
    )


def document_status_as_sql(
    *,
    remote_id: UUID | str,
    status: str,
    chunk_count: int | None,
    observed_at: datetime,
    using: str,
) -> OutcomeSQL | None:
    """:func:`apply_document_status` for a statement on ``using`` that writes more with it
    (the webhook's delivery log), or ``None`` where that cannot be.

    The conditional ``UPDATE`` of the path without receivers goes into a ``WITH`` clause,
    and the outcome is read in the same statement: ``applied`` when it changed the row,
    ``stale`` when the document exists (as the statement found it), else ``unknown_object``.
    Only PostgreSQL changes rows in a ``WITH`` clause; and a
    :data:`~promptjuggler_django.signals.document_status_changed` receiver needs the old
    status, which only the locked read has. Documents must live on ``using``.
    """
    if connections[using].vendor != "postgresql":
        return None
    if (router.db_for_write(KnowledgeDocument) or DEFAULT_DB_ALIAS) != using:
        return None
    if signals.document_status_changed.has_listeners(KnowledgeDocument):
        return None
    columns = transitions.mirror_columns(using)
    condition = _document_forward_clause(status, observed_at, columns, using)
    update, params = transitions.remote_status_update(
        remote_id, status, chunk_count, observed_at, condition, using=using
    )
    connection = connections[using]
    table = connection.ops.quote_name(KnowledgeDocument._meta.db_table)
    key = KnowledgeDocument._meta.get_field("remote_id").get_db_prep_value(remote_id, connection)
    # The main statement reads the table as it was before the update: the row is there or not.
    known = f"SELECT 1 FROM {table} WHERE {columns['remote_id']} = %s"  # noqa: S608
    changed = "SELECT 1 FROM pj_changed"
    outcome = f"CASE WHEN EXISTS ({changed}) THEN %s WHEN EXISTS ({known}) THEN %s ELSE %s END"
    return OutcomeSQL(
        f"WITH pj_changed AS ({update} RETURNING 1)",
        params,
        outcome,
        [APPLIED, key, STALE, UNKNOWN_OBJECT],
    )


def apply_knowledge_base_status(
    *,
    remote_id: UUID | str,
    status: str,
    document_count: int | None,
    chunk_count: int | None,
    observed_at: datetime,
    delivery: WebhookDelivery | None = None,
) -> str:
    """Update the knowledge base with ``remote_id`` unless this observation is older; the outcome.

    Knowledge-base statuses move back and forth (a new upload makes a ready base pending again),
    so ordering is by observation time only, at whole-second precision: an observation from an
    earlier second is stale, and within the same second the later arrival wins. Locks and
    queries as :func:`apply_document_status`.
    """
    with transaction.atomic(savepoint=False):
        kb = _locked(KnowledgeBase, remote_id, signals.knowledge_base_status_changed)
        if kb is None:
            return UNKNOWN_OBJECT
        if kb.status_changed_at is not None and observed_before(observed_at, kb.status_changed_at):
            return STALE
        old_status = kb.status
        change = transitions.apply_knowledge_base_status(
            kb, status, document_count, chunk_count, observed_at
        )
        transitions.assign(kb, change)
        KnowledgeBase.objects.filter(pk=kb.pk).update(**change)
        if old_status == status:
            return APPLIED  # counts only: no signal
        signals.send_on_commit(
            signals.knowledge_base_status_changed,
            sender=KnowledgeBase,
            knowledge_base=kb,
            old_status=old_status,
            new_status=status,
            delivery=delivery,
        )
        return APPLIED


def apply_run_status(
    *,
    remote_id: UUID | str,
    status: str,
    observed_at: datetime,
    kind: str | None = None,
    delivery: WebhookDelivery | None = None,
) -> str:
    """Move the run with ``remote_id`` forward to ``status``; the outcome.

    ``kind`` (``prompt`` or ``workflow``, from a per-event URL) must match the run's; on the
    shared URL the run's own row tells. Sends
    :data:`~promptjuggler_django.signals.run_status_changed` after commit when the status
    changed. Locks and queries as :func:`apply_document_status`; ``UNKNOWN_OBJECT`` when no run
    the app started has this id (yet: the start answer may not be stored).
    """
    try:  # run ids are logged as sent: one that is no UUID names no run of ours
        remote_id = remote_id if isinstance(remote_id, UUID) else UUID(remote_id)
    except ValueError:
        return UNKNOWN_OBJECT
    with transaction.atomic(savepoint=False):
        run = _locked(Run, remote_id, signals.run_status_changed)
        if run is None or (kind is not None and run.kind != kind):
            return UNKNOWN_OBJECT
        if not run_change(run, status, observed_at):
            return STALE
        old_status = run.remote_status
        change = transitions.apply_run_status(status, observed_at)
        transitions.assign(run, change)
        Run.objects.filter(pk=run.pk).update(**change)
        if old_status != status:
            signals.send_on_commit(
                signals.run_status_changed,
                sender=Run,
                run=run,
                old_status=old_status,
                new_status=status,
                delivery=delivery,
            )
        return APPLIED
