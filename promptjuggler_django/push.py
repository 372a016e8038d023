"""Pushing documents: claim due rows, stream them in batches, store what PromptJuggler answered.

One batch is one upload request for one knowledge base, bounded by ``BATCH_MAX_FILES`` and
``BATCH_MAX_BYTES``. Each batch takes a fixed number of queries, whatever its size:

1. **claim** (short transaction): lock due rows (``SKIP LOCKED`` where the database has it),
   mark them ``uploading`` with a lease in ``next_attempt_at``. The lease value doubles as the
   claim's mark: a row still ``uploading`` with another lease belongs to another worker.
2. **send** (no transaction): stream the files to ``POST /knowledge-bases/<slug>/documents``.
3. **store** (short transaction): lock the rows again and keep each answer only if the row is
   still the one that was sent. A row deleted meanwhile, or whose file was replaced, gets its
   fresh remote copy tombstoned instead.

PromptJuggler has no idempotency key: an upload that failed with a 5xx may still have created
its documents. So before a document is sent a second time, the knowledge base's list is read
once and a matching document nobody knows is adopted rather than uploaded twice.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from . import signals
from ._multipart import guess_content_type
from .client import (
    APIError,
    FileReadError,
    InvalidResponse,
    OutcomeUnknown,
    PromptJugglerClient,
    PromptJugglerError,
    RemoteDocument,
    RemoteKnowledgeBase,
    RequestNotSent,
    UploadFile,
)
from .conf import pj_settings
from .models import KnowledgeBase, KnowledgeDocument, RemoteDeletion, SyncState
from .outbox import Tombstone, schedule_retry, write_tombstones
from .streams import LazyStoredFile, stored_size

logger = logging.getLogger("promptjuggler_django.sync")

#: Called as ``progress(step, done, total)``; ``total`` may be None when unknown.
Progress = Callable[[str, int, "int | None"], None]

#: Answers to a batch that may be caused by one of its files: retry the files one by one.
ISOLATE_STATUSES = frozenset({400, 413, 415, 422})

_ERROR_LENGTH = 2000
_MAX_CLAIMS_PER_RUN = 3

# Result kinds of one document in one push.
SYNCED, RETRYING, FAILED, NEEDS_REVIEW, REQUEUE = (
    "synced",
    "retrying",
    "failed",
    "needs_review",
    "requeue",
)


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
            "batches",
            "requests",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for message in other.errors:
            self.note_error(message)


@dataclass
class DrainReport:
    """What draining tombstones did."""

    deleted: int = 0
    #: PromptJuggler answered 404: the document was already gone (also done).
    already_gone: int = 0
    #: Tombstones kept for a later attempt.
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def merge(self, other: DrainReport) -> None:
        self.deleted += other.deleted
        self.already_gone += other.already_gone
        self.failed += other.failed
        for message in other.errors:
            if message not in self.errors and len(self.errors) < 20:
                self.errors.append(message)


@dataclass
class _Result:
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
class _Claim:
    knowledge_base: KnowledgeBase
    rows: list[KnowledgeDocument]
    #: The lease end written on the rows; identifies this claim.
    token: datetime


@dataclass
class _Scope:
    """Which rows a push may claim."""

    ids: list[int] | None = None
    knowledge_base_ids: list[int] | None = None
    #: Knowledge bases answering 429/5xx in this run: leave them alone until their backoff.
    paused: set[int] = field(default_factory=set)
    #: Rows claimed this often in one run (a file replaced during every push) wait for the next.
    claims: dict[int, int] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)

    def note_claimed(self, pks: Iterable[int]) -> None:
        for pk in pks:
            self.claims[pk] = self.claims.get(pk, 0) + 1
            if self.claims[pk] >= _MAX_CLAIMS_PER_RUN:
                self.skipped.add(pk)

    def queryset(self, using: str, now: datetime) -> QuerySet[KnowledgeDocument]:
        qs = KnowledgeDocument.objects.using(using).due(now)
        if self.ids is not None:
            qs = qs.filter(pk__in=self.ids)
        if self.knowledge_base_ids is not None:
            qs = qs.filter(knowledge_base_id__in=self.knowledge_base_ids)
        if self.paused:
            qs = qs.exclude(knowledge_base_id__in=self.paused)
        if self.skipped:
            qs = qs.exclude(pk__in=self.skipped)
        return qs


# -- public entry points (re-exported by sync.py) --------------------------------------------


def push_documents(
    document_ids: Iterable[int],
    *,
    client: PromptJugglerClient | None = None,
    using: str | None = None,
    progress: Progress | None = None,
) -> PushReport:
    """Push the given documents that are due (queued, or retrying whose time has come).

    Safe to call from several workers at once and to call again: rows another worker holds
    are skipped, rows already pushed are not due any more. Ids of deleted rows are ignored.
    """
    ids = sorted({int(i) for i in document_ids})
    if not ids:
        return PushReport()
    return _push(_Scope(ids=ids), client=client, using=using, progress=progress)


def push_due(
    *,
    knowledge_base_ids: Iterable[int] | None = None,
    limit: int | None = None,
    client: PromptJugglerClient | None = None,
    using: str | None = None,
    progress: Progress | None = None,
) -> PushReport:
    """Push every due document (of these knowledge bases), batch by batch.

    ``limit`` stops after about that many documents were sent (whole batches).
    """
    kb_ids = None if knowledge_base_ids is None else sorted({int(i) for i in knowledge_base_ids})
    if kb_ids == []:
        return PushReport()
    return _push(
        _Scope(knowledge_base_ids=kb_ids),
        client=client,
        using=using,
        progress=progress,
        limit=limit,
    )


def expire_leases(
    *, using: str | None = None, knowledge_base_ids: Iterable[int] | None = None
) -> int:
    """Move ``uploading`` rows whose lease ended to ``needs_review``; how many.

    The worker that held them stopped (or is very slow): its upload may or may not have
    reached PromptJuggler, so reconcile decides. A worker that finishes late still stores its
    answer (the row is then no longer in review).
    """
    now = timezone.now()
    qs = KnowledgeDocument.objects.using(using or DEFAULT_DB_ALIAS).filter(
        sync_state=SyncState.UPLOADING, next_attempt_at__lt=now
    )
    if knowledge_base_ids is not None:
        qs = qs.filter(knowledge_base_id__in=list(knowledge_base_ids))
    return qs.update(
        sync_state=SyncState.NEEDS_REVIEW,
        next_attempt_at=None,
        last_error="The upload lease expired before its answer was stored; "
        "reconcile will adopt the remote copy or push again.",
        updated_at=now,
    )


def backoff_delay(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before attempt ``attempts + 1``: exponential, capped, jittered, ≥ Retry-After."""
    ceiling = min(
        pj_settings.PUSH_BACKOFF_MAX, pj_settings.PUSH_BACKOFF * 2 ** max(0, attempts - 1)
    )
    # Equal jitter: spread workers apart without ever retrying at once.
    delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


# -- the loop --------------------------------------------------------------------------------


def _push(
    scope: _Scope,
    *,
    client: PromptJugglerClient | None,
    using: str | None,
    progress: Progress | None,
    limit: int | None = None,
) -> PushReport:
    using = using or DEFAULT_DB_ALIAS
    report = PushReport()
    own_client = client is None
    listings: dict[int, RemoteKnowledgeBase | str] = {}
    retry_at: dict[int, datetime] = {}
    try:
        while limit is None or report.attempted < limit:
            claim = _claim_batch(scope, using)
            if claim is None:
                break
            if not claim.rows:
                continue  # another worker took them between our read and our update
            scope.note_claimed(row.pk for row in claim.rows)
            if client is None:
                client = PromptJugglerClient.from_settings()
            report.batches += 1
            results = _process(client, claim, listings, report, using)
            stored = _store(claim, results, report, using)
            for row in stored:
                if row.sync_state == SyncState.RETRYING and row.next_attempt_at is not None:
                    kb_id = row.knowledge_base_id
                    scope.paused.add(kb_id)
                    if kb_id not in retry_at or row.next_attempt_at < retry_at[kb_id]:
                        retry_at[kb_id] = row.next_attempt_at
            if progress is not None:
                progress("push", report.attempted, None)
    finally:
        if own_client and client is not None:
            client.close()
    for kb_id, when in retry_at.items():
        schedule_retry(kb_id, when)
    return report


def _locked(qs: QuerySet[Any], using: str, *, skip_locked: bool) -> QuerySet[Any]:
    features = connections[using].features
    if not features.has_select_for_update:
        return qs  # SQLite: writes are serialised; the conditional update decides
    kwargs: dict[str, Any] = {}
    if skip_locked and features.has_select_for_update_skip_locked:
        kwargs["skip_locked"] = True
    if features.has_select_for_update_of:
        kwargs["of"] = ("self",)
    return qs.select_for_update(**kwargs)


def _claim_batch(scope: _Scope, using: str) -> _Claim | None:
    now = timezone.now()
    # A random sub-second offset keeps two claims made in the same instant apart.
    token = now + timedelta(
        seconds=pj_settings.UPLOAD_LEASE, microseconds=secrets.randbelow(1_000_000)
    )
    max_files, max_bytes = pj_settings.BATCH_MAX_FILES, pj_settings.BATCH_MAX_BYTES
    with transaction.atomic(using=using):
        qs = scope.queryset(using, now).select_related("knowledge_base")
        qs = qs.order_by("knowledge_base_id", "pk")
        rows = list(_locked(qs, using, skip_locked=True)[:max_files])
        if not rows:
            return None
        kb = rows[0].knowledge_base
        kb_id = kb.pk
        batch: list[KnowledgeDocument] = []
        total = 0
        for row in rows:
            size = row.file_size or 0
            if row.knowledge_base_id != kb_id or (batch and total + size > max_bytes):
                break
            batch.append(row)
            total += size
        pks = [row.pk for row in batch]
        claimed = (
            KnowledgeDocument.objects.using(using)
            .filter(pk__in=pks)
            .due(now)
            .update(
                sync_state=SyncState.UPLOADING,
                next_attempt_at=token,
                attempts=F("attempts") + 1,
                updated_at=now,
            )
        )
        if claimed != len(batch):  # no row locks here: read back what this claim got
            batch = list(
                KnowledgeDocument.objects.using(using)
                .filter(pk__in=pks, sync_state=SyncState.UPLOADING, next_attempt_at=token)
                .order_by("pk")
            )
        else:
            for row in batch:
                row.attempts += 1
                row.sync_state = SyncState.UPLOADING
                row.next_attempt_at = token
    return _Claim(kb, batch, token)


# -- sending ---------------------------------------------------------------------------------


def _prepare(row: KnowledgeDocument) -> str | None:
    """Fill what bulk-created rows may lack (name, size, type); an error if the file is gone."""
    name = row.file.name or ""
    if not name:
        return "The document has no file."
    if not row.file_name:
        row.file_name = name.rsplit("/", 1)[-1][:255]
    if not row.content_type:
        row.content_type = guess_content_type(row.file_name)
    if row.file_size is None:
        try:
            row.file_size = stored_size(row.file.storage, name)
        except FileNotFoundError:
            return f"The file {name!r} is missing from its storage."
        except Exception as exc:  # a storage outage: try again later
            logger.warning("Could not read the size of %r: %s", name, type(exc).__name__)
    return None


def _process(
    client: PromptJugglerClient,
    claim: _Claim,
    listings: dict[int, RemoteKnowledgeBase | str],
    report: PushReport,
    using: str,
) -> list[_Result]:
    results: list[_Result] = []
    sendable: list[KnowledgeDocument] = []
    for row in claim.rows:
        problem = _prepare(row)
        if problem:
            results.append(_Result(row, FAILED, error=problem))
        else:
            sendable.append(row)
    # Rows sent before whose failure may hide a created document: look before sending again.
    retried = [row for row in sendable if row.attempts > 1]
    if retried:
        found, unverified = _adopt_before_retry(client, claim, retried, listings, using)
        results.extend(found)
        results.extend(unverified)
        done = {id(r.row) for r in found} | {id(r.row) for r in unverified}
        sendable = [row for row in sendable if id(row) not in done]
    if sendable:
        report.attempted += len(sendable)
        results.extend(_send(client, claim.knowledge_base, sendable, report))
    return results


def _adopt_before_retry(
    client: PromptJugglerClient,
    claim: _Claim,
    rows: list[KnowledgeDocument],
    listings: dict[int, RemoteKnowledgeBase | str],
    using: str,
) -> tuple[list[_Result], list[_Result]]:
    """Adopt remote documents an earlier attempt created; (adopted, could-not-check) results."""
    from .reconcile import learn_knowledge_base, match_unknown_documents

    kb = claim.knowledge_base
    listing = listings.get(kb.pk)
    if listing is None:
        fetched_at = timezone.now()
        try:
            remote = client.get_knowledge_base(kb.slug)
        except PromptJugglerError as exc:
            listing = f"Could not list the knowledge base before sending again: {exc}"
        else:
            listing = remote
            learn_knowledge_base(kb, remote, fetched_at, using=using)
        listings[kb.pk] = listing
    if isinstance(listing, str):
        return [], [_Result(row, RETRYING, error=listing) for row in rows]
    matches = match_unknown_documents(
        kb, rows, listing.documents, using=using, busy_pks=[r.pk for r in claim.rows]
    )
    return [_Result(row, SYNCED, remote=doc, adopted=True) for row, doc in matches], []


def _send(
    client: PromptJugglerClient,
    kb: KnowledgeBase,
    rows: Sequence[KnowledgeDocument],
    report: PushReport,
) -> list[_Result]:
    readers = [LazyStoredFile(row.file.storage, row.file.name, row.file_size) for row in rows]
    files = [
        UploadFile(row.file_name, reader, row.file_size, row.content_type or None)
        for row, reader in zip(rows, readers, strict=True)
    ]
    report.requests += 1
    try:
        answer = client.upload_documents(kb.slug, files)
    except FileReadError as exc:
        return _file_errors(rows, readers, str(exc))
    except RequestNotSent as exc:
        return [_Result(row, RETRYING, error=str(exc)) for row in rows]
    except APIError as exc:
        if exc.retryable:
            return [
                _Result(
                    row,
                    RETRYING,
                    error=str(exc),
                    status_code=exc.status_code,
                    retry_after=exc.retry_after,
                )
                for row in rows
            ]
        if len(rows) > 1 and exc.status_code in ISOLATE_STATUSES:
            # One bad file refuses the whole batch: send each alone to find it.
            isolated: list[_Result] = []
            for row in rows:
                isolated.extend(_send(client, kb, [row], report))
            return isolated
        return [
            _Result(row, FAILED, error=exc.message or str(exc), status_code=exc.status_code)
            for row in rows
        ]
    except (OutcomeUnknown, InvalidResponse) as exc:
        return [_Result(row, NEEDS_REVIEW, error=str(exc)) for row in rows]
    except Exception as exc:  # unexpected: the request may have gone out, so do not resend
        logger.exception("Uploading to PromptJuggler failed unexpectedly.")
        return [_Result(row, NEEDS_REVIEW, error=f"{type(exc).__name__}: {exc}") for row in rows]
    finally:
        for reader in readers:
            reader.close()
    return match_answer(rows, answer)


def _file_errors(
    rows: Sequence[KnowledgeDocument], readers: Sequence[LazyStoredFile], message: str
) -> list[_Result]:
    """A file broke the request body: blame it, put the other files back in the queue."""
    blamed = [reader.error is not None for reader in readers]
    if not any(blamed):
        return [_Result(row, RETRYING, error=message) for row in rows]
    results = []
    for row, reader in zip(rows, readers, strict=True):
        if reader.error is None:
            results.append(_Result(row, REQUEUE, refund=True))
        elif reader.error == "missing":
            results.append(_Result(row, FAILED, error=reader.error_detail))
        else:
            if reader.error == "size_mismatch":  # measure again for the next attempt
                row.file_size = None
                _prepare(row)
            results.append(_Result(row, RETRYING, error=reader.error_detail))
    return results


def match_answer(
    rows: Sequence[KnowledgeDocument], answer: Sequence[RemoteDocument]
) -> list[_Result]:
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
            results.append(_Result(row, SYNCED, remote=pairs[i]))
        else:
            results.append(
                _Result(row, NEEDS_REVIEW, error="The upload answer did not list this file.")
            )
    return results


# -- storing ---------------------------------------------------------------------------------

_STORE_FIELDS = [
    "sync_state",
    "attempts",
    "last_error",
    "next_attempt_at",
    "remote_id",
    "remote_status",
    "chunk_count",
    "status_changed_at",
    "pushed_at",
    "file_name",
    "file_size",
    "content_type",
    "updated_at",
]


def _discard_reason(
    current: KnowledgeDocument | None,
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


def _still_ours(
    current: KnowledgeDocument | None, sent: KnowledgeDocument, token: datetime
) -> bool:
    return (
        current is not None
        and current.file_version == sent.file_version
        and current.sync_state == SyncState.UPLOADING
        and current.next_attempt_at == token
    )


def _store(
    claim: _Claim, results: list[_Result], report: PushReport, using: str
) -> list[KnowledgeDocument]:
    """Write the batch's outcomes in one transaction; the rows as stored."""
    now = timezone.now()
    kb = claim.knowledge_base
    max_attempts = pj_settings.PUSH_MAX_ATTEMPTS
    updates: list[KnowledgeDocument] = []
    succeeded: list[tuple[KnowledgeDocument, RemoteDocument]] = []
    gave_up: list[tuple[KnowledgeDocument, str, int | None]] = []
    tombstones: list[Tombstone] = []
    with transaction.atomic(using=using):
        pks = [r.row.pk for r in results]
        qs = KnowledgeDocument.objects.using(using).filter(pk__in=pks)
        current = {d.pk: d for d in _locked(qs, using, skip_locked=False)}
        remote_ids = [r.remote.id for r in results if r.remote is not None]
        holders: dict[Any, int] = {}
        if remote_ids:
            holders = dict(
                KnowledgeDocument.objects.using(using)
                .filter(remote_id__in=remote_ids)
                .values_list("remote_id", "pk")
            )
        for res in results:
            sent, cur = res.row, current.get(res.row.pk)
            if res.remote is not None:
                if cur is not None and cur.remote_id == res.remote.id:
                    continue  # reconcile adopted this very copy meanwhile
                reason = _discard_reason(
                    cur, sent, res.remote, claim.token, holders.get(res.remote.id)
                )
                if reason == "held":
                    # Another row already owns this remote id: never delete it; review ours.
                    res = _Result(
                        sent, NEEDS_REVIEW, error="The remote copy belongs to another row."
                    )
                elif reason:
                    tombstones.append(
                        Tombstone(
                            res.remote.id, kb.pk, kb.slug, sent.file_name, sent.file_size, reason
                        )
                    )
                    report.discarded += 1
                    continue
                else:
                    assert cur is not None
                    _mark_synced(cur, sent, res.remote, now)
                    updates.append(cur)
                    succeeded.append((cur, res.remote))
                    report.synced += 1
                    report.adopted += int(res.adopted)
                    continue
            if not _still_ours(cur, sent, claim.token):
                continue  # deleted, replaced or taken over meanwhile: its new state stands
            assert cur is not None
            _mark_failure(cur, sent, res, now, max_attempts)
            updates.append(cur)
            report.note_error(res.error)
            if cur.sync_state == SyncState.FAILED:
                report.failed += 1
                gave_up.append((cur, cur.last_error, res.status_code))
            elif cur.sync_state == SyncState.RETRYING:
                report.retrying += 1
            elif cur.sync_state == SyncState.NEEDS_REVIEW:
                report.needs_review += 1
            else:
                report.requeued += 1
        if updates:
            KnowledgeDocument.objects.using(using).bulk_update(updates, _STORE_FIELDS)
        if tombstones:
            write_tombstones(tombstones, using=using)
        if succeeded or gave_up:
            transaction.on_commit(
                partial(_after_store, succeeded, gave_up, using), using=using, robust=True
            )
    return updates


def _mark_synced(
    cur: KnowledgeDocument, sent: KnowledgeDocument, remote: RemoteDocument, now: datetime
) -> None:
    cur.remote_id = remote.id
    cur.remote_status = remote.status[:32]
    cur.chunk_count = remote.chunk_count
    # No observation time: the upload answer is the weakest news there is, so any webhook
    # (even one logged before this answer was stored) or poll may move it forward.
    cur.status_changed_at = None
    cur.sync_state = SyncState.SYNCED
    cur.last_error = ""
    cur.next_attempt_at = None
    cur.pushed_at = now
    cur.file_name, cur.file_size, cur.content_type = (
        sent.file_name,
        sent.file_size,
        sent.content_type,
    )
    cur.updated_at = now


def _mark_failure(
    cur: KnowledgeDocument, sent: KnowledgeDocument, res: _Result, now: datetime, max_attempts: int
) -> None:
    cur.file_name, cur.file_size, cur.content_type = (
        sent.file_name,
        sent.file_size,
        sent.content_type,
    )
    cur.updated_at = now
    cur.next_attempt_at = None
    cur.last_error = res.error[:_ERROR_LENGTH]
    if res.kind == REQUEUE:
        cur.sync_state = SyncState.QUEUED
        cur.attempts = max(0, cur.attempts - int(res.refund))
    elif res.kind == RETRYING and cur.attempts >= max_attempts:
        cur.sync_state = SyncState.FAILED
        cur.last_error = f"Gave up after {cur.attempts} attempts. {res.error}"[:_ERROR_LENGTH]
    elif res.kind == RETRYING:
        cur.sync_state = SyncState.RETRYING
        cur.next_attempt_at = now + timedelta(seconds=backoff_delay(cur.attempts, res.retry_after))
    elif res.kind == FAILED:
        cur.sync_state = SyncState.FAILED
    else:
        cur.sync_state = SyncState.NEEDS_REVIEW


def _after_store(
    succeeded: list[tuple[KnowledgeDocument, RemoteDocument]],
    gave_up: list[tuple[KnowledgeDocument, str, int | None]],
    using: str,
) -> None:
    """After commit: public signals, then webhooks that arrived before the answer was stored."""
    for document, remote in succeeded:
        _send_signal(signals.upload_succeeded, document=document, remote_document=remote)
    for document, error, status_code in gave_up:
        _send_signal(signals.upload_failed, document=document, error=error, status_code=status_code)
    if succeeded:
        replay_early_webhooks([remote.id for _, remote in succeeded], using=using)


def _send_signal(signal: Any, **kwargs: Any) -> None:
    # The state is committed; one failing receiver must not stop the others or the worker.
    for receiver, response in signal.send_robust(sender=KnowledgeDocument, **kwargs):
        if isinstance(response, Exception):
            logger.error(
                "A receiver of a PromptJuggler signal failed: %r",
                receiver,
                exc_info=(type(response), response, response.__traceback__),
            )


def replay_early_webhooks(remote_ids: Sequence[Any], *, using: str | None = None) -> int:
    """Apply logged ``knowledgedocument.finished`` deliveries that found no row at the time.

    PromptJuggler may finish a small document and send its webhook before the upload answer
    is stored here; that delivery was logged as ``unknown_object``. Once the remote id is on
    its row, the logged deliveries are applied again (forward-only, so order does not matter).
    One query when there is nothing to replay.
    """
    from .models import WebhookDelivery

    if not remote_ids:
        return 0
    deliveries = list(
        WebhookDelivery.objects.using(using or DEFAULT_DB_ALIAS)
        .filter(
            object_id__in=[str(r) for r in remote_ids],
            outcome=WebhookDelivery.Outcome.UNKNOWN_OBJECT,
            event_type=WebhookDelivery.EventType.DOCUMENT_FINISHED,
        )
        .order_by("signature_timestamp", "pk")
        .values_list("pk", flat=True)
    )
    if not deliveries:
        return 0
    from .deliveries import replay_delivery

    for delivery_id in deliveries:
        replay_delivery(delivery_id)
    return len(deliveries)


# -- tombstones ------------------------------------------------------------------------------

_TOMBSTONES_PER_ROUND = 100


def drain_tombstones(
    ids: Iterable[int] | None = None,
    *,
    knowledge_base: KnowledgeBase | None = None,
    client: PromptJugglerClient | None = None,
    using: str | None = None,
    progress: Progress | None = None,
) -> DrainReport:
    """Delete the remote documents tombstones point to; drop each tombstone once done.

    PromptJuggler's 204 and 404 both mean the document is gone. Anything else keeps the
    tombstone with its error and a backoff: deleting is idempotent, so it is simply tried
    again later. Tombstones without a remote id (unknown upload outcomes) are left to reconcile.
    """
    using = using or DEFAULT_DB_ALIAS
    report = DrainReport()
    only = None if ids is None else sorted({int(i) for i in ids})
    if only == []:
        return report
    own_client = client is None
    seen: set[int] = set()
    try:
        while True:
            now = timezone.now()
            lease = now + timedelta(seconds=pj_settings.UPLOAD_LEASE)
            with transaction.atomic(using=using):
                qs = RemoteDeletion.objects.using(using).filter(remote_id__isnull=False)
                qs = qs.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
                if only is not None:
                    qs = qs.filter(pk__in=only)
                if knowledge_base is not None:
                    qs = qs.filter(
                        Q(knowledge_base=knowledge_base)
                        | Q(knowledge_base__isnull=True, knowledge_base_slug=knowledge_base.slug)
                    )
                if seen:
                    qs = qs.exclude(pk__in=seen)
                qs = qs.select_related("knowledge_base").order_by("pk")
                batch = list(_locked(qs, using, skip_locked=True)[:_TOMBSTONES_PER_ROUND])
                if not batch:
                    break
                RemoteDeletion.objects.using(using).filter(pk__in=[t.pk for t in batch]).update(
                    next_attempt_at=lease, attempts=F("attempts") + 1
                )
            seen.update(t.pk for t in batch)
            if client is None:
                client = PromptJugglerClient.from_settings()
            done: list[tuple[RemoteDeletion, bool]] = []
            kept: list[RemoteDeletion] = []
            for tombstone in batch:
                try:
                    deleted = client.delete_document(tombstone.remote_id)  # type: ignore[arg-type]
                except PromptJugglerError as exc:
                    tombstone.attempts += 1
                    tombstone.last_error = str(exc)[:_ERROR_LENGTH]
                    retry_after = exc.retry_after if isinstance(exc, APIError) else None
                    tombstone.next_attempt_at = timezone.now() + timedelta(
                        seconds=backoff_delay(tombstone.attempts, retry_after)
                    )
                    kept.append(tombstone)
                    if len(report.errors) < 20 and str(exc) not in report.errors:
                        report.errors.append(str(exc))
                else:
                    done.append((tombstone, deleted))
            with transaction.atomic(using=using):
                if done:
                    RemoteDeletion.objects.using(using).filter(
                        pk__in=[t.pk for t, _ in done]
                    ).delete()
                if kept:
                    RemoteDeletion.objects.using(using).bulk_update(
                        kept, ["attempts", "last_error", "next_attempt_at"]
                    )
                if done:
                    transaction.on_commit(partial(_after_drain, done), using=using, robust=True)
            report.deleted += sum(1 for _, deleted in done if deleted)
            report.already_gone += sum(1 for _, deleted in done if not deleted)
            report.failed += len(kept)
            if progress is not None:
                progress("delete", report.deleted + report.already_gone + report.failed, None)
            if kept and not done:
                break  # PromptJuggler is refusing or unreachable: stop hammering it
    finally:
        if own_client and client is not None:
            client.close()
    return report


def _after_drain(done: list[tuple[RemoteDeletion, bool]]) -> None:
    for tombstone, deleted in done:
        for receiver, response in signals.remote_deleted.send_robust(
            sender=KnowledgeDocument,
            remote_id=tombstone.remote_id,
            knowledge_base=tombstone.knowledge_base,
            reason=tombstone.reason,
            already_gone=not deleted,
        ):
            if isinstance(response, Exception):
                logger.error(
                    "A receiver of remote_deleted failed: %r",
                    receiver,
                    exc_info=(type(response), response, response.__traceback__),
                )
