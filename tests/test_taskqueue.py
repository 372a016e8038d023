"""Enqueueing: deferrals are capped by ``TASK_DEFER_MAX`` and relayed until they are due.

A broker may not hold a deferred task for long: RabbitMQ closes the channel of a consumer that
keeps a message unacknowledged past its ``consumer_timeout`` (30 minutes by default), and a
Celery worker holds a task with an ETA unacknowledged until it runs. So no task is deferred
further than ``TASK_DEFER_MAX`` ahead: a longer wait is a chain of relay tasks, each deferred
at most that far, the last of which enqueues the real task for the time it asked for.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import django
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from promptjuggler_django import taskqueue
from promptjuggler_django.conf import pj_settings
from promptjuggler_django.models import KnowledgeDocument, SyncState
from promptjuggler_django.sync import tasks
from tests.sync_support import *  # noqa: F403  (fixtures: pj, kb, dummy_tasks)
from tests.sync_support import make_doc

HOUR = timedelta(hours=1)


class Clock:
    """``timezone.now()`` under the test's control."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = timezone.now()
        monkeypatch.setattr(timezone, "now", lambda: self.now)


def run_relays(dummy_tasks: list[Any], clock: Clock) -> tuple[Any, list[timedelta]]:
    """Run the queued relays in time order until the real task is queued; (it, relay leads).

    Each relay is run at its ``run_after`` (the clock moves there), as a worker would.
    """
    leads: list[timedelta] = []
    enqueued_at = clock.now
    while True:
        [result] = dummy_tasks
        dummy_tasks.clear()
        run_after: datetime = result.task.run_after
        leads.append(run_after - enqueued_at)
        if result.task.name != "relay_deferred_task":
            return result, leads
        clock.now = enqueued_at = run_after
        result.task.call(*result.args)


def test_a_deferral_within_the_cap_is_enqueued_as_asked(
    dummy_tasks: list[Any], settings: Any
) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "TASK_DEFER_MAX": 600.0}
    when = timezone.now() + timedelta(seconds=300)
    assert taskqueue.enqueue_at(tasks.push_knowledge_base_task, when, 7)
    [result] = dummy_tasks
    assert (result.task.name, result.args, result.task.run_after) == (
        "push_knowledge_base_task",
        [7],
        when,
    )


def test_a_deferral_beyond_the_cap_is_relayed_and_runs_when_asked(
    dummy_tasks: list[Any], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "TASK_DEFER_MAX": 600.0}
    clock = Clock(monkeypatch)
    when = clock.now + HOUR  # PUSH_BACKOFF_MAX's default
    assert taskqueue.enqueue_at(tasks.push_knowledge_base_task, when, 7)
    [relay] = dummy_tasks
    assert relay.task.name == "relay_deferred_task"
    assert relay.task.queue_name == pj_settings.TASK_QUEUE  # the same workers run it
    result, leads = run_relays(dummy_tasks, clock)
    assert (result.task.name, result.args, result.task.run_after) == (
        "push_knowledge_base_task",
        [7],
        when,
    )
    # Never deferred further ahead than the cap: six legs of ten minutes.
    assert leads == [timedelta(seconds=600)] * 6


def test_without_a_cap_a_deferral_is_enqueued_as_asked(
    dummy_tasks: list[Any], settings: Any
) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "TASK_DEFER_MAX": None}
    when = timezone.now() + 5 * HOUR
    assert taskqueue.enqueue_at(tasks.push_knowledge_base_task, when, 7)
    [result] = dummy_tasks
    assert result.task.name == "push_knowledge_base_task" and result.task.run_after == when


@pytest.mark.django_db
def test_a_capped_retry_converges_without_promptjuggler_sync(
    pj: Any, kb: Any, dummy_tasks: list[Any], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A document waiting out the longest backoff is pushed by the tasks alone, at its time.
    settings.PROMPTJUGGLER = {
        **settings.PROMPTJUGGLER,
        "TASK_DEFER_MAX": 900.0,
        "PUSH_BACKOFF": 3600.0,
        "PUSH_BACKOFF_MAX": 3600.0,
    }
    clock = Clock(monkeypatch)
    pj.set_fault("upload", status=503, times=1)
    doc = make_doc(kb, "patient.txt")
    dummy_tasks.clear()
    tasks.push_knowledge_base_task.call(kb.pk)  # the push the save enqueued: refused, 503
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.RETRYING
    due = doc.next_attempt_at
    assert due is not None and due - clock.now > timedelta(seconds=900)
    push, leads = run_relays(dummy_tasks, clock)
    assert push.task.run_after == due
    assert all(lead <= timedelta(seconds=900) for lead in leads)
    clock.now = due
    push.task.call(*push.args)
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.SYNCED
    assert pj.request_count("upload") == 2
    assert dummy_tasks == []  # nothing left waiting: no further task


@pytest.mark.django_db
def test_a_push_woken_before_its_documents_are_due_waits_for_them(
    pj: Any, kb: Any, dummy_tasks: list[Any], settings: Any
) -> None:
    # A relay lost or a task run early by a backend: the push sends nothing and reschedules.
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "TASK_DEFER_MAX": 900.0}
    doc = make_doc(kb, "early.txt")
    when = timezone.now() + HOUR
    KnowledgeDocument.objects.filter(pk=doc.pk).update(
        sync_state=SyncState.RETRYING, next_attempt_at=when, attempts=1
    )
    dummy_tasks.clear()
    tasks.push_knowledge_base_task.call(kb.pk)
    assert pj.request_count("upload") == 0
    [relay] = dummy_tasks
    assert relay.task.name == "relay_deferred_task"
    assert relay.args == ["promptjuggler_django.sync.tasks.push_knowledge_base_task",
                          when.isoformat(), [kb.pk]]  # fmt: skip


def test_a_relay_enqueues_only_the_apps_own_tasks(dummy_tasks: list[Any]) -> None:
    # The relay imports its target by name: a message naming anything else is refused.
    when = (timezone.now() + timedelta(seconds=5)).isoformat()
    with pytest.raises(ValueError, match="not a promptjuggler_django task"):
        taskqueue.relay_deferred_task.call("os.system", when, ["true"])
    assert dummy_tasks == []


def test_a_backend_without_deferral_enqueues_nothing(settings: Any) -> None:
    # The immediate backend (the tests' default) cannot defer: promptjuggler_sync does it.
    when = timezone.now() + HOUR
    assert not taskqueue.enqueue_at(tasks.push_knowledge_base_task, when, 7)


@pytest.mark.parametrize("value", [0, -1.0, "900", True, float("inf")])
def test_the_cap_must_be_a_positive_number_or_none(settings: Any, value: Any) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "TASK_DEFER_MAX": value}
    with pytest.raises(ImproperlyConfigured, match=r'\["TASK_DEFER_MAX"\] must be'):
        _ = pj_settings.TASK_DEFER_MAX


# -- on Celery: what django-tasks-celery makes of a deferral (no broker needed) ---------------


@pytest.fixture
def celery_sent(settings: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any, Any]]:
    """The Celery backend on queue ``promptjuggler``; yields what would go to the broker."""
    if sys.version_info < (3, 12) or django.VERSION < (6, 0):
        pytest.skip("django-tasks-celery needs Python 3.12+ and Django 6")
    pytest.importorskip("django_tasks_celery")
    from celery.app.task import Task as CeleryTask

    settings.TASKS = {
        "default": {
            "BACKEND": "django_tasks_celery.CeleryBackend",
            "QUEUES": ["default", "promptjuggler"],
            "OPTIONS": {"CELERY_APP": "tests.celery_app.app"},
        }
    }
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "TASK_QUEUE": "promptjuggler"}
    sent: list[tuple[str, Any, Any]] = []

    def apply_async(self: Any, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        sent.append((self.name, args, options))
        return SimpleNamespace(id=f"sent-{len(sent)}")

    monkeypatch.setattr(CeleryTask, "apply_async", apply_async)
    return sent


def test_on_celery_a_deferral_is_an_eta_on_the_configured_queue(
    celery_sent: list[tuple[str, Any, Any]], settings: Any
) -> None:
    when = timezone.now() + timedelta(seconds=60)
    assert taskqueue.enqueue_at(tasks.push_knowledge_base_task, when, 7)
    assert celery_sent == [
        (
            "promptjuggler_django.sync.tasks.push_knowledge_base_task",
            [7],
            {"queue": "promptjuggler", "eta": when},
        )
    ]


def test_on_celery_a_long_deferral_is_a_relay_held_no_longer_than_the_cap(
    celery_sent: list[tuple[str, Any, Any]],
) -> None:
    before = timezone.now()
    when = before + HOUR
    assert taskqueue.enqueue_at(tasks.push_knowledge_base_task, when, 7)
    [(name, args, options)] = celery_sent
    assert name == "promptjuggler_django.taskqueue.relay_deferred_task"
    assert args == [tasks.push_knowledge_base_task.module_path, when.isoformat(), [7]]
    assert options["queue"] == "promptjuggler"
    cap = timedelta(seconds=pj_settings.TASK_DEFER_MAX)
    assert before < options["eta"] <= timezone.now() + cap


def test_on_celery_the_default_queue_is_celerys_own(
    celery_sent: list[tuple[str, Any, Any]], settings: Any
) -> None:
    # django-tasks-celery names no queue for "default": Celery's task_default_queue gets it.
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "TASK_QUEUE": "default"}
    assert taskqueue.enqueue(tasks.push_knowledge_base_task, 7)
    [(_, _, options)] = celery_sent
    assert "queue" not in options
