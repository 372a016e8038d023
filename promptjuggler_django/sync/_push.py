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

In autocommit (tasks, commands) a run sends each batch from one sending thread, which touches
no database, and stores the batch before it meanwhile: once batch N's answer is in, batch
N + 1 is claimed and sent, and batch N is stored while it is on the wire (:func:`_push`).

PromptJuggler has no idempotency key: an upload that failed with a 5xx may still have created
its documents. So before a document is sent a second time, the knowledge base's list is read
once and a matching document nobody knows is adopted rather than uploaded twice.

PromptJuggler publishes no limit on files or bytes per request. A batch it finds too large
(413, a 4xx that no single file of it earns, an answer listing only its first files) is sent
again in smaller pieces, and the rest of the run claims batches of the size that went through.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import F, Min, QuerySet
from django.utils import timezone

from .. import transitions
from ..client import (
    APIError,
    FileReadError,
    InvalidResponse,
    OutcomeUnknown,
    PromptJugglerClient,
    PromptJugglerError,
    RemoteKnowledgeBase,
    RequestNotSent,
    UploadFile,
)
from ..conf import pj_settings
from ..filetypes import guess_content_type
from ..models import KnowledgeBase, KnowledgeDocument, SyncState
from ..retries import backoff_delay
from ._locking import first_unlocked
from ._outbox import schedule_retry
from ._outcomes import (
    BLOCKED,
    FAILED,
    KNOWLEDGE_BASE_REFUSALS,
    NEEDS_REVIEW,
    REQUEUE,
    RETRYING,
    SYNCED,
    Claim,
    DocumentResult,
    Progress,
    PushReport,
    match_answer,
    store_outcomes,
)
from ._reconcile import learn_knowledge_base, match_unknown_documents
from ._streams import LazyStoredFile, stored_size
from ._tombstones import DrainReport, drain_tombstones

__all__ = [
    "DrainReport",
    "Progress",
    "PushReport",
    "backoff_delay",
    "drain_tombstones",
    "expire_leases",
    "match_answer",
    "push_documents",
    "push_due",
]

logger = logging.getLogger("promptjuggler_django.sync")

#: Answers to a batch that may be caused by one of its files: retry the files one by one.
ISOLATE_STATUSES = frozenset({400, 415, 422})
#: The batch is too large for PromptJuggler (whose limits are not published): halve it.
TOO_LARGE = 413

_MAX_CLAIMS_PER_RUN = 3


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
    #: A smaller batch than ``BATCH_MAX_FILES`` that PromptJuggler showed it wants in this run.
    max_files: int | None = None
    #: Knowledge bases whose document list must be read again before anything is resent.
    relist: set[int] = field(default_factory=set)
    #: Read once per run: a renamed knowledge base keeps its old slug as an alias remotely.
    knowledge_bases: dict[int, KnowledgeBase] = field(default_factory=dict)
    #: (knowledge base id, pk) of the last row claimed: the next claim reads on from there.
    after: tuple[int, int] | None = None

    def lower_batch(self, files: int) -> None:
        """Claim at most ``files`` documents per batch for the rest of this run."""
        files = max(1, files)
        self.max_files = files if self.max_files is None else min(self.max_files, files)

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
        **transitions.mark_needs_review(
            "The upload lease expired before its answer was stored; "
            "reconcile will adopt the remote copy or push again.",
            now,
        )
    )


# -- the loop --------------------------------------------------------------------------------


@dataclass
class _Batch:
    """A claimed batch on its way: the results known before sending, then the request's."""

    claim: Claim
    results: list[DocumentResult]
    #: The request, out on the sending thread while the batch before is stored.
    sending: Future[list[DocumentResult]] | None = None

    def answers(self) -> list[DocumentResult]:
        """Every row's result, waiting for the request's answer if it is still out."""
        if self.sending is not None:
            self.results.extend(self.sending.result())
            self.sending = None
        return self.results


def _push(
    scope: _Scope,
    *,
    client: PromptJugglerClient | None,
    using: str | None,
    progress: Progress | None,
    limit: int | None = None,
) -> PushReport:
    """Claim, send and store batch after batch, storing each batch while the next is sent.

    One request is out at a time, on one sending thread that touches no database. The next
    batch is claimed, and its request sent, only once the answer to the one before is in: a
    knowledge base that refused a batch or asked to wait gets no further request in this run,
    and a smaller batch size it asked for holds from the next claim. What overlaps is storing
    batch N's answers (the database) with sending batch N + 1 (the network).

    Only in autocommit, as tasks and commands run. Inside the caller's transaction (a view
    under ``ATOMIC_REQUESTS``, a test case) whatever the send calls, a storage or a client
    subclass, must see the caller's uncommitted rows, which another thread's connection cannot:
    there each batch is sent from this thread and stored before the next is claimed.
    """
    using = using or DEFAULT_DB_ALIAS
    report = PushReport()
    own_client = client is None
    listings: dict[int, RemoteKnowledgeBase | str] = {}
    touched: set[int] = set()
    sender = None
    if not connections[using].in_atomic_block:
        sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptjuggler-push")

    def finish(batch: _Batch) -> bool:
        due_again = _store(batch, report, using, scope)
        touched.add(batch.claim.knowledge_base.pk)
        if progress is not None:
            progress("push", report.attempted, None)
        return due_again

    previous: _Batch | None = None
    try:
        while True:
            due_again = False
            if previous is not None:
                _pause_waiting(scope, previous.claim, previous.answers())
                if sender is None:  # one batch at a time: stored before the next claim
                    due_again, previous = finish(previous), None
            current = None
            try:
                claim = _next_claim(scope, using, report, limit)
                if claim is not None:
                    if client is None:
                        try:
                            client = PromptJugglerClient.from_settings()
                        except ImproperlyConfigured as exc:  # no API key: nothing can be sent
                            results = [
                                DocumentResult(row, BLOCKED, error=str(exc)) for row in claim.rows
                            ]
                            current = _Batch(claim, results)
                    if client is not None:
                        current = _start(client, claim, listings, report, using, scope, sender)
            finally:  # the answers in hand are stored even when the next batch could not start
                if previous is not None:
                    due_again = finish(previous)
            if current is None and not due_again:
                break
            previous = current
    finally:
        if sender is not None:
            # A request still out is answered before the run ends; a connection a storage
            # backend opened on the sending thread is closed with it.
            sender.submit(connections.close_all)
            sender.shutdown(wait=True)
        if own_client and client is not None:
            client.close()
    _reschedule_waiting(touched | set(scope.knowledge_base_ids or ()), using)
    return report


def _next_claim(scope: _Scope, using: str, report: PushReport, limit: int | None) -> Claim | None:
    """The next batch of due rows, claimed; ``None`` when none is left (or the limit is met)."""
    while limit is None or report.attempted < limit:
        claim = _claim_batch(scope, using)
        if claim is None:
            return None
        if claim.rows:  # else another worker took them between our read and our update
            scope.note_claimed(row.pk for row in claim.rows)
            return claim
    return None


def _start(
    client: PromptJugglerClient,
    claim: Claim,
    listings: dict[int, RemoteKnowledgeBase | str],
    report: PushReport,
    using: str,
    scope: _Scope,
    sender: ThreadPoolExecutor | None,
) -> _Batch:
    """Check the batch's files and earlier attempts here, then send it on the sending thread
    (or here, without one)."""
    report.batches += 1
    results, sendable = _before_send(client, claim, listings, using, scope)
    batch = _Batch(claim, results)
    if sendable:
        report.attempted += len(sendable)
        if sender is None:
            results.extend(_send(client, claim.knowledge_base, sendable, report, scope))
        else:
            batch.sending = sender.submit(
                _send, client, claim.knowledge_base, sendable, report, scope
            )
    return batch


def _pause_waiting(scope: _Scope, claim: Claim, results: list[DocumentResult]) -> None:
    """Leave a knowledge base alone for the rest of the run once it asked to wait.

    Decided from the answers, before they are stored, so that the next claim already skips it:
    a row to be tried again (a 429, a 5xx, a request not sent) before its attempts run out, or
    a refusal of the whole knowledge base (its rows are held until the block ends). Each waiting
    row has a time, and a task is scheduled for the earliest (:func:`_reschedule_waiting`).
    """
    max_attempts = pj_settings.PUSH_MAX_ATTEMPTS
    for result in results:
        if result.kind == BLOCKED or (
            result.kind == RETRYING and result.row.attempts < max_attempts
        ):
            scope.paused.add(claim.knowledge_base.pk)
            return


def _store(batch: _Batch, report: PushReport, using: str, scope: _Scope) -> bool:
    """Store the batch's answers; whether rows went straight back in the queue (a batch
    refused for another file's sake, files an answer left out), for this run to claim."""
    claim = batch.claim
    stored = store_outcomes(claim, batch.answers(), report, using)
    due_again = False
    for row in stored:
        waits = row.sync_state == SyncState.RETRYING or (
            row.sync_state == SyncState.QUEUED and claim.knowledge_base.is_blocked
        )
        if waits and row.next_attempt_at is not None:
            scope.paused.add(row.knowledge_base_id)
        due_again |= row.sync_state == SyncState.QUEUED and row.next_attempt_at is None
    return due_again


def _reschedule_waiting(knowledge_base_ids: set[int], using: str) -> None:
    """One deferred push per knowledge base, at the earliest time one of its rows is due.

    Each row draws its own jittered delay, so the task that runs at the earliest pushes only
    what is due by then: whatever still waits (retrying, or held while the knowledge base is
    blocked) is handed on here, so every retry happens without ``promptjuggler_sync``. That
    includes a wait that ran out while this push was running (a short backoff on a busy
    worker): it is handed on for now, not dropped.
    """
    if not knowledge_base_ids:
        return
    earliest = (
        KnowledgeDocument.objects.using(using)
        .filter(
            knowledge_base_id__in=sorted(knowledge_base_ids),
            sync_state__in=(SyncState.QUEUED, SyncState.RETRYING),
            next_attempt_at__isnull=False,
        )
        .values("knowledge_base_id")
        .annotate(when=Min("next_attempt_at"))
        .order_by()
        .values_list("knowledge_base_id", "when")
    )
    for kb_id, when in earliest:
        schedule_retry(kb_id, when)


def _claim_batch(scope: _Scope, using: str) -> Claim | None:
    now = timezone.now()
    # A random sub-second offset keeps two claims made in the same instant apart.
    token = now + timedelta(seconds=pj_settings.LEASE, microseconds=secrets.randbelow(1_000_000))
    max_files, max_bytes = pj_settings.BATCH_MAX_FILES, pj_settings.BATCH_MAX_BYTES
    if scope.max_files is not None:
        max_files = min(max_files, scope.max_files)
    with transaction.atomic(using=using):
        rows = _due_rows(scope, using, now, max_files)
        if not rows:
            return None
        kb_id = rows[0].knowledge_base_id
        kb = scope.knowledge_bases.get(kb_id)
        if kb is None:
            kb = scope.knowledge_bases[kb_id] = KnowledgeBase.objects.using(using).get(pk=kb_id)
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
            .update(**transitions.claim(token, now), attempts=F("attempts") + 1)
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
                transitions.assign(row, transitions.claim(token, now))
    cache_kb = KnowledgeDocument._meta.get_field("knowledge_base").set_cached_value
    for row in batch:
        cache_kb(row, kb)  # as select_related would, with one instance for the batch
    if batch:
        scope.after = (kb_id, batch[-1].pk)
    return Claim(kb, batch, token)


def _due_rows(scope: _Scope, using: str, now: datetime, limit: int) -> list[KnowledgeDocument]:
    """Up to ``limit`` due rows in (knowledge base, pk) order, locked (skipping locked ones).

    Each claim reads on from the last row the run claimed, with bounds an index scan starts
    from: the rest of that knowledge base, then the next ones. Claimed rows leave the claim's
    partial index, but their old entries stay until the table is vacuumed, so a scan from the
    start would step over every row claimed so far and a long backlog would slow down as it
    drains. Only when nothing is left ahead does the claim read from the start, which finds
    what came due behind (a document queued again): the run ends only when that read is empty.
    """
    # No select_related: one knowledge base per batch, not one instance per row.
    qs = scope.queryset(using, now).order_by("knowledge_base_id", "pk")

    def first(candidates: QuerySet[KnowledgeDocument]) -> list[KnowledgeDocument]:
        return first_unlocked(candidates, using, limit)

    if scope.after is not None:
        kb_id, pk = scope.after
        rows = first(qs.filter(knowledge_base_id=kb_id, pk__gt=pk)) or first(
            qs.filter(knowledge_base_id__gt=kb_id)
        )
        if rows:
            return rows
    return first(qs)


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


def _before_send(
    client: PromptJugglerClient,
    claim: Claim,
    listings: dict[int, RemoteKnowledgeBase | str],
    using: str,
    scope: _Scope,
) -> tuple[list[DocumentResult], list[KnowledgeDocument]]:
    """The results known without sending (missing files, copies an earlier attempt created),
    and the rows left to send."""
    results: list[DocumentResult] = []
    sendable: list[KnowledgeDocument] = []
    if claim.knowledge_base.pk in scope.relist:  # an earlier answer left files unlisted
        scope.relist.discard(claim.knowledge_base.pk)
        listings.pop(claim.knowledge_base.pk, None)
    for row in claim.rows:
        problem = _prepare(row)
        if problem:
            results.append(DocumentResult(row, FAILED, error=problem))
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
    return results, sendable


def _adopt_before_retry(
    client: PromptJugglerClient,
    claim: Claim,
    rows: list[KnowledgeDocument],
    listings: dict[int, RemoteKnowledgeBase | str],
    using: str,
) -> tuple[list[DocumentResult], list[DocumentResult]]:
    """Adopt remote documents an earlier attempt created; (adopted, could-not-check) results."""
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
        return [], [DocumentResult(row, RETRYING, error=listing) for row in rows]
    matches = match_unknown_documents(
        kb, rows, listing.documents, using=using, busy_pks=[r.pk for r in claim.rows]
    )
    return [DocumentResult(row, SYNCED, remote=doc, adopted=True) for row, doc in matches], []


def _send(
    client: PromptJugglerClient,
    kb: KnowledgeBase,
    rows: Sequence[KnowledgeDocument],
    report: PushReport,
    scope: _Scope,
) -> list[DocumentResult]:
    readers = [LazyStoredFile(row.file.storage, row.file.name or "", row.file_size) for row in rows]
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
        return [DocumentResult(row, RETRYING, error=str(exc)) for row in rows]
    except APIError as exc:
        if exc.status_code in KNOWLEDGE_BASE_REFUSALS:
            reason = f"PromptJuggler refuses the knowledge base {kb.slug!r}: {exc}"
            return [
                DocumentResult(row, BLOCKED, error=reason, status_code=exc.status_code)
                for row in rows
            ]
        if exc.retryable:
            return [
                DocumentResult(
                    row,
                    RETRYING,
                    error=str(exc),
                    status_code=exc.status_code,
                    retry_after=exc.retry_after,
                )
                for row in rows
            ]
        if len(rows) > 1 and exc.status_code == TOO_LARGE:
            # Too much in one request: send each half (halving again if needed) and claim
            # no more than that for the rest of this run. A single file too large fails.
            half = (len(rows) + 1) // 2
            scope.lower_batch(half)
            return _send(client, kb, rows[:half], report, scope) + _send(
                client, kb, rows[half:], report, scope
            )
        if len(rows) > 1 and exc.status_code in ISOLATE_STATUSES:
            # One bad file refuses the whole batch: send each alone to find it.
            isolated: list[DocumentResult] = []
            for row in rows:
                isolated.extend(_send(client, kb, [row], report, scope))
            if all(r.kind == SYNCED for r in isolated):
                # No file was at fault: the batch was (a server that counts files per
                # request and says so with a 4xx). Send fewer at a time from now on.
                scope.lower_batch((len(rows) + 1) // 2)
            return isolated
        return [
            DocumentResult(row, FAILED, error=exc.message or str(exc), status_code=exc.status_code)
            for row in rows
        ]
    except (OutcomeUnknown, InvalidResponse) as exc:
        return [DocumentResult(row, NEEDS_REVIEW, error=str(exc)) for row in rows]
    except Exception as exc:  # unexpected: the request may have gone out, so do not resend
        logger.exception("Uploading to PromptJuggler failed unexpectedly.")
        return [
            DocumentResult(row, NEEDS_REVIEW, error=f"{type(exc).__name__}: {exc}") for row in rows
        ]
    finally:
        for reader in readers:
            reader.close()
    listed = len(answer)
    if 0 < listed < len(rows) and all(
        doc.file_name == row.file_name for row, doc in zip(rows, answer, strict=False)
    ):
        # Only the first files were listed: a server with a per-request file cap may drop
        # the rest without an error (PHP's max_file_uploads does). Queue them again, to be
        # sent in batches that fit once a fresh document list showed they were not created.
        scope.lower_batch(listed)
        scope.relist.add(kb.pk)
        unlisted = "The upload answer listed only the first files; sent again."
        return match_answer(rows[:listed], answer) + [
            DocumentResult(row, REQUEUE, error=unlisted) for row in rows[listed:]
        ]
    return match_answer(rows, answer)


def _file_errors(
    rows: Sequence[KnowledgeDocument], readers: Sequence[LazyStoredFile], message: str
) -> list[DocumentResult]:
    """A file broke the request body: blame it, put the other files back in the queue."""
    blamed = [reader.error is not None for reader in readers]
    if not any(blamed):
        return [DocumentResult(row, RETRYING, error=message) for row in rows]
    results = []
    for row, reader in zip(rows, readers, strict=True):
        if reader.error is None:
            results.append(DocumentResult(row, REQUEUE, refund=True))
        elif reader.error == "missing":
            results.append(DocumentResult(row, FAILED, error=reader.error_detail))
        else:
            if reader.error == "size_mismatch":  # measure again for the next attempt
                row.file_size = None
                _prepare(row)
            results.append(DocumentResult(row, RETRYING, error=reader.error_detail))
    return results
