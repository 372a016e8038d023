"""Many documents: requests bounded by the batch size, queries bounded by the batches."""

from __future__ import annotations

import importlib
import math
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from promptjuggler_django import sync
from promptjuggler_django.conf import pj_settings
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, RemoteDeletion, SyncState
from tests.sync_support import *  # noqa: F403  (fixtures: pj, kb, …)
from tests.sync_support import TASKS_MODULE, make_doc, remote_state

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

N = 2000
#: Queries per batch: claim (savepoint, select, update, release) + store (savepoint, select,
#: remote-id check, bulk update, release) + the early-webhook lookup after commit.
PER_BATCH = 10
SETUP = 25


def _enqueued_tasks() -> tuple[list[Any], Any]:
    task_enqueued = importlib.import_module(f"{TASKS_MODULE}.signals").task_enqueued

    seen: list[Any] = []

    def on_enqueued(sender: Any, task_result: Any, **kw: Any) -> None:
        seen.append((task_result.task.name, tuple(task_result.args)))

    task_enqueued.connect(on_enqueued, dispatch_uid="t-bulk-enqueued", weak=False)
    return seen, lambda: task_enqueued.disconnect(dispatch_uid="t-bulk-enqueued")


def test_2000_documents_in_one_transaction(
    pj: Any, kb: KnowledgeBase, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    # One task per knowledge base does the whole backlog (no hand-over to a successor task).
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "TASK_PUSH_LIMIT": N}
    pj.create_knowledge_base("kb_second")
    second = KnowledgeBase.objects.create(slug="kb_second")
    seen, stop = _enqueued_tasks()
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks, transaction.atomic():
            for i in range(N):
                make_doc(kb if i % 4 else second, f"doc-{i:04}.txt", f"body {i}".encode())
        assert pj.request_count() == 0
        with CaptureQueriesContext(connection) as queries:
            for callback in callbacks:  # the commit: the immediate backend runs the pushes
                callback()
    finally:
        stop()
    pushes = [s for s in seen if s[0] == "push_knowledge_base_task"]
    assert sorted(pushes) == sorted(
        [("push_knowledge_base_task", (kb.pk,)), ("push_knowledge_base_task", (second.pk,))]
    )
    batch = pj_settings.BATCH_MAX_FILES  # the default
    uploads = pj.request_count("upload")
    batches = math.ceil(1500 / batch) + math.ceil(500 / batch)
    assert uploads <= math.ceil(N / batch) + 1 and uploads == batches
    assert len(queries) <= PER_BATCH * batches + SETUP, len(queries)
    assert KnowledgeDocument.objects.filter(sync_state=SyncState.SYNCED).count() == N
    assert len(remote_state(pj, "kb_test")) == 1500
    assert len(remote_state(pj, "kb_second")) == 500


def test_queries_grow_with_batches_not_documents(pj: Any, kb: KnowledgeBase, settings: Any) -> None:
    objs = [
        KnowledgeDocument(knowledge_base=kb, file=ContentFile(f"b{i}".encode(), name=f"b{i}.txt"))
        for i in range(400)
    ]
    KnowledgeDocument.objects.bulk_create(objs)
    counts = {}
    for files in (100, 20):
        pj.reset()
        KnowledgeDocument.objects.update(sync_state=SyncState.QUEUED, remote_id=None, attempts=0)
        settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BATCH_MAX_FILES": files}
        with CaptureQueriesContext(connection) as queries:
            report = sync.push_due()
        assert report.synced == 400 and report.requests == 400 // files
        counts[files] = len(queries)
    # Five times the batches, about five times the queries; the documents did not change.
    assert counts[100] <= PER_BATCH * 4 + SETUP
    assert counts[20] <= PER_BATCH * 20 + SETUP
    assert counts[20] > 3 * counts[100]


def test_bulk_created_rows_go_through_push_queryset(
    pj: Any, kb: KnowledgeBase, django_capture_on_commit_callbacks: Any
) -> None:
    objs = [
        KnowledgeDocument(
            knowledge_base=kb, file=ContentFile(f"bulk {i}".encode(), name=f"bulk-{i:04}.md")
        )
        for i in range(N)
    ]
    KnowledgeDocument.objects.bulk_create(objs, batch_size=500)  # no signals, no metadata
    assert pj.request_count() == 0
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        queued = sync.push_queryset(KnowledgeDocument.objects.filter(knowledge_base=kb))
    assert queued == N
    with CaptureQueriesContext(connection) as queries:
        for callback in callbacks:
            callback()
    batches = math.ceil(N / pj_settings.BATCH_MAX_FILES)
    assert pj.request_count("upload") == batches
    assert len(queries) <= PER_BATCH * batches + SETUP, len(queries)
    doc = KnowledgeDocument.objects.get(file_name="bulk-0007.md")
    assert doc.sync_state == SyncState.SYNCED and doc.file_size == len(b"bulk 7")
    assert doc.content_type == "text/markdown"
    assert len(remote_state(pj)) == N


def test_push_queryset_replaces_remote_copies(
    pj: Any, kb: KnowledgeBase, django_capture_on_commit_callbacks: Any
) -> None:
    docs = [make_doc(kb, f"u{i}.txt", b"old") for i in range(5)]
    sync.push_due()
    old_ids = set(KnowledgeDocument.objects.values_list("remote_id", flat=True))
    for d in docs:  # the file content changed behind Django's back (same names)
        with d.file.storage.open(d.file.name, "wb") as fh:
            fh.write(b"new!")
    KnowledgeDocument.objects.update(file_size=None)  # an update(): no signals
    with django_capture_on_commit_callbacks(execute=True):
        assert sync.push_queryset(KnowledgeDocument.objects.all()) == 5
    new_ids = set(KnowledgeDocument.objects.values_list("remote_id", flat=True))
    assert not new_ids & old_ids and None not in new_ids
    assert {d.sha256 for d in pj.documents("kb_test")} == {
        __import__("hashlib").sha256(b"new!").hexdigest()
    }
    assert len(pj.documents("kb_test")) == 5 and RemoteDeletion.objects.count() == 0


def test_delete_remote_for_rows_removed_without_signals(
    pj: Any, kb: KnowledgeBase, django_capture_on_commit_callbacks: Any
) -> None:
    docs = [make_doc(kb, f"r{i}.txt") for i in range(4)]
    sync.push_due()
    remote_ids = list(KnowledgeDocument.objects.values_list("remote_id", flat=True))
    KnowledgeDocument.objects.filter(pk__in=[d.pk for d in docs])._raw_delete(connection.alias)
    with django_capture_on_commit_callbacks(execute=True):
        assert sync.delete_remote(remote_ids, knowledge_base=kb) == 4
        assert sync.delete_remote(remote_ids[:1]) == 0  # already tombstoned
    assert pj.documents("kb_test") == [] and RemoteDeletion.objects.count() == 0
