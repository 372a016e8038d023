"""Scale-out on RQ: two real ``rqworker`` processes, a real Redis, 500 documents.

The test process plays the web site: it saves documents (the receivers enqueue push tasks on
Redis), deletes some that are already pushed (tombstones, delete tasks) and receives the
emulator's signed webhooks over HTTP. Two ``python -m django rqworker`` processes do the
pushing and the remote deletes. In the end every surviving document must be ``synced`` and
``ready``, uploaded exactly once, the deleted ones gone remotely, no tombstone left, no task
failed, and both workers must have uploaded documents.

The database is shared by three processes, so the test gives it its own: a SQLite file (WAL,
``BEGIN IMMEDIATE``, a busy timeout) on the default suite, a fresh PostgreSQL or MariaDB
database with ``PJ_TEST_DB=postgres`` or ``mariadb``. The default connection points at it for
the test's duration only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from django.core.management import call_command
from django.db import connections, transaction
from django.urls import reverse

from promptjuggler_django.models import (
    KnowledgeBase,
    KnowledgeDocument,
    RemoteDeletion,
    SyncState,
)
from promptjuggler_django.testing import FakePromptJuggler

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_DB = 14  # tests/settings_rq.py's default; tests/test_tasks.py uses 15
KNOWLEDGE_BASES = [f"kb_scale_{k}" for k in range(5)]
WAVES = 10  # transactions of 50 documents, 10 per knowledge base
PER_KB_PER_WAVE = 10
DOCUMENTS = WAVES * PER_KB_PER_WAVE * len(KNOWLEDGE_BASES)
DELETED = 50
CONVERGE_TIMEOUT = 120.0

# httpx logs each request at INFO (tests/settings_rq.py sends it to the worker's stderr).
HTTP_LINE = re.compile(
    r"HTTP Request: (?P<method>POST|DELETE) \S+/api/v1/"
    r"(?:knowledge-bases/[^/\s]+/documents|knowledge-documents/\S+) \"HTTP/1\.1 (?P<status>\d{3})"
)


# -- Redis ------------------------------------------------------------------------------------


def redis_or_skip() -> None:
    """Skip unless Redis answers (fail instead with PJ_REQUIRE_REDIS=1)."""
    try:
        import redis

        with redis.Redis(
            host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_connect_timeout=1
        ) as conn:
            conn.ping()
    except Exception as exc:  # ImportError, ConnectionError, …
        reason = (
            f"no Redis at {REDIS_HOST}:{REDIS_PORT} ({type(exc).__name__}); "
            "set PJ_REQUIRE_REDIS=1 to make this a failure"
        )
        if os.environ.get("PJ_REQUIRE_REDIS"):
            pytest.fail(reason)
        pytest.skip(reason)


@contextlib.contextmanager
def rq_queue(settings: Any) -> Iterator[Any]:
    """A queue of its own on Redis database 14, wired into the test's settings; removed after.

    The name is unique per run, so concurrent runs (a nox matrix) never take each other's
    jobs; cleanup deletes this queue's keys only.
    """
    redis_or_skip()
    name = f"pj-scale-{uuid.uuid4().hex[:12]}"
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


def jobs_per_worker(queue: Any) -> Counter[str]:
    from rq.job import Job

    ids = queue.finished_job_registry.get_job_ids()
    jobs = Job.fetch_many(ids, connection=queue.connection)
    return Counter(job.worker_name or "?" for job in jobs if job is not None)


def failed_jobs(queue: Any) -> list[str]:
    from rq.job import Job

    ids = queue.failed_job_registry.get_job_ids()
    out = []
    for job in Job.fetch_many(ids, connection=queue.connection):
        if job is not None:
            result = job.latest_result()
            out.append(f"{job.func_name}{job.args}: {result.exc_string if result else '?'}")
    return out


# -- the shared database ----------------------------------------------------------------------


def dedicated_database_settings(tmp_path: Path) -> dict[str, Any]:
    """``DATABASES["default"]`` for a database the test process and the workers share."""
    base = connections.settings["default"]
    if base["ENGINE"] == "django.db.backends.sqlite3":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(tmp_path / "scale.sqlite3"),
            # Three processes write: WAL lets readers run beside the writer, IMMEDIATE takes
            # the write lock when a transaction starts (a deferred one that read first cannot
            # wait for it and fails at once with "database is locked").
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
            },
        }
    test_name = (base.get("TEST") or {}).get("NAME") or "test_promptjuggler"
    return {
        "ENGINE": base["ENGINE"],
        "NAME": f"{test_name}_scale",
        "USER": base.get("USER", ""),
        "PASSWORD": base.get("PASSWORD", ""),
        "HOST": base.get("HOST", ""),
        "PORT": base.get("PORT", ""),
        "OPTIONS": base.get("OPTIONS", {}),
    }


def _recreate(db: dict[str, Any], *, drop_only: bool = False) -> None:
    """Drop the server database ``db`` names, then (unless ``drop_only``) create it empty."""
    name = db["NAME"]
    if db["ENGINE"] == "django.db.backends.mysql":
        _mysql_admin(db, f"DROP DATABASE IF EXISTS `{name}`")
        if not drop_only:
            _mysql_admin(db, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        return
    _postgres_admin(db, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if not drop_only:
        _postgres_admin(db, f'CREATE DATABASE "{name}"')


def _mysql_admin(db: dict[str, Any], sql: str) -> None:
    import MySQLdb

    conn = MySQLdb.connect(
        host=db["HOST"] or "127.0.0.1",
        port=int(db["PORT"] or 3306),
        user=db["USER"],
        password=db["PASSWORD"] or "",
    )
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


def _postgres_admin(db: dict[str, Any], sql: str) -> None:
    import psycopg

    with psycopg.connect(
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def dedicated_database(db: dict[str, Any], django_db_blocker: Any) -> Iterator[None]:
    """Point the ``default`` alias at ``db`` (created and migrated here) for the block.

    The test suite's own database (in-memory SQLite, or pytest-django's PostgreSQL test
    or MariaDB database) stays open and untouched, and is the default again afterwards.
    """
    from django.contrib.contenttypes.models import ContentType

    server = db["ENGINE"] != "django.db.backends.sqlite3"
    with django_db_blocker.unblock():
        if server:
            _recreate(db)
        saved_settings = connections.settings["default"]
        saved_connection = connections["default"]
        connections.settings["default"] = connections.configure_settings({"default": dict(db)})[
            "default"
        ]
        connections["default"] = connections.create_connection("default")
        ContentType.objects.clear_cache()
        try:
            call_command("migrate", verbosity=0, interactive=False)
            yield
        finally:
            connections["default"].close()
            connections["default"] = saved_connection
            connections.settings["default"] = saved_settings
            ContentType.objects.clear_cache()
            if server:
                _recreate(db, drop_only=True)


# -- the web site: webhooks over HTTP ---------------------------------------------------------


@contextlib.contextmanager
def webhook_site() -> Iterator[str]:
    """Serve the test's URLconf on loopback (threads, one DB connection each); yields its URL."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    class QuietHandler(WSGIRequestHandler):
        # wsgiref writes headers and body separately: with Nagle's algorithm on, each answer
        # on a kept-alive connection waits ~40 ms for the client's delayed ACK.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler, allow_reuse_address=False)
    server.set_app(WSGIHandler())
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- the workers ------------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    name: str
    log: Path
    process: subprocess.Popen[bytes]
    uploads: int = 0
    deletes: int = 0

    def tail(self, lines: int = 25) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return f"--- {self.name} (exit {self.process.poll()}) ---\n" + "\n".join(text[-lines:])

    def count_requests(self) -> None:
        """Count the uploads and deletes PromptJuggler accepted from this worker (its log)."""
        for match in HTTP_LINE.finditer(self.log.read_text(errors="replace")):
            method, status = match["method"], match["status"]
            if method == "POST" and status == "200":
                self.uploads += 1
            elif method == "DELETE" and status in ("204", "404"):
                self.deletes += 1


@contextlib.contextmanager
def rq_workers(
    count: int, queue: Any, env: dict[str, str], logs: Path
) -> Iterator[list[WorkerProcess]]:
    """Start ``count`` ``rqworker`` processes on ``queue``; stop them (and their work horses)."""
    from rq import Worker

    workers: list[WorkerProcess] = []
    try:
        for n in range(count):
            name = f"{queue.name}-w{n}"
            log = logs / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "django",
                        "rqworker",
                        "--job-class",
                        "django_tasks_rq.Job",
                        "--with-scheduler",
                        "--name",
                        name,
                        queue.name,
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: the work horses too
                )
            workers.append(WorkerProcess(name, log, process))
        deadline = time.monotonic() + 30
        while len(Worker.all(queue=queue)) < count:
            dead = [w for w in workers if w.process.poll() is not None]
            if dead or time.monotonic() > deadline:
                pytest.fail("RQ workers did not start:\n" + "\n".join(w.tail() for w in workers))
            time.sleep(0.1)
        yield workers
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)  # warm shutdown: finish the job
        for worker in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError):  # whatever is left of its group
                os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait(timeout=5)


# -- the scenario -----------------------------------------------------------------------------


def content_of(i: int) -> bytes:
    return f"Scale-out document {i:03d}.\n".encode() * (20 + i % 50)


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def delete_synced(count: int) -> list[tuple[int, uuid.UUID, str]]:
    """Delete up to ``count`` pushed documents in one transaction: (pk, remote id, file name)."""
    with transaction.atomic():
        rows = list(
            KnowledgeDocument.objects.filter(sync_state=SyncState.SYNCED)
            .order_by("?")
            .values_list("pk", "remote_id", "file_name")[:count]
        )
        KnowledgeDocument.objects.filter(pk__in=[pk for pk, _, _ in rows]).delete()
    return rows


def snapshot(fake: FakePromptJuggler) -> dict[str, Any]:
    states = Counter(
        f"{s}/{r or '-'}"
        for s, r in KnowledgeDocument.objects.values_list("sync_state", "remote_status")
    )
    return {
        "rows": sum(states.values()),
        "states": dict(states),
        "tombstones": RemoteDeletion.objects.count(),
        "remote": len(fake.documents()),
    }


def converged(snap: dict[str, Any]) -> bool:
    survivors = DOCUMENTS - DELETED
    return (
        snap["rows"] == survivors
        and snap["states"] == {f"{SyncState.SYNCED}/ready": survivors}
        and snap["tombstones"] == 0
        and snap["remote"] == survivors
    )


def test_two_rq_workers_push_500_documents_once(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, django_db_blocker: Any
) -> None:
    started = time.monotonic()
    timings: dict[str, float] = {}
    media = tmp_path / "media"
    media.mkdir()
    monkeypatch.setattr(
        KnowledgeDocument._meta.get_field("file"), "storage", FileSystemStorage(location=media)
    )
    secret = settings.PROMPTJUGGLER["WEBHOOK_SECRETS"][0]
    db = dedicated_database_settings(tmp_path)

    with contextlib.ExitStack() as stack:
        queue = stack.enter_context(rq_queue(settings))
        stack.enter_context(dedicated_database(db, django_db_blocker))
        site = stack.enter_context(webhook_site())
        fake = stack.enter_context(
            FakePromptJuggler(
                settings.PROMPTJUGGLER["API_KEY"],
                knowledge_bases=KNOWLEDGE_BASES,
                processing_delay=0.3,
                webhook_url=site + reverse("promptjuggler_django:webhook"),
                webhook_secret=secret,
            )
        )
        settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BASE_URL": fake.url}
        kbs = [
            KnowledgeBase.objects.create(slug=slug, remote_id=fake.knowledge_base(slug).id)
            for slug in KNOWLEDGE_BASES
        ]
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings_rq",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PJ_RQ_DATABASE": json.dumps(db),
            "PJ_RQ_QUEUE": queue.name,
            "PJ_RQ_REDIS_DB": str(REDIS_DB),
            "PJ_RQ_MEDIA_ROOT": str(media),
            "PJ_RQ_BASE_URL": fake.url,
        }
        timings["setup"] = time.monotonic() - started
        workers = stack.enter_context(rq_workers(2, queue, env, tmp_path))
        timings["workers up"] = time.monotonic() - started

        # The site at work: waves of uploads, and deletes of documents already pushed.
        contents: dict[str, bytes] = {}
        deleted: list[tuple[int, uuid.UUID, str]] = []
        i = 0
        for _wave in range(WAVES):
            with transaction.atomic():
                for kb in kbs:
                    for _ in range(PER_KB_PER_WAVE):
                        name = f"scale-{i:03d}.txt"
                        contents[name] = content_of(i)
                        KnowledgeDocument.objects.create(
                            knowledge_base=kb, file=ContentFile(contents[name], name=name)
                        )
                        i += 1
            deleted += delete_synced(DELETED // WAVES)
            time.sleep(0.2)

        def explain() -> str:
            return f"state: {snapshot(fake)}\nfailed jobs: {failed_jobs(queue)}\n" + "\n".join(
                w.tail() for w in workers
            )

        deadline = time.monotonic() + CONVERGE_TIMEOUT
        while len(deleted) < DELETED and time.monotonic() < deadline:
            if any(w.process.poll() is not None for w in workers):
                break
            deleted += delete_synced(DELETED - len(deleted))
            time.sleep(0.1)
        assert len(deleted) == DELETED, explain()
        timings["saved"] = time.monotonic() - started

        snap = snapshot(fake)
        while not converged(snap) and time.monotonic() < deadline:
            if any(w.process.poll() is not None for w in workers):
                break
            time.sleep(0.25)
            snap = snapshot(fake)
        timings["converged"] = time.monotonic() - started
        for worker in workers:
            worker.count_requests()
        diagnostics = explain()
        assert converged(snap), diagnostics
        fake.wait_for_processing(timeout=10)

        # No task failed; both workers ran tasks and uploaded documents.
        assert failed_jobs(queue) == []
        per_worker_jobs = jobs_per_worker(queue)
        assert set(per_worker_jobs) == {w.name for w in workers}, per_worker_jobs
        assert all(w.uploads > 0 for w in workers), diagnostics
        upload_requests = [r for r in fake.requests if r.endpoint == "upload"]
        delete_requests = [r for r in fake.requests if r.endpoint == "delete"]
        assert sum(w.uploads for w in workers) == len(upload_requests), diagnostics
        assert sum(w.deletes for w in workers) == len(delete_requests), diagnostics

        # Every document was uploaded exactly once, whole.
        assert {r.status_code for r in upload_requests} == {200}
        sent = Counter(name for r in upload_requests for name in r.file_names)
        assert sent == Counter(contents.keys()), [n for n, c in sent.items() if c != 1]
        # Deleted ones are gone remotely (one DELETE each); the rest are mirrored, no orphan.
        assert sorted(r.status_code for r in delete_requests) == [204] * DELETED
        assert all(fake.document(remote_id) is None for _, remote_id, _ in deleted)
        gone = {name for _, _, name in deleted}
        for kb in kbs:
            rows = {d.file_name: d for d in KnowledgeDocument.objects.filter(knowledge_base=kb)}
            remote = {d.file_name: d for d in fake.documents(kb.slug)}
            assert len(remote) == len(fake.documents(kb.slug)), "duplicate remote documents"
            assert set(remote) == set(rows)
            assert not gone & set(rows)
            for name, row in rows.items():
                assert remote[name].id == row.remote_id
                assert remote[name].sha256 == sha(contents[name])
                assert (row.remote_status, row.chunk_count) == ("ready", remote[name].chunk_count)
        assert not RemoteDeletion.objects.exists()
        assert all(d.ok for d in fake.webhook_deliveries)

    timings["total"] = time.monotonic() - started
    print(
        f"\nscale-out on RQ ({db['ENGINE'].rsplit('.', 1)[-1]}, queue {queue.name}): "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        + f"; uploads per worker {[w.uploads for w in workers]}"
        + f", deletes per worker {[w.deletes for w in workers]}"
        + f", upload requests {len(upload_requests)}, jobs per worker {dict(per_worker_jobs)}"
        + f", webhooks {len(fake.webhook_deliveries)}"
    )
