"""Scale-out on Celery: two real ``celery worker`` processes on RabbitMQ, PostgreSQL, 500 documents.

The scenario is ``tests/scale_support.py``'s: the test process saves and deletes documents and
receives the webhooks; two ``celery -A tests.celery_app worker --concurrency 1
--prefetch-multiplier 1`` processes push and delete, reaching Celery through Django's Tasks API
and ``django-tasks-celery``. On top of the RQ run, the emulator refuses some uploads with 503:
their documents retry through pushes deferred with ``run_after`` (a Celery ETA), relayed since
the workers' ``TASK_DEFER_MAX`` is shorter than their backoff, and run by the workers alone
(no ``promptjuggler_sync``).

django-tasks-celery needs Python 3.12+ and Django 6: elsewhere the test skips. Where it can
run, a missing package or broker skips it, or fails it with ``PJ_REQUIRE_CELERY=1`` (CI).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import django
import pytest

from tests.scale_support import (
    ScaleOut,
    WorkerProcess,
    scale_out,  # noqa: F401  (the fixture)
    unavailable,
    unique_queue_name,
    worker_processes,
)

pytestmark = [
    pytest.mark.celery,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(
        sys.version_info < (3, 12) or django.VERSION < (6, 0),
        reason="django-tasks-celery needs Python 3.12+ and Django 6 (runs in the 3.13 cells)",
    ),
    pytest.mark.skipif(
        os.environ.get("PJ_TEST_DB") != "postgres",
        reason="runs on a fresh PostgreSQL database: needs PJ_TEST_DB=postgres",
    ),
]

BROKER_URL = os.environ.get("PJ_CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
#: Upload requests the emulator answers 503 (nothing stored): their documents retry.
REFUSED_UPLOADS = 12

TASK_SUCCEEDED = re.compile(r"Task (?P<name>\S+)\[[^\]]+\] succeeded in")
TASK_FAILED = re.compile(r"(?:Task \S+\[[^\]]+\] raised unexpected|unregistered task).*")
DEFERRED = re.compile(r"deferred (?P<name>\S+)\[[^\]]+\] until")


def celery_or_skip() -> None:
    """Skip unless django-tasks-celery imports and RabbitMQ answers (PJ_REQUIRE_CELERY fails)."""
    try:
        import django_tasks_celery  # noqa: F401
        from kombu import Connection
    except ImportError as exc:
        unavailable(f"django-tasks-celery is not installed ({exc})", "PJ_REQUIRE_CELERY")
    where = Connection(BROKER_URL).as_uri()  # the password masked
    try:
        with Connection(BROKER_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        unavailable(f"no RabbitMQ at {where} ({type(exc).__name__})", "PJ_REQUIRE_CELERY")


@contextlib.contextmanager
def celery_queue(settings: Any) -> Iterator[str]:
    """A queue of the run's own on RabbitMQ, wired into the test's settings; deleted after."""
    celery_or_skip()
    name = unique_queue_name()
    # As in tests/settings_celery.py: the tasks are declared on "default", sent to ``name``.
    settings.CELERY_BROKER_URL = BROKER_URL
    settings.TASKS = {
        "default": {
            "BACKEND": "django_tasks_celery.CeleryBackend",
            "QUEUES": ["default", name],
            "OPTIONS": {"CELERY_APP": "tests.celery_app.app"},
        }
    }
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "TASK_QUEUE": name}
    from tests.celery_app import app

    try:
        yield name
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(name)


@dataclass
class CeleryFleet:
    """``celery worker`` processes, one task at a time each, on one RabbitMQ queue."""

    queue: str
    label: str = "Celery"
    settings_module: str = "tests.settings_celery"
    env: dict[str, str] = field(default_factory=lambda: {"PJ_CELERY_BROKER_URL": BROKER_URL})

    @contextlib.contextmanager
    def start(self, count: int, env: dict[str, str], logs: Path) -> Iterator[list[WorkerProcess]]:
        commands = {
            f"{self.queue}-w{n}": [
                *(sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker"),
                *("--concurrency", "1", "--prefetch-multiplier", "1", "--loglevel", "INFO"),
                *("--queues", self.queue, "--hostname", f"{self.queue}-w{n}@%h"),
                *("--without-gossip", "--without-mingle", "--without-heartbeat"),
            ]
            for n in range(count)
        }
        with worker_processes(
            commands, env, logs, lambda workers: all(" ready." in w.text() for w in workers)
        ) as workers:
            yield workers

    def failed_tasks(self, workers: list[WorkerProcess]) -> list[str]:
        return [m[0] for w in workers for m in TASK_FAILED.finditer(w.text())]

    def tasks_per_worker(self, workers: list[WorkerProcess]) -> Counter[str]:
        return Counter({w.name: len(TASK_SUCCEEDED.findall(w.text())) for w in workers})


def test_two_celery_workers_push_500_documents_once(
    settings: Any, scale_out: Callable[..., ScaleOut]
) -> None:
    with celery_queue(settings) as queue:
        run = scale_out(CeleryFleet(queue), refused_uploads=REFUSED_UPLOADS)
    # The refused documents were pushed again by deferred tasks, relayed past the cap, that
    # the workers received with an ETA and ran.
    deferred = Counter(m["name"] for w in run.workers for m in DEFERRED.finditer(w.text()))
    succeeded = Counter(m["name"] for w in run.workers for m in TASK_SUCCEEDED.finditer(w.text()))
    assert deferred["promptjuggler_django.sync.tasks.push_knowledge_base_task"] > 0, deferred
    assert deferred["promptjuggler_django.taskqueue.relay_deferred_task"] > 0, deferred
    assert succeeded["promptjuggler_django.taskqueue.relay_deferred_task"] > 0, succeeded
    print(run.summary() + f"; deferred tasks received {dict(deferred)}")
