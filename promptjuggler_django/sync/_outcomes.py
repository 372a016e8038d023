"""What a push learned, and storing it: reports, per-document results, the store step.

The store step runs in one short transaction per batch and keeps an answer only if its row is
still the one that was sent (same ``file_version``, same claim). Otherwise the fresh remote
copy is tombstoned: the row was deleted, its file replaced, or another worker pushed it.
Writes are grouped so a batch costs the same few queries whatever its size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

from django.db import connections, transaction
from django.utils import timezone

from .. import signals, transitions
from ..apply import replay_early_webhooks
from ..client import RemoteDocument
from ..conf import pj_settings
from ..models import KnowledgeBase, KnowledgeDocument, SyncState
from ..retries import backoff_delay
from ._locking import locked_rows
from ._outbox import Tombstone, enqueue_push_for, write_tombstones

logger = logging.getLogger("promptjuggler_django.sync")

#: Called as ``progress(step, done, total)``; ``total`` may be None when unknown.
Progress = Callable[[str, int, "int | None"], None]

ERROR_LENGTH = 2000

# Result kinds of one document in one push.
SYNCED, RETRYING, FAILED, NEEDS_REVIEW, REQUEUE, BLOCKED = (
    "synced",
    "retrying",
    "failed",
    "needs_review",
    "requeue",
    "blocked",
)

#: Answers that refuse the knowledge base as a whole, not a file: a bad or revoked key (401),
#: a key without access (403), an unknown slug (404). The knowledge base is blocked; its
#: documents wait without spending attempts.
KNOWLEDGE_BASE_REFUSALS = frozenset({401, 403, 404})


@dataclass
class PushReport:
    """What a push did. Counts are documents; ``requests`` are upload requests made."""

    attempted: int = 0
    synced: int = 0
    #: Documents matched to a remote copy an earlier, ambiguous attempt had created.
    adopted: int = 0
    retrying: int = 0
    failed: int = 0
    needs_review: int = 0
    #: Put back in the queue without counting an attempt (innocent files in a broken batch).
    requeued: int = 0
    #: Fresh remote copies tombstoned because their row was deleted or changed meanwhile.
    discarded: int = 0
    #: Held back because PromptJuggler refused their knowledge base as a whole.
    blocked: int = 0
    #: Slug → reason, for the knowledge bases this push found blocked.
    blocked_knowledge_bases: dict[str, str] = field(default_factory=dict)
    batches: int = 0
    requests: int = 0
    errors: list[str] = field(default_factory=list)

    def note_error(self, message: str) -> None:
        if message and message not in self.errors and len(self.errors) < 20:
            self.errors.append(message)

    def merge(self, other: PushReport) -> None:
        for name in (
            "attempted",
            "synced",
            "adopted",
            "retrying",
            "failed",
            "needs_review",
            "requeued",
            "discarded",
            "blocked",
            "batches",
            "requests",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.blocked_knowledge_bases.update(other.blocked_knowledge_bases)
        for message in other.errors:
            self.note_error(message)


@dataclass
class DocumentResult:
    """The outcome for one document of one batch."""

    row: KnowledgeDocument
    kind: str
    remote: RemoteDocument | None = None
    error: str = ""
    status_code: int | None = None
    retry_after: float | None = None
    adopted: bool = False
    #: The attempt does not count (the row was not the cause).
    refund: bool = False


@dataclass
class Claim:
    knowledge_base: KnowledgeBase
    rows: list[KnowledgeDocument]
    #: The lease end written on the rows; identifies this claim.
    token: datetime


def run_after_commit(func: Callable[..., Any], *args: Any, using: str, **kwargs: Any) -> None:
    """Call ``func(*args, **kwargs)`` once the transaction on ``using`` commits.

    A failure is logged under ``func``'s name and the committed work stands (the hook is
    also registered ``robust``, for what the logging itself could raise).
    """

    def hook() -> None:
        try:
            func(*args, **kwargs)
        except Exception as exc:
            name = getattr(func, "__qualname__", repr(func))
            logger.exception("%s failed after commit (%s); the committed work stands.", name, exc)

    transaction.on_commit(hook, using=using, robust=True)


def match_answer(
    rows: Sequence[KnowledgeDocument], answer: Sequence[RemoteDocument]
) -> list[DocumentResult]:
    """Pair the upload answer's documents with the rows sent, by position and ``fileName``.

    The answer presumably lists documents in the parts' order; the name confirms it. When
    names disagree (a server that renames), leftover pairs are matched by position only if
    the counts and sizes agree. A row left without a document has an unknown outcome.
    """
    pairs: dict[int, RemoteDocument] = {}
    names_agree = len(answer) == len(rows) and all(
        row.file_name == doc.file_name for row, doc in zip(rows, answer, strict=True)
    )
    if names_agree:
        pairs = dict(enumerate(answer))
    else:
        unused = list(range(len(answer)))
        for i, row in enumerate(rows):
            j = i if i in unused and answer[i].file_name == row.file_name else None
            if j is None:
                j = next((k for k in unused if answer[k].file_name == row.file_name), None)
            if j is not None:
                pairs[i] = answer[j]
                unused.remove(j)
        left = [i for i in range(len(rows)) if i not in pairs]
        if len(answer) == len(rows) and len(left) == len(unused):
            for i, j in zip(left, unused, strict=True):
                size, got = rows[i].file_size, answer[j].bytes
                if size is None or got is None or size == got:
                    pairs[i] = answer[j]
    results = []
    for i, row in enumerate(rows):
        if i in pairs:
            results.append(DocumentResult(row, SYNCED, remote=pairs[i]))
        else:
            results.append(
                DocumentResult(row, NEEDS_REVIEW, error="The upload answer did not list this file.")
            )
    return results


# -- storing ---------------------------------------------------------------------------------

#: Written for every stored outcome; the file's description only when the push filled it in.
_SYNCED_FIELDS = (
    "sync_state",
    "last_error",
    "next_attempt_at",
    "remote_id",
    "remote_status",
    "chunk_count",
    "status_changed_at",
    "pushed_at",
    "updated_at",
)
_FAILURE_FIELDS = ("sync_state", "attempts", "last_error", "next_attempt_at", "updated_at")
_FILE_FIELDS = ("file_name", "file_size", "content_type")


class _Current(NamedTuple):
    """A row's sync fields as locked by the store step: what webhooks, reconcile and other
    workers may have changed since the claim. Reading these instead of whole rows takes a
    third off the store step for small files; the claimed instances are brought up to date
    from them and are what the signals carry."""

    pk: int
    file_version: int
    remote_id: UUID | None
    sync_state: str
    next_attempt_at: datetime | None
    attempts: int
    remote_status: str
    chunk_count: int | None
    status_changed_at: datetime | None
    pushed_at: datetime | None
    last_error: str
    file_name: str
    file_size: int | None
    content_type: str


#: Copied from the locked row onto the claimed instance (the file fields are the push's own).
_REFRESHED = tuple(name for name in _Current._fields[1:] if name not in _FILE_FIELDS)


def _up_to_date(sent: KnowledgeDocument, cur: _Current) -> KnowledgeDocument:
    for name in _REFRESHED:
        setattr(sent, name, getattr(cur, name))
    return sent


def _write(rows: list[KnowledgeDocument], fields: set[str], using: str) -> None:
    """Write ``fields`` of ``rows``: the values the batch shares once, the others per row.

    On PostgreSQL, one ``UPDATE … FROM unnest(…)``: each varying column travels as one array
    and the server plans one statement, where 100 statements cost it about twice the
    processor time. Elsewhere one parametrised ``UPDATE`` run for every row
    (``executemany``): SQLite runs it in-process, and mysqlclient sends it row by row.
    ``bulk_update`` would build a ``CASE WHEN pk = … THEN …`` expression per row and field,
    and resolving those in Python costs more than uploading small files.
    """
    connection = connections[using]
    meta = KnowledgeDocument._meta
    by_name = {f.name: f for f in meta.concrete_fields}
    pk: Any = next(f for f in meta.concrete_fields if f.primary_key)
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    # Most values (state, times, errors) are the same across a batch: convert those once.
    shared: list[tuple[Any, Any]] = []  # (field, value)
    varying: list[tuple[Any, list[Any]]] = []  # (field, value per row)
    for f in (by_name[name] for name in sorted(fields)):
        values = [getattr(row, f.attname) for row in rows]
        if all(v == values[0] for v in values):
            shared.append((f, f.get_db_prep_save(values[0], connection)))
        else:
            varying.append((f, [f.get_db_prep_save(v, connection) for v in values]))
    keys = [pk.get_db_prep_value(row.pk, connection) for row in rows]
    assignments = [f"{quote(f.column)} = %s" for f, _ in shared]
    params = [value for _, value in shared]
    # Identifiers come from the model and are quoted; every value is a parameter.
    if connection.vendor == "postgresql":
        columns = [(pk, keys), *varying]
        arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f, _ in columns)
        names = ", ".join(f"c{i}" for i in range(len(columns)))
        assignments += [f"{quote(f.column)} = v.c{i}" for i, (f, _) in enumerate(varying, 1)]
        sql = (
            f"UPDATE {table} SET {', '.join(assignments)} "  # noqa: S608
            f"FROM unnest({arrays}) AS v({names}) WHERE {table}.{quote(pk.column)} = v.c0"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, *(values for _, values in columns)])
        return
    assignments += [f"{quote(f.column)} = %s" for f, _ in varying]
    sql = f"UPDATE {table} SET {', '.join(assignments)} WHERE {quote(pk.column)} = %s"  # noqa: S608
    per_row = zip(*(values for _, values in varying), keys, strict=True)
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(*params, *row) for row in per_row])


def _discard_reason(
    current: _Current | None,
    sent: KnowledgeDocument,
    remote: RemoteDocument,
    token: datetime,
    holder: int | None,
) -> str | None:
    """Why a fresh remote copy must not be stored on its row (then it is deleted), or None."""
    if current is None:
        return "deleted_during_upload"
    if current.file_version != sent.file_version:
        return "replaced_during_upload"
    if current.remote_id is not None and current.remote_id != remote.id:
        return "duplicate"
    if current.sync_state == SyncState.UPLOADING and current.next_attempt_at != token:
        return "duplicate"  # another worker is sending the same version right now
    if holder is not None and holder != current.pk:
        return "held"
    return None


def _still_ours(current: _Current | None, sent: KnowledgeDocument, token: datetime) -> bool:
    return (
        current is not None
        and current.file_version == sent.file_version
        and current.sync_state == SyncState.UPLOADING
        and current.next_attempt_at == token
    )


def store_outcomes(
    claim: Claim, results: list[DocumentResult], report: PushReport, using: str
) -> list[KnowledgeDocument]:
    """Write the batch's outcomes in one transaction; the rows as stored."""
    now = timezone.now()
    kb = claim.knowledge_base
    max_attempts = pj_settings.PUSH_MAX_ATTEMPTS
    updates: list[KnowledgeDocument] = []
    fields: set[str] = set()
    succeeded: list[tuple[KnowledgeDocument, RemoteDocument]] = []
    gave_up: list[tuple[KnowledgeDocument, str, int | None]] = []
    tombstones: list[Tombstone] = []
    blocked = next((r for r in results if r.kind == BLOCKED), None)
    with transaction.atomic(using=using):
        held_until = block_knowledge_base(kb, blocked.error, now, using) if blocked else None
        pks = [r.row.pk for r in results]
        qs = KnowledgeDocument.objects.using(using).filter(pk__in=pks)
        locked = locked_rows(qs, using, skip_locked=False).values_list(*_Current._fields)
        current = {row[0]: _Current._make(row) for row in locked}
        remote_ids = [r.remote.id for r in results if r.remote is not None]
        holders: dict[Any, int] = {}
        if remote_ids:
            holders = dict(
                KnowledgeDocument.objects.using(using)
                .filter(remote_id__in=remote_ids)
                .values_list("remote_id", "pk")
            )
        for res in results:
            sent, cur, remote = res.row, current.get(res.row.pk), res.remote
            if remote is not None:
                if cur is not None and cur.remote_id == remote.id:
                    continue  # reconcile adopted this very copy meanwhile
                reason = _discard_reason(cur, sent, remote, claim.token, holders.get(remote.id))
                if reason == "held":
                    # Another row already owns this remote id: never delete it; review ours.
                    res = DocumentResult(
                        sent, NEEDS_REVIEW, error="The remote copy belongs to another row."
                    )
                elif reason:
                    tombstones.append(
                        Tombstone(remote.id, kb.pk, kb.slug, sent.file_name, sent.file_size, reason)
                    )
                    report.discarded += 1
                    continue
                else:
                    assert cur is not None
                    fields.update(_SYNCED_FIELDS, _describe_changes(cur, sent))
                    stored = _up_to_date(sent, cur)
                    _mark_synced(stored, remote, now)
                    updates.append(stored)
                    succeeded.append((stored, remote))
                    report.synced += 1
                    report.adopted += int(res.adopted)
                    continue
            if not _still_ours(cur, sent, claim.token):
                continue  # deleted, replaced or taken over meanwhile: its new state stands
            assert cur is not None
            fields.update(_FAILURE_FIELDS, _describe_changes(cur, sent))
            stored = _up_to_date(sent, cur)
            _mark_failure(stored, res, now, max_attempts, held_until)
            updates.append(stored)
            report.note_error(res.error)
            if res.kind == BLOCKED:
                report.blocked += 1
                report.blocked_knowledge_bases[kb.slug] = kb.blocked_reason
            elif stored.sync_state == SyncState.FAILED:
                report.failed += 1
                gave_up.append((stored, stored.last_error, res.status_code))
            elif stored.sync_state == SyncState.RETRYING:
                report.retrying += 1
            elif stored.sync_state == SyncState.NEEDS_REVIEW:
                report.needs_review += 1
            else:
                report.requeued += 1
        if succeeded and kb.is_blocked:
            unblock_knowledge_base(kb, now, using)
        if updates:
            _write(updates, fields, using)
        if tombstones:
            write_tombstones(tombstones, using=using)
        if succeeded or gave_up:
            run_after_commit(_after_store, succeeded, gave_up, using, using=using)
    return updates


def _describe_changes(cur: _Current, sent: KnowledgeDocument) -> list[str]:
    """The file description fields the push filled in (bulk-created rows lack them)."""
    return [name for name in _FILE_FIELDS if getattr(cur, name) != getattr(sent, name)]


def _mark_synced(cur: KnowledgeDocument, remote: RemoteDocument, now: datetime) -> None:
    transitions.assign(cur, transitions.mark_synced(remote, now))


def _mark_failure(
    cur: KnowledgeDocument,
    res: DocumentResult,
    now: datetime,
    max_attempts: int,
    held_until: datetime | None = None,
) -> None:
    if res.kind == BLOCKED:
        assert held_until is not None
        cur.attempts = max(0, cur.attempts - 1)  # the knowledge base was refused, not the file
        change = transitions.hold(held_until, res.error, now)
    elif res.kind == REQUEUE:
        cur.attempts = max(0, cur.attempts - int(res.refund))
        change = transitions.requeue(now, error=res.error)
    elif res.kind == RETRYING and cur.attempts >= max_attempts:
        change = transitions.mark_failed(f"Gave up after {cur.attempts} attempts. {res.error}", now)
    elif res.kind == RETRYING:
        when = now + timedelta(seconds=backoff_delay(cur.attempts, res.retry_after))
        change = transitions.schedule_retry(res.error, when, now)
    elif res.kind == FAILED:
        change = transitions.mark_failed(res.error, now)
    else:
        change = transitions.mark_needs_review(res.error, now)
    transitions.assign(cur, change)


def block_knowledge_base(kb: KnowledgeBase, reason: str, now: datetime, using: str) -> datetime:
    """Record that PromptJuggler refused ``kb`` as a whole; when its documents are tried again.

    The backoff grows with the refusals in a row, as a document's would (``PUSH_BACKOFF`` up to
    ``PUSH_BACKOFF_MAX``). ``kb`` is updated in place, so the rest of a run sees the block.
    """
    current = (
        KnowledgeBase.objects.using(using)
        .filter(pk=kb.pk)
        .values_list("blocked_attempts", "blocked_at")
        .first()
    )
    attempts, since = current if current is not None else (0, None)
    attempts += 1
    until = now + timedelta(seconds=backoff_delay(attempts))
    change = transitions.block_knowledge_base(reason, attempts, until, since or now)
    KnowledgeBase.objects.using(using).filter(pk=kb.pk).update(**change, updated_at=now)
    transitions.assign(kb, change)
    logger.warning("Knowledge base %r blocked: %s", kb.slug, reason)
    return until


def unblock_knowledge_base(kb: KnowledgeBase, now: datetime, using: str) -> int:
    """PromptJuggler accepts ``kb`` again: lift the block; its held documents are due now.

    Returns how many documents were released (their push is enqueued after commit).
    """
    change = transitions.unblock_knowledge_base()
    KnowledgeBase.objects.using(using).filter(pk=kb.pk).update(**change, updated_at=now)
    transitions.assign(kb, change)
    released = (
        KnowledgeDocument.objects.using(using)
        .filter(knowledge_base_id=kb.pk, sync_state=SyncState.QUEUED, next_attempt_at__gt=now)
        .update(**transitions.requeue(now))
    )
    if released:
        enqueue_push_for([kb.pk], using=using)
    return released


def _after_store(
    succeeded: list[tuple[KnowledgeDocument, RemoteDocument]],
    gave_up: list[tuple[KnowledgeDocument, str, int | None]],
    using: str,
) -> None:
    """After commit: public signals, then webhooks that arrived before the answer was stored."""
    for document, remote in succeeded:
        signals.send(
            signals.upload_succeeded, KnowledgeDocument, document=document, remote_document=remote
        )
    for document, error, status_code in gave_up:
        signals.send(
            signals.upload_failed,
            KnowledgeDocument,
            document=document,
            error=error,
            status_code=status_code,
        )
    if succeeded:
        replay_early_webhooks([remote.id for _, remote in succeeded], using=using)
