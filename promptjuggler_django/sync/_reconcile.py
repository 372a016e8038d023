"""Refresh and reconcile: compare each knowledge base's remote document list with the rows.

``GET /knowledge-bases/<slug>`` lists every document of a knowledge base (not paginated), which
makes it the one call that answers all of these at once:

- the knowledge base's id, status and counts (webhooks carry only the id);
- the status of documents still processing, when a webhook never came (polling fallback);
- documents PromptJuggler no longer has (deleted there): pushed again;
- documents whose upload had an unknown outcome (``needs_review``): the remote document with the
  same ``fileName`` and size that no row knows is adopted, or the file is pushed again;
- tombstones without a remote id (a row deleted while its upload outcome was unknown): the
  matching unknown document is deleted;
- documents no row knows at all (orphans): reported, and deleted with ``delete_orphans``.

A remote document whose ``fileName`` is being uploaded right now is never treated as unknown:
the upload answer naming it may simply not be stored yet.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import Q
from django.utils import timezone

from .. import signals, transitions
from .. import status as status_rules
from ..apply import replay_early_webhooks
from ..client import PromptJugglerClient, PromptJugglerError, RemoteDocument, RemoteKnowledgeBase
from ..conf import pj_settings
from ..models import KnowledgeBase, KnowledgeDocument, RemoteDeletion, SyncState
from ._listing import Listing
from ._outbox import Tombstone, drain_after_commit, enqueue_push_for, write_tombstones
from ._outcomes import (
    KNOWLEDGE_BASE_REFUSALS,
    Progress,
    block_knowledge_base,
    run_after_commit,
    unblock_knowledge_base,
)

logger = logging.getLogger("promptjuggler_django.sync")


@dataclass
class RefreshReport:
    """What one ``GET`` of a knowledge base taught us."""

    knowledge_base: KnowledgeBase
    #: When the GET started: rows pushed after it cannot be judged by its answer.
    fetched_at: datetime
    #: The knowledge base as listed; its ``documents`` are not kept (the listing is compared
    #: in chunks as it is read back from disk, so memory does not grow with it).
    remote: RemoteKnowledgeBase | None = None
    #: Why the GET failed (then nothing else was done).
    error: str = ""
    #: Documents whose remote status moved forward (or would, in a dry run).
    status_changes: int = 0
    #: Pks of synced rows whose remote document is not listed any more.
    missing: list[int] = field(default_factory=list)
    #: Listed documents that no row, tombstone or in-flight upload accounts for.
    orphans: list[RemoteDocument] = field(default_factory=list)


@dataclass
class ReconcileReport:
    """What :func:`reconcile` found and did (or would do, in a dry run)."""

    knowledge_bases: int = 0
    status_changes: int = 0
    #: needs_review rows matched to the remote document their upload created.
    adopted: int = 0
    #: needs_review rows with no remote copy: queued to be pushed again.
    requeued: int = 0
    #: Synced rows PromptJuggler no longer has: queued to be pushed again.
    missing: int = 0
    #: Rows that reached ``PUSH_MAX_ATTEMPTS`` while in review: failed.
    failed: int = 0
    #: Remote copies of deleted rows whose upload outcome was unknown, now tombstoned.
    unknown_outcomes_deleted: int = 0
    #: Tombstones of unknown outcomes that matched no remote copy (nothing had landed): dropped.
    unknown_outcomes_cleared: int = 0
    #: Orphans found, as (knowledge-base slug, document); deleted if ``delete_orphans``.
    orphans: list[tuple[str, RemoteDocument]] = field(default_factory=list)
    orphans_deleted: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def pushed_again(self) -> int:
        return self.requeued + self.missing


# -- helpers shared with the push ------------------------------------------------------------


def learn_knowledge_base(
    kb: KnowledgeBase,
    remote: RemoteKnowledgeBase,
    observed_at: datetime,
    *,
    using: str | None = None,
) -> None:
    """Store the knowledge base's remote id, then its status and counts (forward in time only)."""
    using = using or DEFAULT_DB_ALIAS
    manager = KnowledgeBase.objects.using(using)
    if kb.remote_id != remote.id:
        if manager.filter(remote_id=remote.id).exclude(pk=kb.pk).exists():
            logger.warning(
                "Knowledge base %r answers with id %s, already stored on another row; "
                "two local rows name the same PromptJuggler knowledge base.",
                kb.slug,
                remote.id,
            )
            return
        kb.remote_id = remote.id
    kb.last_synced_at = observed_at
    manager.filter(pk=kb.pk).update(remote_id=kb.remote_id, last_synced_at=observed_at)
    status_rules.apply_knowledge_base_status(
        remote_id=remote.id,
        status=remote.status,
        document_count=remote.document_count,
        chunk_count=remote.chunk_count,
        observed_at=observed_at,
    )


def _fits(row: Any, doc: RemoteDocument) -> bool:
    if row.file_name != doc.file_name:
        return False
    return row.file_size is None or doc.bytes is None or row.file_size == doc.bytes


def pair_by_name_and_size(
    rows: Sequence[Any], docs: Sequence[RemoteDocument]
) -> list[tuple[Any, RemoteDocument]]:
    """Pair rows with documents of the same ``fileName`` and size, each used once, in order."""
    free = list(docs)
    pairs = []
    for row in rows:
        doc = next((d for d in free if _fits(row, d)), None)
        if doc is not None:
            free.remove(doc)
            pairs.append((row, doc))
    return pairs


def _unknown(docs: Sequence[RemoteDocument], using: str) -> list[RemoteDocument]:
    """The documents no row and no tombstone knows (two queries at most)."""
    if not docs:
        return []
    ids = [d.id for d in docs]
    known: set[UUID | None] = set(
        KnowledgeDocument.objects.using(using)
        .filter(remote_id__in=ids)
        .values_list("remote_id", flat=True)
    )
    known.update(
        RemoteDeletion.objects.using(using)
        .filter(remote_id__in=ids)
        .values_list("remote_id", flat=True)
    )
    return [d for d in docs if d.id not in known]


def _names_in_flight(kb_id: int | None, using: str, exclude_pks: Iterable[int] = ()) -> set[str]:
    if kb_id is None:
        return set()
    return set(
        KnowledgeDocument.objects.using(using)
        .filter(knowledge_base_id=kb_id, sync_state=SyncState.UPLOADING)
        .exclude(pk__in=list(exclude_pks))
        .values_list("file_name", flat=True)
    )


def match_unknown_documents(
    kb: KnowledgeBase,
    rows: Sequence[KnowledgeDocument],
    remote_docs: Sequence[RemoteDocument],
    *,
    using: str | None = None,
    busy_pks: Iterable[int] = (),
) -> list[tuple[KnowledgeDocument, RemoteDocument]]:
    """Remote documents an earlier upload of ``rows`` created, found by ``fileName`` and size.

    Only documents no row or tombstone knows qualify, and none whose name another worker is
    uploading right now (``busy_pks`` are the caller's own rows).
    """
    using = using or DEFAULT_DB_ALIAS
    names = {row.file_name for row in rows}
    candidates = [d for d in remote_docs if d.file_name in names]
    if not candidates:
        return []
    busy = _names_in_flight(kb.pk, using, busy_pks)
    free = [d for d in _unknown(candidates, using) if d.file_name not in busy]
    return pair_by_name_and_size(sorted(rows, key=lambda r: r.pk), free)


# -- refresh ---------------------------------------------------------------------------------


def refresh_knowledge_base(
    kb: KnowledgeBase,
    *,
    client: PromptJugglerClient | None = None,
    dry_run: bool = False,
    using: str | None = None,
) -> RefreshReport:
    """One ``GET``: learn the knowledge base, move in-flight statuses forward, find gaps.

    Statuses go through :func:`promptjuggler_django.status.apply_document_status`, the same
    forward-only rules as webhooks. Missing documents and orphans are only reported here;
    :func:`reconcile` acts on them.
    """
    using = using or DEFAULT_DB_ALIAS
    report = RefreshReport(kb, timezone.now())
    with _client(client) as api, Listing() as listed:
        try:
            remote = api.list_knowledge_base(kb.slug, listed)
        except PromptJugglerError as exc:
            report.error = str(exc)
            if not dry_run and getattr(exc, "status_code", None) in KNOWLEDGE_BASE_REFUSALS:
                reason = f"PromptJuggler refuses the knowledge base {kb.slug!r}: {exc}"
                with transaction.atomic(using=using):
                    block_knowledge_base(kb, reason, report.fetched_at, using)
            return report
        report.remote = remote
        if not dry_run:
            learn_knowledge_base(kb, remote, report.fetched_at, using=using)
            if kb.is_blocked:  # the key and the slug work again: its documents go now
                with transaction.atomic(using=using):
                    unblock_knowledge_base(kb, timezone.now(), using)
        _compare_rows(kb, listed, report, dry_run, using)
        busy = _names_in_flight(kb.pk, using)
        for chunk in listed.chunks():
            report.orphans.extend(d for d in _unknown(chunk, using) if d.file_name not in busy)
    return report


def _compare_rows(
    kb: KnowledgeBase, listed: Listing, report: RefreshReport, dry_run: bool, using: str
) -> None:
    """The rows that have a remote id, a chunk at a time against the listing: statuses that
    moved forward (applied, or counted in a dry run) and synced rows no longer listed."""
    rows = (
        KnowledgeDocument.objects.using(using)
        .filter(knowledge_base=kb, remote_id__isnull=False)
        .order_by("pk")
        .values_list("pk", "remote_id", "sync_state", "remote_status", "pushed_at")
    )
    last = 0
    while chunk := list(rows.filter(pk__gt=last)[:STATUS_CHUNK]):
        last = chunk[-1][0]
        docs = listed.by_id(remote_id for _, remote_id, *_ in chunk)
        polled: list[RemoteDocument] = []
        for pk, remote_id, sync_state, remote_status, pushed_at in chunk:
            doc = docs.get(remote_id) if remote_id is not None else None
            if doc is None:
                # A row stored after the GET started may be missing from its answer: not a gap.
                if sync_state == SyncState.SYNCED and (
                    pushed_at is None or pushed_at < report.fetched_at
                ):
                    report.missing.append(pk)
            elif sync_state == SyncState.SYNCED and doc.status and doc.status != remote_status:
                if dry_run:
                    report.status_changes += _apply_status(
                        doc, report.fetched_at, True, remote_status
                    )
                else:
                    polled.append(doc)
        report.status_changes += _apply_statuses(polled, report.fetched_at, using)


def _apply_status(doc: RemoteDocument, observed_at: datetime, dry_run: bool, current: str) -> int:
    if dry_run:
        return int(status_rules.rank(doc.status) > status_rules.rank(current))
    outcome = status_rules.apply_document_status(
        remote_id=doc.id, status=doc.status, chunk_count=doc.chunk_count, observed_at=observed_at
    )
    return int(outcome == status_rules.APPLIED)


#: Polled statuses applied per transaction: one locked read and one bulk update each.
STATUS_CHUNK = 1000

#: The columns the forward-only rules read (the whole row goes to signal receivers).
_STATUS_FIELDS = ("remote_id", "remote_status", "chunk_count", "status_changed_at")


def _apply_statuses(docs: Sequence[RemoteDocument], observed_at: datetime, using: str) -> int:
    """Apply polled statuses in bulk; how many moved forward.

    The rules of one webhook (:func:`promptjuggler_django.status.document_change` and
    :func:`~promptjuggler_django.transitions.apply_remote_status`), :data:`STATUS_CHUNK` rows
    per transaction: one locked read of the chunk's rows (in pk order) and one bulk update, a
    constant number of statements per 1,000 documents instead of two per document.
    ``document_status_changed`` is sent after commit for each row whose status changed.
    """
    signal = signals.document_status_changed
    manager = KnowledgeDocument.objects.using(using)
    applied = 0
    for start in range(0, len(docs), STATUS_CHUNK):
        chunk = {d.id: d for d in docs[start : start + STATUS_CHUNK]}
        with transaction.atomic(using=using):
            rows = manager.select_for_update().filter(remote_id__in=list(chunk)).order_by("pk")
            if not signal.has_listeners(KnowledgeDocument):
                rows = rows.only(*_STATUS_FIELDS)
            moved = []
            for row in rows:
                doc = chunk[row.remote_id]  # type: ignore[index]
                if not status_rules.document_change(row, doc.status, observed_at):
                    continue
                old_status = row.remote_status
                change = transitions.apply_remote_status(
                    row, doc.status, doc.chunk_count, observed_at
                )
                transitions.assign(row, change)
                moved.append((row, change))
                if old_status != doc.status:
                    signals.send_on_commit(
                        signal,
                        KnowledgeDocument,
                        using=using,
                        document=row,
                        old_status=old_status,
                        new_status=doc.status,
                        delivery=None,
                    )
            _store_statuses(manager, moved)
        applied += len(moved)
    return applied


def _store_statuses(manager: Any, moved: list[tuple[KnowledgeDocument, Any]]) -> None:
    """One ``UPDATE … WHERE pk IN`` per distinct change (a poll's statuses share a handful);
    a single ``bulk_update`` when they are too varied for that."""
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for row, change in moved:
        groups[tuple(sorted(change.items()))].append(row.pk)
    if len(groups) > _MAX_STATUS_GROUPS:
        manager.bulk_update([row for row, _ in moved], list(moved[0][1]))
        return
    for change, pks in groups.items():
        manager.filter(pk__in=pks).update(**dict(change))


#: More distinct new values than this in a chunk: one bulk update (CASE per row) instead.
_MAX_STATUS_GROUPS = 10


def refresh_documents(
    documents: Iterable[KnowledgeDocument], *, client: PromptJugglerClient | None = None
) -> int:
    """Refresh the remote status of these documents: one ``GET`` per knowledge base.

    Returns how many statuses moved forward. Documents not pushed yet are skipped.
    """
    by_kb: dict[int, list[KnowledgeDocument]] = defaultdict(list)
    for document in documents:
        if document.remote_id is not None:
            by_kb[document.knowledge_base_id].append(document)
    changed = 0
    if not by_kb:
        return 0
    with _client(client) as api:
        for kb in KnowledgeBase.objects.filter(pk__in=list(by_kb)):
            fetched_at = timezone.now()
            with Listing() as listing:
                try:
                    remote = api.list_knowledge_base(kb.slug, listing)
                except PromptJugglerError as exc:
                    logger.warning("Could not refresh knowledge base %r: %s", kb.slug, exc)
                    continue
                listed = listing.by_id(d.remote_id for d in by_kb[kb.pk])
            learn_knowledge_base(kb, remote, fetched_at)
            for document in by_kb[kb.pk]:
                doc = listed.get(document.remote_id)  # type: ignore[arg-type]
                if doc is not None and doc.status and doc.status != document.remote_status:
                    changed += _apply_status(doc, fetched_at, False, document.remote_status)
    return changed


# -- reconcile -------------------------------------------------------------------------------


def reconcile(
    *,
    knowledge_base: KnowledgeBase | None = None,
    delete_orphans: bool = False,
    dry_run: bool = False,
    client: PromptJugglerClient | None = None,
    enqueue: bool = True,
    using: str | None = None,
    progress: Progress | None = None,
) -> ReconcileReport:
    """Bring rows and remote documents into agreement, one ``GET`` per knowledge base.

    ``enqueue=False`` queues documents to push again without enqueueing a task (the caller
    pushes them itself, as ``promptjuggler_sync`` does).
    """
    using = using or DEFAULT_DB_ALIAS
    report = ReconcileReport()
    if knowledge_base is not None:
        kbs = [knowledge_base]
    else:
        kbs = list(KnowledgeBase.objects.using(using).order_by("slug"))
    with _client(client) as api:
        for i, kb in enumerate(kbs):
            refresh = refresh_knowledge_base(kb, client=api, dry_run=dry_run, using=using)
            report.knowledge_bases += 1
            if refresh.error:
                report.errors.append(f"{kb.slug}: {refresh.error}")
            else:
                report.status_changes += refresh.status_changes
                _reconcile_one(
                    kb, kb.slug, refresh, report, delete_orphans, dry_run, enqueue, using
                )
            if progress is not None:
                progress("reconcile", i + 1, len(kbs))
        if knowledge_base is None:
            _resolve_detached_markers(api, report, dry_run, using)
    return report


def _markers(kb: KnowledgeBase | None, slug: str, using: str) -> list[RemoteDeletion]:
    qs = RemoteDeletion.objects.using(using).filter(remote_id__isnull=True)
    if kb is not None:
        qs = qs.filter(
            Q(knowledge_base=kb) | Q(knowledge_base__isnull=True, knowledge_base_slug=slug)
        )
    else:
        qs = qs.filter(knowledge_base__isnull=True, knowledge_base_slug=slug)
    return list(qs.order_by("pk"))


def _reconcile_one(
    kb: KnowledgeBase,
    slug: str,
    refresh: RefreshReport,
    report: ReconcileReport,
    delete_orphans: bool,
    dry_run: bool,
    enqueue: bool,
    using: str,
) -> None:
    orphans = list(refresh.orphans)
    in_review = list(
        KnowledgeDocument.objects.using(using)
        .filter(knowledge_base=kb, sync_state=SyncState.NEEDS_REVIEW, remote_id__isnull=True)
        .only("pk", "file_name", "file_size", "attempts", "file_version")
        .order_by("pk")
    )
    adoptions = pair_by_name_and_size(in_review, orphans)
    for _, doc in adoptions:
        orphans.remove(doc)
    adopted_pks = {row.pk for row, _ in adoptions}
    unmatched = [row for row in in_review if row.pk not in adopted_pks]
    markers = _markers(kb, slug, using)
    marker_hits = pair_by_name_and_size(markers, orphans)
    for _, doc in marker_hits:
        orphans.remove(doc)
    hit_pks = {m.pk for m, _ in marker_hits}
    report.orphans.extend((slug, doc) for doc in orphans)
    max_attempts = pj_settings.PUSH_MAX_ATTEMPTS
    if dry_run:
        report.adopted += len(adoptions)
        report.failed += sum(1 for r in unmatched if r.attempts >= max_attempts)
        report.requeued += sum(1 for r in unmatched if r.attempts < max_attempts)
        report.missing += len(refresh.missing)
        report.unknown_outcomes_deleted += len(marker_hits)
        report.unknown_outcomes_cleared += len(markers) - len(marker_hits)
        report.orphans_deleted += len(orphans) if delete_orphans else 0
        return
    now = timezone.now()
    manager = KnowledgeDocument.objects.using(using)
    adopted_ids: list[UUID] = []
    queued = 0
    with transaction.atomic(using=using):
        for row, doc in adoptions:
            if manager.filter(
                pk=row.pk,
                sync_state=SyncState.NEEDS_REVIEW,
                remote_id__isnull=True,
                file_version=row.file_version,
            ).update(**transitions.mark_synced(doc, now)):
                adopted_ids.append(doc.id)
        report.adopted += len(adopted_ids)
        for row in unmatched:
            gave_up = row.attempts >= max_attempts
            change = (
                transitions.mark_failed(
                    f"Gave up after {row.attempts} attempts; no remote copy was found.", now
                )
                if gave_up
                else transitions.requeue(
                    now,
                    error="The upload's outcome was unknown and no remote copy was found; "
                    "pushed again.",
                )
            )
            n = manager.filter(pk=row.pk, sync_state=SyncState.NEEDS_REVIEW).update(**change)
            report.failed += n if gave_up else 0
            report.requeued += 0 if gave_up else n
            queued += 0 if gave_up else n
        if refresh.missing:
            n = manager.filter(pk__in=refresh.missing, sync_state=SyncState.SYNCED).update(
                **transitions.queue_for_push(
                    now, error="PromptJuggler no longer has this document; pushed again."
                )
            )
            report.missing += n
            queued += n
        _settle_markers(markers, marker_hits, hit_pks, report, using)
        if delete_orphans and orphans:
            write_tombstones(
                [Tombstone(d.id, kb.pk, slug, d.file_name, d.bytes, "orphan") for d in orphans],
                using=using,
            )
            report.orphans_deleted += len(orphans)
        if queued and enqueue:
            enqueue_push_for([kb.pk], using=using)
        if adopted_ids:
            run_after_commit(replay_early_webhooks, adopted_ids, using=using)


def _settle_markers(
    markers: list[RemoteDeletion],
    hits: list[tuple[RemoteDeletion, RemoteDocument]],
    hit_pks: set[int],
    report: ReconcileReport,
    using: str,
) -> None:
    """Point matched markers at their remote document; drop the others (nothing landed)."""
    manager = RemoteDeletion.objects.using(using)
    for marker, doc in hits:
        manager.filter(pk=marker.pk).update(remote_id=doc.id, next_attempt_at=None)
    if hits:
        drain_after_commit([doc.id for _, doc in hits], using=using)
        report.unknown_outcomes_deleted += len(hits)
    stale = [m.pk for m in markers if m.pk not in hit_pks]
    if stale:
        cleared, _ = manager.filter(pk__in=stale, remote_id__isnull=True).delete()
        report.unknown_outcomes_cleared += cleared


def _resolve_detached_markers(
    api: PromptJugglerClient, report: ReconcileReport, dry_run: bool, using: str
) -> None:
    """Markers whose local knowledge base was deleted: look them up by the slug they kept."""
    slugs = set(
        RemoteDeletion.objects.using(using)
        .filter(remote_id__isnull=True, knowledge_base__isnull=True)
        .exclude(knowledge_base_slug="")
        .values_list("knowledge_base_slug", flat=True)
    )
    slugs -= set(
        KnowledgeBase.objects.using(using).filter(slug__in=slugs).values_list("slug", flat=True)
    )
    for slug in sorted(slugs):
        markers = _markers(None, slug, using)
        with Listing() as listed:
            try:
                api.list_knowledge_base(slug, listed)
            except PromptJugglerError as exc:
                report.errors.append(f"{slug}: {exc}")
                continue
            candidates = listed.named(m.file_name for m in markers)
        hits = pair_by_name_and_size(markers, _unknown(candidates, using))
        if dry_run:
            report.unknown_outcomes_deleted += len(hits)
            report.unknown_outcomes_cleared += len(markers) - len(hits)
            continue
        with transaction.atomic(using=using):
            _settle_markers(markers, hits, {m.pk for m, _ in hits}, report, using)


class _client:
    """Use the given client, or open one from settings for the block and close it after."""

    def __init__(self, client: PromptJugglerClient | None) -> None:
        self._given = client
        self._own: PromptJugglerClient | None = None

    def __enter__(self) -> PromptJugglerClient:
        if self._given is not None:
            return self._given
        self._own = PromptJugglerClient.from_settings()
        return self._own

    def __exit__(self, *exc: object) -> None:
        if self._own is not None:
            self._own.close()
