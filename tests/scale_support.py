"""The scale-out scenario, shared by the tests that run it on real worker processes.

The test process plays the web site: it saves documents (the receivers enqueue push tasks on
the backend's broker), deletes some that are already pushed (tombstones, delete tasks) and
receives the emulator's signed webhooks over HTTP. Two worker processes of the backend do the
pushing and the remote deletes. In the end every surviving document must be ``synced`` and
``ready``, uploaded exactly once, the deleted ones gone remotely, no tombstone left, no task
failed, and both workers must have uploaded documents.

The database is shared by three processes, so the test gives it its own: a SQLite file (WAL,
``BEGIN IMMEDIATE``, a busy timeout) on the default suite, a fresh PostgreSQL or MariaDB
database with ``PJ_TEST_DB=postgres`` or ``mariadb``. The default connection points at it for
the test's duration only.

A backend comes as a :class:`Fleet`: its workers' settings module and environment, how to
start them, and what they report about their tasks. ``tests/test_scale_rq.py`` and
``tests/test_scale_celery.py`` each build one and run it with the :func:`scale_out` fixture.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

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

ROOT = Path(__file__).resolve().parent.parent
KNOWLEDGE_BASES = [f"kb_scale_{k}" for k in range(5)]
WAVES = 10  # transactions of 50 documents, 10 per knowledge base
PER_KB_PER_WAVE = 10
DOCUMENTS = WAVES * PER_KB_PER_WAVE * len(KNOWLEDGE_BASES)
DELETED = 50
CONVERGE_TIMEOUT = 120.0

# httpx logs each request at INFO (tests/settings_scale.py sends it to the worker's stderr).
HTTP_LINE = re.compile(
    r"HTTP Request: (?P<method>POST|DELETE) \S+/api/v1/"
    r"(?:knowledge-bases/[^/\s]+/documents|knowledge-documents/\S+) \"HTTP/1\.1 (?P<status>\d{3})"
)
# tests/scale_worker.py logs each document a worker pushed.
PUSHED_LINE = re.compile(r"promptjuggler_django\.tests\.scale INFO pushed \S+")


def unavailable(reason: str, require: str) -> NoReturn:
    """Skip for a missing service or package; fail instead when ``require`` is set (CI)."""
    if os.environ.get(require):
        pytest.fail(f"{reason} ({require} is set)")
    pytest.skip(f"{reason}; set {require}=1 to make this a failure")


def unique_queue_name() -> str:
    """A queue of the run's own, so concurrent runs (a nox matrix) never take each other's."""
    return f"pj-scale-{uuid.uuid4().hex[:12]}"


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
    documents: int = 0

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 25) -> str:
        text = self.text().splitlines()
        return f"--- {self.name} (exit {self.process.poll()}) ---\n" + "\n".join(text[-lines:])

    def count_requests(self) -> None:
        """Count what PromptJuggler accepted from this worker (its log): upload requests,
        deletes, and the documents the uploads carried."""
        text = self.text()
        for match in HTTP_LINE.finditer(text):
            method, status = match["method"], match["status"]
            if method == "POST" and status == "200":
                self.uploads += 1
            elif method == "DELETE" and status in ("204", "404"):
                self.deletes += 1
        self.documents = len(PUSHED_LINE.findall(text))


@contextlib.contextmanager
def worker_processes(
    commands: dict[str, list[str]],
    env: dict[str, str],
    logs: Path,
    started: Callable[[list[WorkerProcess]], bool],
) -> Iterator[list[WorkerProcess]]:
    """Start one process per ``{name: argv}``; wait until ``started``; stop them all after.

    Each runs in its own process group, so stopping it stops its children (RQ's work horses,
    Celery's pool) too: SIGTERM first (a warm shutdown finishes the task in hand), then
    SIGKILL for whatever is left.
    """
    workers: list[WorkerProcess] = []
    try:
        for name, argv in commands.items():
            log = logs / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            workers.append(WorkerProcess(name, log, process))
        deadline = time.monotonic() + 30
        while not started(workers):
            dead = [w for w in workers if w.process.poll() is not None]
            if dead or time.monotonic() > deadline:
                pytest.fail("workers did not start:\n" + "\n".join(w.tail() for w in workers))
            time.sleep(0.1)
        yield workers
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError):  # whatever is left of its group
                os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait(timeout=5)


class Fleet(Protocol):
    """One Tasks backend's side of the scenario."""

    #: Shown in the summary line, e.g. ``"RQ"``.
    label: str
    #: The workers' ``DJANGO_SETTINGS_MODULE`` (built on ``tests.settings_scale``).
    settings_module: str
    #: The queue the test's settings send the app's tasks to.
    queue: str
    #: Extra environment for the workers (a broker's address, …).
    env: dict[str, str]

    def start(
        self, count: int, env: dict[str, str], logs: Path
    ) -> contextlib.AbstractContextManager[list[WorkerProcess]]:
        """Start ``count`` workers on :attr:`queue`; stop them when the block ends."""

    def failed_tasks(self, workers: list[WorkerProcess]) -> list[str]:
        """A line per task that failed."""

    def tasks_per_worker(self, workers: list[WorkerProcess]) -> Counter[str]:
        """How many tasks each worker finished, by worker name."""


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


@dataclass
class ScaleOut:
    """What a run did, for the test's own assertions and its summary line."""

    fleet: Fleet
    engine: str
    workers: list[WorkerProcess]
    timings: dict[str, float] = field(default_factory=dict)
    upload_requests: int = 0
    refused_uploads: int = 0
    retried_documents: int = 0
    webhooks: int = 0
    per_worker_tasks: Counter[str] = field(default_factory=Counter)

    def documents_per_minute(self) -> list[int]:
        """Documents each worker pushed per minute, from the workers' start to convergence."""
        minutes = (self.timings["converged"] - self.timings["workers up"]) / 60
        return [round(w.documents / minutes) for w in self.workers]

    def summary(self) -> str:
        return (
            f"\nscale-out on {self.fleet.label} ({self.engine}, queue {self.fleet.queue}): "
            + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
            + f"; documents per minute per worker {self.documents_per_minute()}"
            + f"; documents per worker {[w.documents for w in self.workers]}"
            + f", uploads per worker {[w.uploads for w in self.workers]}"
            + f", deletes per worker {[w.deletes for w in self.workers]}"
            + f", upload requests {self.upload_requests} ({self.refused_uploads} refused)"
            + f", documents retried {self.retried_documents}"
            + f", tasks per worker {dict(self.per_worker_tasks)}"
            + f", webhooks {self.webhooks}"
        )


def run_scale_out(
    fleet: Fleet,
    *,
    settings: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    django_db_blocker: Any,
    refused_uploads: int = 0,
) -> ScaleOut:
    """Push 500 documents and delete 50 through two of ``fleet``'s workers; check the end.

    ``refused_uploads``: the emulator answers that many upload requests 503 (nothing stored),
    so their documents retry through deferred tasks that the workers run.
    """
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
        if refused_uploads:
            fake.set_fault("upload", status=503, times=refused_uploads)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": fleet.settings_module,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PJ_SCALE_DATABASE": json.dumps(db),
            "PJ_SCALE_QUEUE": fleet.queue,
            "PJ_SCALE_MEDIA_ROOT": str(media),
            "PJ_SCALE_BASE_URL": fake.url,
            **fleet.env,
        }
        timings["setup"] = time.monotonic() - started
        # Runs once the workers have stopped (the stack unwinds last in, first out).
        stack.callback(lambda: timings.__setitem__("stopped", time.monotonic() - started))
        workers = stack.enter_context(fleet.start(2, env, tmp_path))
        timings["workers up"] = time.monotonic() - started
        run = ScaleOut(fleet, db["ENGINE"].rsplit(".", 1)[-1], workers, timings)

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
            return (
                f"state: {snapshot(fake)}\nfailed tasks: {fleet.failed_tasks(workers)}\n"
                + "\n".join(w.tail() for w in workers)
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
        assert fleet.failed_tasks(workers) == []
        run.per_worker_tasks = fleet.tasks_per_worker(workers)
        assert set(run.per_worker_tasks) == {w.name for w in workers}, run.per_worker_tasks
        assert all(w.uploads > 0 for w in workers), diagnostics
        assert sum(w.documents for w in workers) == DOCUMENTS, diagnostics
        upload_requests = [r for r in fake.requests if r.endpoint == "upload"]
        accepted = [r for r in upload_requests if r.status_code == 200]
        delete_requests = [r for r in fake.requests if r.endpoint == "delete"]
        assert sum(w.uploads for w in workers) == len(accepted), diagnostics
        assert sum(w.deletes for w in workers) == len(delete_requests), diagnostics

        # Every document was uploaded exactly once, whole; the refused requests stored nothing.
        assert len(upload_requests) - len(accepted) == refused_uploads
        assert {r.status_code for r in upload_requests} <= {200, 503}
        sent = Counter(name for r in accepted for name in r.file_names)
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
        run.upload_requests = len(upload_requests)
        run.refused_uploads = len(upload_requests) - len(accepted)
        run.retried_documents = KnowledgeDocument.objects.filter(attempts__gt=1).count()
        run.webhooks = len(fake.webhook_deliveries)

    timings["total"] = time.monotonic() - started
    return run


@pytest.fixture
def scale_out(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, django_db_blocker: Any
) -> Callable[..., ScaleOut]:
    """:func:`run_scale_out` with the test's settings, directory and database access."""
    return functools.partial(
        run_scale_out,
        settings=settings,
        tmp_path=tmp_path,
        monkeypatch=monkeypatch,
        django_db_blocker=django_db_blocker,
    )
