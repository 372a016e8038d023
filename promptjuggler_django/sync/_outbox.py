"""The outbox: recording remote work in the database and triggering it after commit.

Every remote side effect is first a row (a queued document, a tombstone) written in the same
transaction as the change that caused it. Tasks are only a fast trigger for that work, so they
are enqueued with ``transaction.on_commit``: a rolled-back transaction enqueues nothing, and
2,000 documents saved in one transaction enqueue one push per knowledge base, not 2,000.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.db import DEFAULT_DB_ALIAS, connections, router, transaction
from django.utils import timezone

from ..conf import pj_settings
from ..models import KnowledgeBase, KnowledgeDocument, RemoteDeletion
from ..taskqueue import enqueue, enqueue_at

logger = logging.getLogger("promptjuggler_django.sync")

# -- suppressing automatic sync --------------------------------------------------------------

_suppressed: ContextVar[bool] = ContextVar("promptjuggler_sync_suppressed", default=False)


@contextmanager
def suppress_sync() -> Iterator[None]:
    """Skip the app's save/delete receivers inside the block (this thread or task only).

    A context variable rather than disconnected receivers: other threads and concurrent async
    tasks keep syncing. Rows saved inside keep the state they are given (a new document is
    ``queued`` by default and the next ``promptjuggler_sync`` or :func:`push_queryset` pushes
    it); rows deleted inside leave no tombstone, so their remote copies stay.
    """
    token = _suppressed.set(True)
    try:
        yield
    finally:
        _suppressed.reset(token)


def sync_suppressed() -> bool:
    """True inside :func:`suppress_sync`."""
    return _suppressed.get()


# -- triggers --------------------------------------------------------------------------------


@dataclass
class Triggers:
    """The tasks the engine enqueues, handed over by :mod:`promptjuggler_django.sync.tasks`.

    The tasks run the engine, so the engine cannot import them without a cycle; the tasks
    module fills this in when it is imported (``promptjuggler_django.sync`` always imports it).
    A trigger still missing enqueues nothing: the rows wait for ``promptjuggler_sync``, as they
    would with the task backend down.
    """

    #: Task taking a knowledge base id: push its due documents.
    push_knowledge_base: Any = None
    #: Task taking a list of tombstone ids: delete those remote documents.
    delete_remote: Any = None
    #: Task taking a knowledge base id: reconcile it (resolves unknown-outcome tombstones).
    reconcile_knowledge_base: Any = None


TRIGGERS = Triggers()


def _trigger(task_obj: Any, *args: Any) -> None:
    if task_obj is None:
        logger.warning("The sync tasks are not loaded; promptjuggler_sync will pick the work up.")
        return
    enqueue(task_obj, *args)


# -- enqueue once per transaction ------------------------------------------------------------


@dataclass(eq=False)
class _Pending:
    """Work to enqueue at one commit."""

    knowledge_base_ids: set[int] = field(default_factory=set)
    tombstone_remote_ids: set[UUID] = field(default_factory=set)
    #: Knowledge bases with a new unknown-outcome tombstone: reconcile them after the lease.
    reconcile_ids: set[int] = field(default_factory=set)


class _Hook:
    """The on_commit hook of one :func:`_collect` call: the work that call added."""

    __slots__ = ("__weakref__", "commit", "work")

    def __init__(self, commit: _Commit, work: _Pending) -> None:
        self.commit, self.work = commit, work

    def __call__(self) -> None:
        self.commit.run()


class _Commit:
    """The hooks one transaction registered; the first to run enqueues for all of them.

    It holds its hooks weakly: Django drops the hooks of a rolled-back savepoint, or of a whole
    transaction, from its list, and a dropped hook is gone from here with its work. So the
    commit enqueues exactly the work that survived, once, and a transaction that rolled back
    leaves nothing behind. (Where objects are not freed at once, outside CPython, dropped
    work may ride along with the next commit: harmless, since every task re-reads the rows.)
    """

    def __init__(self, using: str) -> None:
        self.using = using
        self.hooks: weakref.WeakSet[_Hook] = weakref.WeakSet()
        self.done = False

    @property
    def current(self) -> bool:
        """Still collecting: not enqueued yet, and not dropped by a rollback."""
        return not self.done and len(self.hooks) > 0

    def add(self, work: _Pending) -> _Hook:
        hook = _Hook(self, work)
        self.hooks.add(hook)
        return hook

    def run(self) -> None:
        if self.done:
            return
        self.done = True
        work = _Pending()
        for hook in list(self.hooks):
            work.knowledge_base_ids |= hook.work.knowledge_base_ids
            work.tombstone_remote_ids |= hook.work.tombstone_remote_ids
            work.reconcile_ids |= hook.work.reconcile_ids
        try:
            _flush(work, self.using)
        except Exception:
            # Logged here: Django names a failing robust hook by its __qualname__, which an
            # instance lacks (the logging itself would raise after the commit).
            logger.exception("Enqueueing PromptJuggler work after commit failed.")


# Keyed by the connection object (connections are per thread), so threads never share one.
_commits: weakref.WeakKeyDictionary[Any, _Commit] = weakref.WeakKeyDictionary()


def _collect(
    using: str,
    kb_ids: Iterable[int] = (),
    remote_ids: Iterable[UUID] = (),
    reconcile_ids: Iterable[int] = (),
) -> None:
    """Enqueue this work once the current transaction commits, once per transaction.

    Each call registers its own small on_commit hook, so Django's own rules decide what
    survives: a rolled-back savepoint discards its hooks, a rolled-back transaction all of
    them, and ``captureOnCommitCallbacks`` runs only the hooks registered inside it. The
    first surviving hook to run enqueues the work of all of them (:class:`_Commit`), so a
    transaction saving 2,000 documents enqueues one push per knowledge base and one delete
    task per 200 tombstones.
    """
    work = _Pending(set(kb_ids), set(remote_ids), set(reconcile_ids))
    connection = connections[using]
    if not connection.in_atomic_block:  # autocommit: on_commit would run at once anyway
        _flush(work, using)
        return
    commit = _commits.get(connection)
    if commit is None or not commit.current:
        commit = _commits[connection] = _Commit(using)
    transaction.on_commit(commit.add(work), using=using, robust=True)


#: Tombstone ids per delete task (a task argument list stays small).
_TOMBSTONES_PER_TASK = 200


def _flush(entry: _Pending, using: str) -> None:
    if not pj_settings.SYNC_ENABLED:
        return  # the rows stay queued; promptjuggler_sync does the work
    for kb_id in sorted(entry.knowledge_base_ids):
        _trigger(TRIGGERS.push_knowledge_base, kb_id)
    if entry.tombstone_remote_ids:
        ids = list(
            RemoteDeletion.objects.using(using)
            .filter(remote_id__in=list(entry.tombstone_remote_ids))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        for start in range(0, len(ids), _TOMBSTONES_PER_TASK):
            _trigger(TRIGGERS.delete_remote, ids[start : start + _TOMBSTONES_PER_TASK])
    if entry.reconcile_ids and TRIGGERS.reconcile_knowledge_base is not None:
        # An upload of that row may still be in flight: once its lease has ended it stored
        # its answer (and deleted its own fresh copy) or it never will; then reconcile looks.
        when = timezone.now() + timedelta(seconds=pj_settings.LEASE)
        for kb_id in sorted(entry.reconcile_ids):
            enqueue_at(TRIGGERS.reconcile_knowledge_base, when, kb_id)


def _db_alias(using: str | None) -> str:
    return using or router.db_for_write(RemoteDeletion) or DEFAULT_DB_ALIAS


def enqueue_push_for(knowledge_base_ids: Iterable[int], *, using: str | None = None) -> None:
    """Push the due documents of these knowledge bases once the current transaction commits.

    Called any number of times in one transaction, it enqueues one push task per knowledge
    base at commit (nothing on rollback). Outside a transaction it enqueues at once.
    """
    _collect(_db_alias(using), kb_ids=knowledge_base_ids)


def schedule_retry(knowledge_base_id: int, when: datetime) -> bool:
    """Ask the task backend to push this knowledge base again at ``when``, if it can defer.

    Backends without deferral (the immediate one, some queues) return False: the documents
    wait in ``retrying`` for the next ``promptjuggler_sync`` or push.
    """
    if not pj_settings.SYNC_ENABLED or TRIGGERS.push_knowledge_base is None:
        return False
    return enqueue_at(TRIGGERS.push_knowledge_base, when, knowledge_base_id)


def schedule_drain(waiting: Iterable[tuple[int, datetime]]) -> int:
    """Ask the task backend to delete tombstoned documents again once their backoff ends.

    ``waiting`` holds ``(tombstone id, next attempt time)`` pairs. The delete task's
    counterpart of :func:`schedule_retry`: one task per chunk of tombstones, each at the
    earliest time one of them is due. Returns how many tasks were scheduled; a backend without
    deferral schedules none, and the tombstones wait for the next ``promptjuggler_sync``.
    """
    if not pj_settings.SYNC_ENABLED or TRIGGERS.delete_remote is None:
        return 0
    ordered = sorted(waiting, key=lambda pair: (pair[1], pair[0]))
    scheduled = 0
    for start in range(0, len(ordered), _TOMBSTONES_PER_TASK):
        chunk = ordered[start : start + _TOMBSTONES_PER_TASK]
        ids = sorted(pk for pk, _ in chunk)
        scheduled += enqueue_at(TRIGGERS.delete_remote, chunk[0][1], ids)
    return scheduled


# -- tombstones ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tombstone:
    """What to delete remotely, and why (``reason`` is shown in the admin)."""

    remote_id: UUID | None
    knowledge_base_id: int | None
    knowledge_base_slug: str
    file_name: str = ""
    file_size: int | None = None
    reason: str = ""


def write_tombstones(tombstones: Iterable[Tombstone], *, using: str | None = None) -> int:
    """Insert tombstones in the current transaction and drain them after commit.

    A remote id already tombstoned is skipped. Tombstones without a remote id mark an upload
    whose outcome is unknown; reconcile resolves them. Returns how many rows were offered.
    """
    alias = _db_alias(using)
    rows = [
        RemoteDeletion(
            remote_id=t.remote_id,
            knowledge_base_id=t.knowledge_base_id,
            knowledge_base_slug=t.knowledge_base_slug,
            file_name=t.file_name[:255],
            file_size=t.file_size,
            reason=t.reason[:32],
        )
        for t in tombstones
    ]
    if not rows:
        return 0
    RemoteDeletion.objects.using(alias).bulk_create(rows, ignore_conflicts=True)
    remote_ids = [r.remote_id for r in rows if r.remote_id is not None]
    unknown = {r.knowledge_base_id for r in rows if r.remote_id is None} - {None}
    if remote_ids or unknown:
        _collect(alias, remote_ids=remote_ids, reconcile_ids=unknown)  # type: ignore[arg-type]
    return len(rows)


def may_have_unrecorded_copy(sync_state: str, attempts: int) -> bool:
    """Whether a row without a remote id may still have one remotely.

    It was sent at least once and never stored an answer: a timeout after sending, a 5xx
    after PromptJuggler had stored the file, a worker that died mid-upload. Deleting or
    re-pushing such a row leaves a tombstone without remote id that reconcile resolves.
    """
    return attempts > 0 and sync_state != "synced"


_KNOWLEDGE_BASE = KnowledgeDocument._meta.get_field("knowledge_base")


def tombstone_for(document: Any, reason: str, remote_id: UUID | None = None) -> Tombstone:
    """A tombstone for ``document``'s remote copy (``remote_id`` overrides the row's)."""
    kb_id = document.knowledge_base_id
    slug = ""
    if _KNOWLEDGE_BASE.is_cached(document):  # the admin and forms have it loaded already
        slug = document.knowledge_base.slug
    elif kb_id is not None:
        slug = KnowledgeBase.objects.filter(pk=kb_id).values_list("slug", flat=True).first() or ""
    return Tombstone(
        remote_id=remote_id if remote_id is not None else document.remote_id,
        knowledge_base_id=kb_id,
        knowledge_base_slug=slug,
        file_name=document.file_name or "",
        file_size=document.file_size,
        reason=reason,
    )


def drain_after_commit(remote_ids: Iterable[UUID], *, using: str | None = None) -> None:
    """Enqueue the deletion of already written tombstones once the transaction commits."""
    _collect(_db_alias(using), remote_ids=remote_ids)
