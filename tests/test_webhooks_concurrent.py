"""Concurrent deliveries: no lost update, no deadlock, no 500.

Threads post through the whole Django stack at once (each thread has its own connection, so
the row locks and the unique dedupe key really race). Run with ``PJ_TEST_DB=postgres`` or
``PJ_TEST_DB=mariadb``; SQLite serialises writers, so there these tests skip.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from promptjuggler_django import signals
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, WebhookDelivery

from .webhook_support import (
    NOW,
    document_body,
    fixed_clock,  # noqa: F401  (fixture)
    knowledge_base_body,
    make_documents,
    make_knowledge_base,
    post,
    url,
)

pytestmark = [
    pytest.mark.row_locks,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fixed_clock"),
]

THREADS = 8
TIMEOUT = 60


def run_at_once(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run ``jobs`` on one thread each, released together; every result, or fail on a hang."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def worker(index: int, job: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=TIMEOUT)
            results[index] = job()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=worker, args=(i, job), daemon=True) for i, job in enumerate(jobs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a delivery hung (deadlock?)"
    assert not errors, errors
    return results


def delivery_job(payload: dict, timestamp: int = NOW) -> Callable[[], tuple[int, str]]:
    def job() -> tuple[int, str]:
        response = post(Client(), url(), payload, timestamp=timestamp)
        return response.status_code, response.json()["outcome"]

    return job


@pytest.fixture
def status_changes():
    calls: list[dict] = []
    lock = threading.Lock()

    def receive(sender, **kwargs) -> None:
        with lock:
            calls.append(kwargs)

    signals.document_status_changed.connect(receive, dispatch_uid="pg-test")
    yield calls
    signals.document_status_changed.disconnect(dispatch_uid="pg-test")


def test_the_same_delivery_at_once_applies_once(status_changes) -> None:
    kb = make_knowledge_base()
    (document,) = make_documents(kb, 1)
    job = delivery_job(document_body(document.remote_id, "ready", 6))
    results = run_at_once([job] * THREADS)
    assert Counter(results) == {(200, "applied"): 1, (200, "duplicate"): THREADS - 1}
    delivery = WebhookDelivery.objects.get()
    assert (delivery.outcome, delivery.duplicate_count) == ("applied", THREADS - 1)
    assert len(status_changes) == 1
    document.refresh_from_db()
    assert (document.remote_status, document.chunk_count) == ("ready", 6)


def test_the_same_unknown_delivery_at_once_is_logged_once() -> None:
    job = delivery_job(document_body(uuid.uuid4(), "ready", 1))
    results = run_at_once([job] * THREADS)
    assert Counter(results) == {(200, "unknown_object"): 1, (200, "duplicate"): THREADS - 1}
    assert WebhookDelivery.objects.get().duplicate_count == THREADS - 1


@pytest.mark.parametrize("listening", [False, True], ids=["conditional-update", "locked-read"])
def test_a_document_history_at_once_loses_no_update(
    listening: bool, request: pytest.FixtureRequest
) -> None:
    """Both ways of applying a document event (one conditional update when nobody listens, a
    locked read and an update for a receiver) keep the newest status under concurrency."""
    if listening:
        request.getfixturevalue("status_changes")
    assert signals.document_status_changed.has_listeners(KnowledgeDocument) is listening
    kb = make_knowledge_base()
    (document,) = make_documents(kb, 1)
    history = [("pending", 0, NOW - 3), ("sealed", 4, NOW - 2), ("sealed", 9, NOW - 1)]
    history.append(("ready", 12, NOW))
    jobs = [delivery_job(document_body(document.remote_id, s, c), t) for s, c, t in history]
    jobs = jobs * 2  # each one twice
    random.Random(7).shuffle(jobs)
    results = run_at_once(jobs)
    assert all(status == 200 for status, _ in results), results
    assert Counter(outcome for _, outcome in results)["duplicate"] == len(history)
    document.refresh_from_db()
    assert (document.remote_status, document.chunk_count) == ("ready", 12)
    assert document.status_changed_at.timestamp() == NOW


def test_many_documents_and_their_knowledge_base_at_once() -> None:
    kb = make_knowledge_base(remote_id=uuid.uuid4())
    documents = make_documents(kb, THREADS * 2)
    jobs = []
    for i, document in enumerate(documents):
        jobs.append(delivery_job(document_body(document.remote_id, "sealed", i), NOW - 5))
        jobs.append(delivery_job(document_body(document.remote_id, "ready", i + 1), NOW - 4))
    for offset in range(4):
        body = knowledge_base_body(kb.remote_id, "ready", len(documents), offset)
        jobs.append(delivery_job(body, NOW - offset))
    random.Random(11).shuffle(jobs)
    results = run_at_once(jobs)
    assert {status for status, _ in results} == {200}
    assert Counter(outcome for _, outcome in results)["applied"] >= len(documents) + 1
    for i, document in enumerate(KnowledgeDocument.objects.order_by("pk")):
        assert (document.remote_status, document.chunk_count) == ("ready", i + 1)
    kb = KnowledgeBase.objects.get()
    assert (kb.status, kb.chunk_count, kb.status_changed_at.timestamp()) == ("ready", 0, NOW)
    assert not WebhookDelivery.objects.filter(outcome="error").exists()
