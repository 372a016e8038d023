"""The tasks, through the immediate backend, django-tasks-db's worker and RQ on Redis."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from promptjuggler_django import sync
from promptjuggler_django.models import KnowledgeDocument, RemoteDeletion, SyncState
from promptjuggler_django.sync import tasks
from tests.sync_support import *  # noqa: F403  (fixtures: pj, kb, …)
from tests.sync_support import make_doc, remote_state


@pytest.mark.django_db
def test_immediate_backend_runs_every_task(pj: Any, kb: Any) -> None:
    a = make_doc(kb, "a.txt")
    b = make_doc(kb, "b.txt")
    tasks.push_documents_task.enqueue([a.pk])
    a.refresh_from_db()
    assert a.sync_state == SyncState.SYNCED
    tasks.push_knowledge_base_task.enqueue(kb.pk)
    b.refresh_from_db()
    assert b.sync_state == SyncState.SYNCED
    tomb = RemoteDeletion.objects.create(remote_id=a.remote_id, knowledge_base=kb)
    tasks.delete_remote_task.enqueue([tomb.pk])
    assert not RemoteDeletion.objects.exists()
    assert set(remote_state(pj)) == {"b.txt"}


def _backlog(kb: Any, count: int) -> None:
    from promptjuggler_django.sync import suppress_sync

    with suppress_sync():
        for i in range(count):
            make_doc(kb, f"backlog-{i}.txt")


@pytest.mark.django_db
def test_a_push_task_hands_a_large_backlog_over_to_a_fresh_task(
    pj: Any, kb: Any, settings: Any
) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "TASK_PUSH_LIMIT": 5, "BATCH_MAX_FILES": 5}
    _backlog(kb, 12)
    tasks.push_knowledge_base_task.enqueue(kb.pk)  # immediate: each hand-over runs at once
    assert set(KnowledgeDocument.objects.values_list("sync_state", flat=True)) == {"synced"}
    assert pj.request_count("upload") == 3
    assert len(remote_state(pj)) == 12


@pytest.mark.django_db
def test_a_push_task_stops_at_its_limit_and_enqueues_one_successor(
    pj: Any, kb: Any, settings: Any, dummy_tasks: list[Any]
) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "TASK_PUSH_LIMIT": 5, "BATCH_MAX_FILES": 5}
    _backlog(kb, 7)
    tasks.push_knowledge_base_task.call(kb.pk)
    assert KnowledgeDocument.objects.filter(sync_state=SyncState.SYNCED).count() == 5
    assert [r.args for r in dummy_tasks] == [[kb.pk]]
    dummy_tasks.clear()
    tasks.push_knowledge_base_task.call(kb.pk)
    assert KnowledgeDocument.objects.filter(sync_state=SyncState.SYNCED).count() == 7
    assert dummy_tasks == []  # below the limit: nothing left, no successor


@pytest.mark.django_db
def test_tasks_on_missing_rows_are_no_ops(pj: Any, kb: Any) -> None:
    for result in (
        tasks.push_documents_task.enqueue([424242]),
        tasks.push_knowledge_base_task.enqueue(424242),
        tasks.delete_remote_task.enqueue([424242]),
    ):
        assert result.status == "SUCCESSFUL"
    assert pj.request_count() == 0


@pytest.mark.django_db
def test_enqueue_failure_is_logged_not_raised(kb: Any, settings: Any, caplog: Any) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "TASK_BACKEND": "nope"}
    assert tasks.enqueue(tasks.push_knowledge_base_task, kb.pk) is False
    assert "promptjuggler_sync will pick the work up" in caplog.text


@pytest.fixture
def database_backend(settings: Any) -> None:
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}


def run_db_worker(*extra: str) -> None:
    call_command(
        "db_worker", "--batch", "--no-startup-delay", "--interval", "0.01", *extra, verbosity=0
    )


@pytest.mark.django_db(transaction=True)
def test_database_backend_end_to_end(pj: Any, kb: Any, database_backend: None) -> None:
    from django_tasks_db.models import DBTaskResult

    with transaction.atomic():
        docs = [make_doc(kb, f"db{i}.txt", f"db {i}".encode()) for i in range(25)]
    # One push task for the knowledge base, however many documents the transaction saved.
    assert DBTaskResult.objects.count() == 1
    assert pj.request_count() == 0  # queued, not run
    run_db_worker()
    assert {KnowledgeDocument.objects.get(pk=d.pk).sync_state for d in docs} == {SyncState.SYNCED}
    assert len(remote_state(pj)) == 25
    with transaction.atomic():
        KnowledgeDocument.objects.filter(pk__in=[d.pk for d in docs[:10]]).delete()
    assert RemoteDeletion.objects.count() == 10
    run_db_worker()
    assert RemoteDeletion.objects.count() == 0
    assert len(remote_state(pj)) == 15
    assert set(DBTaskResult.objects.values_list("status", flat=True)) == {"SUCCESSFUL"}


@pytest.mark.django_db(transaction=True)
def test_database_backend_defers_the_retry(
    pj: Any, kb: Any, database_backend: None, settings: Any
) -> None:
    from django_tasks_db.models import DBTaskResult

    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "PUSH_BACKOFF": 1.0}

    pj.set_fault("upload", status=503, times=1)
    doc = make_doc(kb, "later.txt")
    run_db_worker("--max-tasks", "1")  # the first push only
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.RETRYING
    deferred = DBTaskResult.objects.filter(status="READY").get()
    assert deferred.run_after is not None
    assert abs((deferred.run_after - doc.next_attempt_at).total_seconds()) < 0.01
    time.sleep(max(0.0, (doc.next_attempt_at - timezone.now()).total_seconds()) + 0.05)
    run_db_worker()
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.SYNCED


REDIS_QUEUE = "pj-sync-tests"


@pytest.fixture
def rq_backend(settings: Any) -> Any:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        if os.environ.get("PJ_REQUIRE_REDIS"):  # CI: a missing service is a failure
            pytest.fail("no Redis at 127.0.0.1:6379 (PJ_REQUIRE_REDIS is set)")
        pytest.skip("no Redis at 127.0.0.1:6379")
    settings.RQ_QUEUES = {REDIS_QUEUE: {"HOST": "127.0.0.1", "PORT": 6379, "DB": 15}}
    settings.TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": [REDIS_QUEUE]}}
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "TASK_QUEUE": REDIS_QUEUE}
    import django_rq
    from django_tasks_rq import Job

    queue = django_rq.get_queue(REDIS_QUEUE, job_class=Job)
    queue.empty()
    yield queue
    queue.empty()


def run_rq_worker(queue: Any) -> None:
    from django_tasks_rq import Job
    from rq import SimpleWorker

    worker = SimpleWorker([queue], connection=queue.connection, job_class=Job)
    worker.work(burst=True, with_scheduler=False)


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_rq_backend_end_to_end(pj: Any, kb: Any, rq_backend: Any) -> None:
    with transaction.atomic():
        docs = [make_doc(kb, f"rq{i}.txt", f"rq {i}".encode()) for i in range(12)]
    assert rq_backend.count == 1  # one push task for the knowledge base
    run_rq_worker(rq_backend)
    assert {KnowledgeDocument.objects.get(pk=d.pk).sync_state for d in docs} == {SyncState.SYNCED}
    remote_id = KnowledgeDocument.objects.get(pk=docs[0].pk).remote_id
    docs[0].delete()
    run_rq_worker(rq_backend)
    assert pj.document(remote_id) is None
    assert len(remote_state(pj)) == 11
    assert not RemoteDeletion.objects.exists()


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_rq_task_arguments_are_plain_ids(kb: Any, rq_backend: Any) -> None:
    """Tasks carry ids only: what RQ stores must survive JSON and never hold a model."""
    import json

    make_doc(kb, "ids.txt")
    (job,) = rq_backend.jobs
    assert json.loads(json.dumps(list(job.args))) == [kb.pk]
    assert job.func_name == "promptjuggler_django.sync.tasks.push_knowledge_base_task"


@pytest.mark.django_db(transaction=True)
def test_database_backend_retries_a_blocked_knowledge_base_without_cron(
    pj: Any, kb: Any, database_backend: None, settings: Any
) -> None:
    from django_tasks_db.models import DBTaskResult

    from promptjuggler_django.models import KnowledgeBase

    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "PUSH_BACKOFF": 1.0, "API_KEY": "pj_bad"}
    doc = make_doc(kb, "held.txt")
    run_db_worker("--max-tasks", "1")  # the first push only: refused with 401
    doc.refresh_from_db()
    blocked = KnowledgeBase.objects.get(pk=kb.pk)
    assert blocked.is_blocked and doc.sync_state == SyncState.QUEUED and doc.attempts == 0
    deferred = DBTaskResult.objects.filter(status="READY").get()
    assert deferred.run_after is not None and blocked.blocked_until is not None
    assert abs((deferred.run_after - blocked.blocked_until).total_seconds()) < 0.01
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "API_KEY": pj.api_key}  # the fix
    time.sleep(max(0.0, (blocked.blocked_until - timezone.now()).total_seconds()) + 0.05)
    run_db_worker()
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.SYNCED
    assert not KnowledgeBase.objects.get(pk=kb.pk).is_blocked


@pytest.mark.django_db
def test_a_deferred_push_reschedules_what_is_still_waiting(
    pj: Any, kb: Any, dummy_tasks: list[Any]
) -> None:
    # Each row draws its own jittered delay; the task scheduled for the earliest pushes only
    # what is due by then, and hands the rest to one task at the next due time.
    now = timezone.now()
    due = [make_doc(kb, f"due{i}.txt") for i in range(3)]
    later = [make_doc(kb, f"later{i}.txt") for i in range(3)]
    dummy_tasks.clear()
    waits = [timedelta(seconds=s) for s in (-1, -1, -1, 40, 50, 60)]
    for doc, wait in zip(due + later, waits, strict=True):
        KnowledgeDocument.objects.filter(pk=doc.pk).update(
            sync_state=SyncState.RETRYING, next_attempt_at=now + wait, attempts=1
        )
    tasks.push_knowledge_base_task.call(kb.pk)  # what the deferred task runs
    assert {d.sync_state for d in KnowledgeDocument.objects.filter(pk__in=[d.pk for d in due])} == {
        SyncState.SYNCED
    }
    [successor] = dummy_tasks
    assert successor.args == [kb.pk]
    assert successor.task.run_after == now + timedelta(seconds=40)


@pytest.mark.django_db
def test_a_push_of_given_documents_reschedules_their_knowledge_base(
    pj: Any, kb: Any, dummy_tasks: list[Any]
) -> None:
    waiting = make_doc(kb, "waiting.txt")
    fresh = make_doc(kb, "fresh.txt")
    when = timezone.now() + timedelta(seconds=30)
    KnowledgeDocument.objects.filter(pk=waiting.pk).update(
        sync_state=SyncState.RETRYING, next_attempt_at=when, attempts=1
    )
    dummy_tasks.clear()
    sync.push_documents([fresh.pk])
    [successor] = dummy_tasks
    assert successor.args == [kb.pk] and successor.task.run_after == when


@pytest.mark.django_db
def test_a_deleted_unknown_outcome_is_reconciled_by_a_task_after_the_lease(
    pj: Any, kb: Any, settings: Any, dummy_tasks: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    # The copy an unknown outcome may have left is deleted without waiting for cron: a
    # reconcile of its knowledge base, deferred until any upload still in flight has ended.
    from promptjuggler_django.models import RemoteDeletion

    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "READ_TIMEOUT": 0.5, "LEASE": 120.0}
    doc = make_doc(kb, "ghost.txt", b"boo")
    pj.set_fault("upload", read_timeout=2, after_effect=True, times=1)
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.NEEDS_REVIEW
    dummy_tasks.clear()
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        doc.delete()
    [reconcile] = [r for r in dummy_tasks if r.task.name == "reconcile_knowledge_base_task"]
    assert reconcile.args == [kb.pk]
    assert before + timedelta(seconds=120) <= reconcile.task.run_after
    assert reconcile.task.run_after <= timezone.now() + timedelta(seconds=120)
    assert len(pj.documents("kb_test")) == 1
    dummy_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        tasks.reconcile_knowledge_base_task.call(kb.pk)  # what the deferred task runs
    [copy] = pj.documents("kb_test")
    marker = RemoteDeletion.objects.get()
    assert marker.remote_id == copy.id  # found: the marker now points at the copy
    [delete] = [r for r in dummy_tasks if r.task.name == "delete_remote_task"]
    assert delete.args == [[marker.pk]]
    tasks.delete_remote_task.call(*delete.args)
    assert pj.documents("kb_test") == []
    assert RemoteDeletion.objects.count() == 0


@pytest.mark.django_db
def test_a_reconcile_task_for_a_missing_knowledge_base_is_a_no_op(pj: Any) -> None:
    tasks.reconcile_knowledge_base_task.call(424242)
    assert pj.request_count() == 0


def _tombstoned(kb: Any, *names: str) -> list[RemoteDeletion]:
    """Push documents, then delete them: one tombstone per remote copy, its task not run yet."""
    docs = [make_doc(kb, name) for name in names]
    sync.push_documents([d.pk for d in docs])
    for doc in docs:
        doc.delete()  # the test's transaction never commits: the delete task is not enqueued
    return list(RemoteDeletion.objects.order_by("pk"))


@pytest.mark.django_db
def test_a_failed_remote_delete_is_scheduled_again_without_cron(
    pj: Any, kb: Any, dummy_tasks: list[Any], settings: Any
) -> None:
    # A DELETE answered 503 keeps its tombstone with a backoff; a backend that can defer runs
    # the delete again at that time, not at the next promptjuggler_sync.
    settings.PROMPTJUGGLER = {
        **settings.PROMPTJUGGLER,
        "PUSH_BACKOFF": 30.0,
        "PUSH_BACKOFF_MAX": 60.0,
    }
    [tombstone] = _tombstoned(kb, "gone.txt")
    dummy_tasks.clear()
    pj.set_fault("delete", status=503)  # the client's own quick retries included
    tasks.delete_remote_task.call([tombstone.pk])
    pj.clear_faults()
    tombstone.refresh_from_db()
    assert tombstone.attempts == 1 and tombstone.next_attempt_at > timezone.now()
    [retry] = dummy_tasks
    assert retry.task.name == "delete_remote_task"
    assert retry.args == [[tombstone.pk]]
    assert retry.task.run_after == tombstone.next_attempt_at
    RemoteDeletion.objects.filter(pk=tombstone.pk).update(next_attempt_at=timezone.now())
    dummy_tasks.clear()
    tasks.delete_remote_task.call(*retry.args)  # what the deferred task runs
    assert RemoteDeletion.objects.count() == 0
    assert pj.documents("kb_test") == []
    assert dummy_tasks == []  # nothing left waiting: nothing scheduled


@pytest.mark.django_db
def test_a_deferred_delete_reschedules_the_tombstones_still_waiting(
    pj: Any, kb: Any, dummy_tasks: list[Any]
) -> None:
    # Each tombstone draws its own jittered delay; the task scheduled for the earliest deletes
    # what is due by then and hands the rest to one task at the next due time.
    tombstones = _tombstoned(kb, "a.txt", "b.txt", "c.txt")
    now = timezone.now()
    waits = [timedelta(seconds=s) for s in (-1, 40, 50)]
    for tombstone, wait in zip(tombstones, waits, strict=True):
        RemoteDeletion.objects.filter(pk=tombstone.pk).update(
            next_attempt_at=now + wait, attempts=1, last_error="503"
        )
    dummy_tasks.clear()
    tasks.delete_remote_task.call([t.pk for t in tombstones])
    assert set(RemoteDeletion.objects.values_list("pk", flat=True)) == {
        t.pk for t in tombstones[1:]
    }
    [successor] = dummy_tasks
    assert successor.task.name == "delete_remote_task"
    assert successor.args == [[t.pk for t in tombstones[1:]]]
    assert successor.task.run_after == now + timedelta(seconds=40)


@pytest.mark.django_db(transaction=True)
def test_database_backend_defers_the_retry_of_a_remote_delete(
    pj: Any, kb: Any, database_backend: None, settings: Any
) -> None:
    from django_tasks_db.models import DBTaskResult

    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "PUSH_BACKOFF": 1.0}
    doc = make_doc(kb, "short-lived.txt")
    run_db_worker()
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.SYNCED
    pj.set_fault("delete", status=503)
    doc.delete()
    run_db_worker("--max-tasks", "1")  # the first delete only: answered 503
    pj.clear_faults()
    tombstone = RemoteDeletion.objects.get()
    assert tombstone.attempts == 1 and tombstone.next_attempt_at is not None
    deferred = DBTaskResult.objects.filter(status="READY").get()
    assert deferred.run_after is not None
    assert abs((deferred.run_after - tombstone.next_attempt_at).total_seconds()) < 0.01
    time.sleep(max(0.0, (tombstone.next_attempt_at - timezone.now()).total_seconds()) + 0.05)
    run_db_worker()
    assert RemoteDeletion.objects.count() == 0
    assert pj.documents("kb_test") == []
