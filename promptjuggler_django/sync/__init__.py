"""The outbound sync engine's public API: push, delete, refresh, reconcile, run everything.

The database rows are the outbox. Receivers mark documents ``queued`` and write tombstones in
the user's transaction; tasks enqueued after commit call the functions here; and
:func:`run_sync` (``manage.py promptjuggler_sync``) can always finish whatever the tasks did not.

States of :attr:`KnowledgeDocument.sync_state <promptjuggler_django.models.SyncState>`::

    queued ──claim──► uploading ──200──► synced
      ▲                  │ 429 / 5xx / not sent ──► retrying ──(next_attempt_at)──► claimed again
      │                  │ definite 4xx, or PUSH_MAX_ATTEMPTS ──► failed
      │                  │ timeout after sending, lease expired ──► needs_review
      └── file replaced, push_again, reconcile (no remote copy found / deleted remotely)

Each arrow is a function of :mod:`promptjuggler_django.transitions`. The implementation lives in
``_push`` (claiming and streaming batches), ``_outcomes`` (storing what PromptJuggler answered),
``_tombstones`` (remote deletes), ``_reconcile`` (one ``GET`` per knowledge base), ``_outbox``
(recording work, on-commit triggers) and ``_receivers`` (the model signals).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from .. import transitions
from ..apply import process_pending_deliveries
from ..client import PromptJugglerClient
from ..models import (
    KnowledgeBase,
    KnowledgeDocument,
    KnowledgeDocumentQuerySet,
    RemoteDeletion,
    SyncState,
)
from . import tasks  # noqa: F401  (importing it hands the tasks to the outbox's triggers)
from ._outbox import (
    Tombstone,
    enqueue_push_for,
    may_have_unrecorded_copy,
    schedule_retry,
    suppress_sync,
    sync_suppressed,
    write_tombstones,
)
from ._push import (
    DrainReport,
    Progress,
    PushReport,
    backoff_delay,
    drain_tombstones,
    expire_leases,
    push_documents,
    push_due,
)
from ._receivers import connect as connect_receivers
from ._reconcile import (
    ReconcileReport,
    RefreshReport,
    reconcile,
    refresh_documents,
    refresh_knowledge_base,
)

__all__ = [
    "DrainReport",
    "Progress",
    "PushReport",
    "ReconcileReport",
    "RefreshReport",
    "SyncSummary",
    "backoff_delay",
    "connect_receivers",
    "delete_remote",
    "drain_tombstones",
    "enqueue_push_for",
    "expire_leases",
    "push_again",
    "push_documents",
    "push_due",
    "push_queryset",
    "reconcile",
    "refresh_documents",
    "refresh_knowledge_base",
    "run_sync",
    "schedule_retry",
    "suppress_sync",
    "sync_suppressed",
]


# -- pushing again ---------------------------------------------------------------------------


def push_queryset(queryset: QuerySet[KnowledgeDocument]) -> int:
    """Queue these documents to be pushed (again) and enqueue the push after commit.

    The public path for rows that bypassed the receivers: ``bulk_create()`` and
    ``QuerySet.update()`` send no signals. A document that has a remote copy gets it
    tombstoned (the new upload replaces it); an upload in flight for it is discarded when it
    lands. Returns how many documents were queued. A fixed number of queries per 1,000 rows.
    """
    using = queryset.db
    count = 0
    with transaction.atomic(using=using):
        rows = queryset.order_by().values_list(
            "pk",
            "knowledge_base_id",
            "remote_id",
            "sync_state",
            "attempts",
            "file_name",
            "file_size",
        )
        chunk: list[tuple[Any, ...]] = []
        for row in rows.iterator(chunk_size=1000):
            chunk.append(row)
            if len(chunk) == 1000:
                count += _requeue(chunk, using)
                chunk = []
        if chunk:
            count += _requeue(chunk, using)
    return count


def push_again(documents: QuerySet[KnowledgeDocument] | Iterable[KnowledgeDocument]) -> int:
    """Reset attempts and errors and push these documents again (the admin's "push again").

    Accepts a queryset or model instances; see :func:`push_queryset`.
    """
    if isinstance(documents, QuerySet):
        return push_queryset(documents)
    pks = [d.pk for d in documents if d.pk is not None]
    if not pks:
        return 0
    return push_queryset(KnowledgeDocument.objects.filter(pk__in=pks))


def _requeue(rows: list[tuple[Any, ...]], using: str) -> int:
    slugs = dict(
        KnowledgeBase.objects.using(using)
        .filter(pk__in={r[1] for r in rows})
        .values_list("pk", "slug")
    )
    tombstones = []
    for _pk, kb_id, remote_id, state, attempts, file_name, file_size in rows:
        if remote_id is not None:
            tombstones.append(
                Tombstone(
                    remote_id, kb_id, slugs.get(kb_id, ""), file_name, file_size, "pushed_again"
                )
            )
        elif may_have_unrecorded_copy(state, attempts):
            # An earlier upload may have created a copy nobody recorded: reconcile deletes it.
            tombstones.append(
                Tombstone(
                    None, kb_id, slugs.get(kb_id, ""), file_name, file_size, "unknown_outcome"
                )
            )
    write_tombstones(tombstones, using=using)
    count = (
        KnowledgeDocument.objects.using(using)
        .filter(pk__in=[r[0] for r in rows])
        .update(
            **transitions.queue_for_push(timezone.now()),
            # A push of the previous version that lands later is discarded, not stored.
            file_version=F("file_version") + 1,
        )
    )
    enqueue_push_for({r[1] for r in rows}, using=using)
    return count


# -- deleting --------------------------------------------------------------------------------


def delete_remote(
    remote_ids: Iterable[UUID | str], *, knowledge_base: KnowledgeBase | None = None
) -> int:
    """Delete remote documents by id: tombstones now, the ``DELETE`` calls after commit.

    The public path for rows removed without signals (raw SQL, ``_raw_delete``) or for remote
    documents you know about otherwise. Ids already tombstoned are skipped. Returns how many
    tombstones were written.
    """
    ids = {UUID(str(i)) for i in remote_ids}
    if not ids:
        return 0
    using = DEFAULT_DB_ALIAS
    with transaction.atomic(using=using):
        existing = set(
            RemoteDeletion.objects.using(using)
            .filter(remote_id__in=list(ids))
            .values_list("remote_id", flat=True)
        )
        new = sorted(ids - existing, key=str)
        write_tombstones(
            [
                Tombstone(
                    i,
                    knowledge_base.pk if knowledge_base else None,
                    knowledge_base.slug if knowledge_base else "",
                    reason="delete_remote",
                )
                for i in new
            ],
            using=using,
        )
    return len(new)


# -- the whole run ---------------------------------------------------------------------------


@dataclass
class SyncSummary:
    """What :func:`run_sync` did, and what is left failing (the command's exit status)."""

    dry_run: bool = False
    leases_expired: int = 0
    push: PushReport = field(default_factory=PushReport)
    drain: DrainReport = field(default_factory=DrainReport)
    reconcile: ReconcileReport = field(default_factory=ReconcileReport)
    #: In a dry run: what would be pushed and deleted.
    due: int = 0
    tombstones_due: int = 0
    #: With ``retry_now``: documents and tombstones whose backoff was cut short.
    retried_documents: int = 0
    retried_tombstones: int = 0
    #: Left after the run: documents failed, in review or waiting for a retry, and
    #: tombstones whose last delete failed.
    failed: int = 0
    needs_review: int = 0
    retrying: int = 0
    tombstones_failing: int = 0
    #: Knowledge bases PromptJuggler refuses as a whole, slug → reason (their documents wait).
    blocked: dict[str, str] = field(default_factory=dict)
    #: Why nothing could be sent at all (no API key), naming the setting; empty when configured.
    not_configured: str = ""

    @property
    def failing(self) -> int:
        """How much work needs a person; non-zero makes the command exit with status 1.

        Documents ``failed`` or in review count, and so does each blocked knowledge base (a key
        or a slug to fix) and a missing API key. Work that retries by itself (documents
        ``retrying``, remote deletions waiting for their backoff, a ``GET`` that failed and is
        made again by the next run) does not: it is reported, and the next run or task does it.
        """
        return self.failed + self.needs_review + len(self.blocked) + bool(self.not_configured)

    def lines(self) -> list[str]:
        """A human summary, one line per topic."""
        p, d, r = self.push, self.drain, self.reconcile
        if self.dry_run:
            head = [
                f"Dry run: {self.due} document(s) due to push, "
                f"{self.tombstones_due} remote deletion(s) due."
            ]
        else:
            head = []
            if self.retried_documents or self.retried_tombstones:
                head.append(
                    f"Retrying now: {self.retried_documents} document(s), "
                    f"{self.retried_tombstones} remote deletion(s)."
                )
            head += [
                f"Pushed {p.attempted} document(s) in {p.requests} request(s): {p.synced} synced "
                f"({p.adopted} adopted), {p.retrying} retrying, {p.failed} failed, "
                f"{p.needs_review} need review.",
                f"Remote deletions: {d.deleted} deleted, {d.already_gone} already gone, "
                f"{d.failed} failed.",
            ]
        verb = "would be" if self.dry_run else "were"
        body = [
            f"Knowledge bases checked: {r.knowledge_bases}; {r.status_changes} status "
            f"change(s); {r.adopted} adopted, {r.requeued} pushed again after review, "
            f"{r.missing} missing remotely {verb} pushed again, {r.failed} gave up.",
            f"Orphans (remote documents no row knows): {len(r.orphans)}"
            + (f", {r.orphans_deleted} {verb} deleted." if r.orphans_deleted else "."),
        ]
        body += [f"  orphan {slug}: {doc.file_name} ({doc.id})" for slug, doc in r.orphans[:50]]
        body.append(
            f"Unknown upload outcomes: {r.unknown_outcomes_deleted} remote copies found and "
            f"{'to be deleted' if self.dry_run else 'deleted'}, "
            f"{r.unknown_outcomes_cleared} left no copy."
        )
        body += [f"Error: {e}" for e in (r.errors + p.errors + d.errors)[:20]]
        body += [
            f"Blocked: {slug}: {reason} Its documents wait; they go as soon as PromptJuggler "
            "accepts the knowledge base (tried on a backoff and by every run)."
            for slug, reason in self.blocked.items()
        ]
        if self.not_configured:
            body.append(
                f"Not configured: {self.not_configured} Nothing was sent and PromptJuggler was "
                "not read; the waiting work goes once the setting is fixed."
            )
        tail = [
            f"Left failing: {self.failed} failed, {self.needs_review} need review, "
            f"{len(self.blocked)} knowledge base(s) blocked. "
            f"Retrying by themselves: {self.retrying} retrying, "
            f"{self.tombstones_failing} deletion(s) waiting."
        ]
        return head + body + tail


def run_sync(
    *,
    dry_run: bool = False,
    knowledge_base: KnowledgeBase | str | None = None,
    delete_orphans: bool = False,
    retry_now: bool = False,
    progress: Progress | None = None,
) -> SyncSummary:
    """Finish all outstanding work; what ``manage.py promptjuggler_sync`` runs.

    In order: expire stale upload leases, delete tombstoned remote documents, push due
    documents, then one ``GET`` per knowledge base to refresh statuses and reconcile; work the
    reconcile created (documents to push again, copies to delete) is done in the same run.
    Safe alongside workers: rows they hold are skipped (row locks, leases). A dry run reads
    (one ``GET`` per knowledge base) and writes nothing.

    ``retry_now`` cuts short the backoff of documents ``retrying`` and of remote deletions
    waiting after a failed attempt, so a run after an outage catches up at once.

    Without an API key nothing remote happens and nothing raises: documents are held (their
    knowledge bases blocked), tombstones stay untouched, and ``not_configured`` names the
    setting to fix.
    """
    kb = _resolve_knowledge_base(knowledge_base)
    kb_ids = None if kb is None else [kb.pk]
    summary = SyncSummary(dry_run=dry_run)
    try:
        client: PromptJugglerClient | None = PromptJugglerClient.from_settings()
    except ImproperlyConfigured as exc:  # no API key: report it, change nothing remote
        client, summary.not_configured = None, str(exc)
    with client if client is not None else nullcontext():
        if dry_run:
            later = timezone.now() + timedelta(days=36500) if retry_now else None
            summary.due = _documents(kb).due(later).count()
            summary.tombstones_due = _tombstones_in(kb, due_only=not retry_now).count()
            if client is not None:
                summary.reconcile = reconcile(
                    knowledge_base=kb, delete_orphans=delete_orphans, dry_run=True, client=client
                )
        else:
            if retry_now:
                summary.retried_documents, summary.retried_tombstones = _retry_now(kb)
            _try_blocked_now(kb)
            summary.leases_expired = expire_leases(knowledge_base_ids=kb_ids)
            summary.drain = drain_tombstones(knowledge_base=kb, client=client, progress=progress)
            push_progress = progress
            if progress is not None:
                total = _documents(kb).due().count()
                push_progress = lambda step, done, _total: progress(step, done, total)  # noqa: E731
            summary.push = push_due(
                knowledge_base_ids=kb_ids, client=client, progress=push_progress
            )
            if client is not None:  # without a key the documents were held: nothing to read
                summary.reconcile = reconcile(
                    knowledge_base=kb,
                    delete_orphans=delete_orphans,
                    client=client,
                    enqueue=False,
                    progress=progress,
                )
                if summary.reconcile.pushed_again:
                    summary.push.merge(push_due(knowledge_base_ids=kb_ids, client=client))
                summary.drain.merge(drain_tombstones(knowledge_base=kb, client=client))
            _process_pending_webhooks()
    docs = _documents(kb)
    summary.failed = docs.filter(sync_state=SyncState.FAILED).count()
    summary.needs_review = docs.filter(sync_state=SyncState.NEEDS_REVIEW).count()
    summary.retrying = docs.filter(sync_state=SyncState.RETRYING).count()
    summary.tombstones_failing = _tombstones_in(kb, due_only=False).exclude(last_error="").count()
    blocked = KnowledgeBase.objects.exclude(blocked_reason="").order_by("slug")
    if kb is not None:
        blocked = blocked.filter(pk=kb.pk)
    summary.blocked = dict(blocked.values_list("slug", "blocked_reason"))
    return summary


def _try_blocked_now(kb: KnowledgeBase | None) -> int:
    """Every run tries blocked knowledge bases at once: the fix (a new key) may be live."""
    now = timezone.now()
    blocked = KnowledgeBase.objects.exclude(blocked_reason="")
    if kb is not None:
        blocked = blocked.filter(pk=kb.pk)
    docs = KnowledgeDocument.objects.filter(
        knowledge_base__in=blocked, sync_state=SyncState.QUEUED, next_attempt_at__gt=now
    )
    return docs.update(**transitions.requeue(now))


def _retry_now(kb: KnowledgeBase | None) -> tuple[int, int]:
    """Make waiting retries due now: (documents, tombstones). Attempts still count."""
    now = timezone.now()
    docs = _documents(kb).filter(sync_state=SyncState.RETRYING, next_attempt_at__gt=now)
    documents = docs.update(next_attempt_at=now, updated_at=now)
    # Only tombstones waiting after a failed attempt: one without an error is being drained.
    waiting = _tombstones_in(kb, due_only=False).exclude(last_error="")
    waiting = waiting.filter(next_attempt_at__gt=now)
    return documents, waiting.update(next_attempt_at=now)


def _resolve_knowledge_base(value: KnowledgeBase | str | None) -> KnowledgeBase | None:
    if value is None or isinstance(value, KnowledgeBase):
        return value
    return KnowledgeBase.objects.get(slug=value)


def _documents(kb: KnowledgeBase | None) -> KnowledgeDocumentQuerySet:
    qs: KnowledgeDocumentQuerySet = KnowledgeDocument.objects.all()
    return qs if kb is None else qs.filter(knowledge_base=kb)


def _tombstones_in(kb: KnowledgeBase | None, *, due_only: bool = True) -> QuerySet[RemoteDeletion]:
    qs = RemoteDeletion.objects.filter(remote_id__isnull=False)
    if due_only:
        now = timezone.now()
        qs = qs.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    if kb is not None:
        qs = qs.filter(
            Q(knowledge_base=kb) | Q(knowledge_base__isnull=True, knowledge_base_slug=kb.slug)
        )
    return qs


def _process_pending_webhooks() -> None:
    """Apply deferred webhook deliveries whose task was lost (the webhook log's own outbox)."""
    process_pending_deliveries()
