"""Scale-out on RQ: two real ``rqworker`` processes, a real Redis, 500 documents.

The scenario is ``tests/scale_support.py``'s: the test process saves and deletes documents and
receives the webhooks, two ``python -m django rqworker`` processes push and delete; in the end
every document is uploaded exactly once and ``ready``, and both workers did work.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.scale_support import (
    ScaleOut,
    WorkerProcess,
    scale_out,  # noqa: F401  (the fixture)
    unavailable,
    unique_queue_name,
    worker_processes,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_DB = 14  # tests/settings_rq.py's default; tests/test_tasks.py uses 15


def redis_or_skip() -> None:
    """Skip unless Redis answers (fail instead with PJ_REQUIRE_REDIS=1)."""
    try:
        import redis

        with redis.Redis(
            host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_connect_timeout=1
        ) as conn:
            conn.ping()
    except Exception as exc:  # ImportError, ConnectionError, …
        unavailable(
            f"no Redis at {REDIS_HOST}:{REDIS_PORT} ({type(exc).__name__})", "PJ_REQUIRE_REDIS"
        )


@contextlib.contextmanager
def rq_queue(settings: Any) -> Iterator[Any]:
    """A queue of its own on Redis database 14, wired into the test's settings; removed after.

    Cleanup deletes this queue's keys only.
    """
    redis_or_skip()
    name = unique_queue_name()
    # As in tests/settings_rq.py: the tasks are declared on "default", sent to ``name``.
    settings.RQ_QUEUES = {
        queue: {"HOST": REDIS_HOST, "PORT": REDIS_PORT, "DB": REDIS_DB}
        for queue in ("default", name)
    }
    settings.TASKS = {
        "default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default", name]}
    }
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "TASK_QUEUE": name}
    import django_rq
    from django_tasks_rq import Job

    queue = django_rq.get_queue(name, job_class=Job)
    try:
        yield queue
    finally:
        forget_queue(queue)


def queue_registries(queue: Any) -> list[Any]:
    return [
        queue.started_job_registry,
        queue.finished_job_registry,
        queue.failed_job_registry,
        queue.scheduled_job_registry,
        queue.deferred_job_registry,
        queue.canceled_job_registry,
    ]


def forget_queue(queue: Any) -> None:
    conn = queue.connection
    job_ids = set(queue.get_job_ids())
    for registry in queue_registries(queue):
        job_ids.update(registry.get_job_ids())
    queue.delete(delete_jobs=True)  # also its entry in the set of known queues
    for job_id in job_ids:
        conn.delete(f"rq:job:{job_id}", f"rq:results:{job_id}")
    for key in list(conn.scan_iter(match=f"*{queue.name}*")):
        conn.delete(key)


@dataclass
class RQFleet:
    """``python -m django rqworker`` processes on one RQ queue."""

    rq: Any
    label: str = "RQ"
    settings_module: str = "tests.settings_rq"
    env: dict[str, str] = field(default_factory=lambda: {"PJ_RQ_REDIS_DB": str(REDIS_DB)})

    @property
    def queue(self) -> str:
        return str(self.rq.name)

    @contextlib.contextmanager
    def start(self, count: int, env: dict[str, str], logs: Path) -> Iterator[list[WorkerProcess]]:
        from rq import Worker

        commands = {
            f"{self.queue}-w{n}": [
                sys.executable,
                "-m",
                "django",
                "rqworker",
                "--job-class",
                "django_tasks_rq.Job",
                "--with-scheduler",
                "--name",
                f"{self.queue}-w{n}",
                self.queue,
            ]
            for n in range(count)
        }
        with worker_processes(
            commands, env, logs, lambda _: len(Worker.all(queue=self.rq)) >= count
        ) as workers:
            yield workers

    def failed_tasks(self, workers: list[WorkerProcess]) -> list[str]:
        from rq.job import Job

        ids = self.rq.failed_job_registry.get_job_ids()
        out = []
        for job in Job.fetch_many(ids, connection=self.rq.connection):
            if job is not None:
                result = job.latest_result()
                out.append(f"{job.func_name}{job.args}: {result.exc_string if result else '?'}")
        return out

    def tasks_per_worker(self, workers: list[WorkerProcess]) -> Counter[str]:
        from rq.job import Job

        ids = self.rq.finished_job_registry.get_job_ids()
        jobs = Job.fetch_many(ids, connection=self.rq.connection)
        return Counter(job.worker_name or "?" for job in jobs if job is not None)


def test_two_rq_workers_push_500_documents_once(
    settings: Any, scale_out: Callable[..., ScaleOut]
) -> None:
    with rq_queue(settings) as queue:
        run = scale_out(RQFleet(queue))
    print(run.summary())
