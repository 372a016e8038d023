"""Races: deletes and replacements during an upload, early webhooks, competing workers."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from promptjuggler_django import sync
from promptjuggler_django.client import PromptJugglerClient
from promptjuggler_django.models import (
    KnowledgeDocument,
    RemoteDeletion,
    SyncState,
    WebhookDelivery,
)
from promptjuggler_django.sync import _push as push
from promptjuggler_django.testing import sign_webhook
from tests.sync_support import *  # noqa: F403  (fixtures: pj, kb, …)
from tests.sync_support import make_doc, remote_state, sha


def _claim(ids: list[int]) -> push.Claim:
    claim = push._claim_batch(push._Scope(ids=ids), "default")
    assert claim is not None
    return claim


def _finish(claim: push.Claim, client: PromptJugglerClient) -> push.PushReport:
    """Send and store a batch claimed by hand, in this thread (a worker's step by step)."""
    report = push.PushReport()
    scope = push._Scope()
    results, sendable = push._before_send(client, claim, {}, "default", scope)
    results += push._send(client, claim.knowledge_base, sendable, report, scope)
    push.store_outcomes(claim, results, report, "default")
    return report


@pytest.mark.django_db
def test_a_document_deleted_while_its_upload_is_in_flight(
    pj: Any, kb: Any, hooked_storage: Any, django_capture_on_commit_callbacks: Any
) -> None:
    doc = make_doc(kb, "doomed.txt", b"short-lived")
    hooked_storage.on_read = lambda: KnowledgeDocument.objects.get(pk=doc.pk).delete()
    with django_capture_on_commit_callbacks(execute=True):
        report = sync.push_documents([doc.pk])
    assert report.discarded == 1 and report.synced == 0
    assert pj.request_count("upload") == 1
    assert pj.documents("kb_test") == []  # the fresh copy was deleted after commit
    # The receiver also left a marker (the upload's outcome was open); sync clears it.
    assert sync.run_sync().failing == 0
    assert RemoteDeletion.objects.count() == 0 and pj.documents("kb_test") == []


@pytest.mark.django_db
def test_a_file_replaced_during_its_push(
    pj: Any, kb: Any, hooked_storage: Any, django_capture_on_commit_callbacks: Any
) -> None:
    doc = make_doc(kb, "v1.txt", b"first version")

    def replace() -> None:
        row = KnowledgeDocument.objects.get(pk=doc.pk)
        row.file = ContentFile(b"second version", name="v2.txt")
        row.save()

    hooked_storage.on_read = replace
    with django_capture_on_commit_callbacks(execute=True):
        report = sync.push_documents([doc.pk])  # after commit: the v2 push task runs
    assert report.discarded == 1
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.SYNCED and doc.file_version == 2
    assert remote_state(pj) == {"v2.txt": sha(b"second version")}
    assert pj.document(doc.remote_id).file_name == "v2.txt"
    # The replacement saw an upload in flight and left a marker; the next sync finds no
    # stray copy (the push deleted its own) and drops it.
    assert RemoteDeletion.objects.get().remote_id is None
    assert sync.run_sync().failing == 0
    assert RemoteDeletion.objects.count() == 0
    assert remote_state(pj) == {"v2.txt": sha(b"second version")}


@pytest.mark.django_db
def test_a_webhook_that_arrives_before_the_upload_answer_is_stored(
    pj: Any, kb: Any, django_capture_on_commit_callbacks: Any
) -> None:
    web = Client()
    secret = "whsec_test_primary"

    class EagerWebhooks(PromptJugglerClient):
        """PromptJuggler finishes the documents and the webhooks land before we store."""

        def upload_documents(self, slug: str, files: Any) -> Any:
            answer = super().upload_documents(slug, files)
            for remote in answer:
                pj.finish(remote.id, chunk_count=7)
                body = json.dumps({"id": str(remote.id), "status": "ready", "chunkCount": 7})
                response = web.post(
                    reverse("promptjuggler_django:webhook"),
                    body,
                    content_type="application/json",
                    HTTP_PROMPTJUGGLER_SIGNATURE=sign_webhook(body.encode(), secret),
                )
                assert response.status_code == 200
            return answer

    doc = make_doc(kb, "fast.txt")
    with EagerWebhooks.from_settings() as client, django_capture_on_commit_callbacks(execute=True):
        sync.push_documents([doc.pk], client=client)
    doc.refresh_from_db()
    delivery = WebhookDelivery.objects.get(object_id=str(doc.remote_id))
    assert delivery.replay_count == 1 and delivery.outcome == WebhookDelivery.Outcome.APPLIED
    assert (doc.remote_status, doc.chunk_count) == ("ready", 7)


@pytest.mark.django_db
def test_a_second_worker_skips_rows_the_first_one_holds(pj: Any, kb: Any) -> None:
    docs = [make_doc(kb, f"w{i}.txt") for i in range(3)]
    ids = [d.pk for d in docs]
    claim = _claim(ids)
    assert len(claim.rows) == 3
    other = sync.push_documents(ids)  # worker B, while A is "sending"
    assert other.attempted == 0 and pj.request_count("upload") == 0
    with PromptJugglerClient.from_settings() as client:
        report = _finish(claim, client)
    assert report.synced == 3
    assert len(pj.documents("kb_test")) == 3


@pytest.mark.django_db
def test_a_late_worker_still_stores_an_expired_claim(pj: Any, kb: Any) -> None:
    doc = make_doc(kb, "slow.txt")
    claim = _claim([doc.pk])
    KnowledgeDocument.objects.filter(pk=doc.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    claim.token = timezone.now() - timedelta(seconds=1)  # the lease now on the row
    KnowledgeDocument.objects.filter(pk=doc.pk).update(next_attempt_at=claim.token)
    assert sync.expire_leases() == 1
    with PromptJugglerClient.from_settings() as client:
        report = _finish(claim, client)
    doc.refresh_from_db()
    assert report.synced == 1 and doc.sync_state == SyncState.SYNCED
    assert [d.id for d in pj.documents("kb_test")] == [doc.remote_id]


@pytest.mark.django_db
def test_a_late_worker_whose_row_was_pushed_again_deletes_its_copy(
    pj: Any, kb: Any, django_capture_on_commit_callbacks: Any
) -> None:
    doc = make_doc(kb, "twice.txt")
    late = _claim([doc.pk])
    # Its lease expires; reconcile finds no copy and another worker pushes the row again.
    KnowledgeDocument.objects.filter(pk=doc.pk).update(
        sync_state=SyncState.QUEUED, next_attempt_at=None
    )
    assert sync.push_documents([doc.pk]).synced == 1
    with (
        PromptJugglerClient.from_settings() as client,
        django_capture_on_commit_callbacks(execute=True),
    ):
        report = _finish(late, client)
    assert report.discarded == 1
    doc.refresh_from_db()
    assert [d.id for d in pj.documents("kb_test")] == [doc.remote_id]


@pytest.mark.row_locks
@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_push_each_document_once(pj: Any, kb: Any, settings: Any) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BATCH_MAX_FILES": 4}
    from promptjuggler_django.sync import suppress_sync

    with suppress_sync():
        docs = [make_doc(kb, f"c{i:03}.txt", f"body {i}".encode()) for i in range(60)]
    pj.set_fault("upload", latency=0.02)
    reports: list[push.PushReport] = []
    errors: list[BaseException] = []

    def worker() -> None:
        from django.db import connections

        try:
            reports.append(sync.push_due())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert sum(r.synced for r in reports) == 60
    assert sum(1 for r in reports if r.synced) >= 2  # the work was really shared
    assert len(remote_state(pj)) == 60
    stored = set(KnowledgeDocument.objects.values_list("remote_id", flat=True))
    assert stored == {d.id for d in pj.documents("kb_test")}
    assert len(docs) == 60


def _hold_claim_then(claim: Any, then: Any) -> tuple[list[Any], list[Any]]:
    """Make ``claim()`` in one transaction and keep it open while ``then()`` makes its own
    claim in another; both claims' rows."""
    from django.db import transaction

    held, release = threading.Event(), threading.Event()
    first: list[Any] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                first.extend(claim())
                held.set()
                release.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30), "the first claim did not return"
        with transaction.atomic():
            second = list(then())
    finally:
        release.set()
        holder.join(30)
    return first, second


@pytest.mark.row_locks
@pytest.mark.django_db(transaction=True)
def test_a_claim_holds_only_the_rows_it_takes(kb: Any) -> None:
    """Two claims at once over a few due rows in a larger table take different rows.

    InnoDB (MariaDB, MySQL) locks every row a locking read examines: had the claim been one
    ``SELECT … ORDER BY … LIMIT … FOR UPDATE SKIP LOCKED`` that the optimizer answers with a
    sort, it would hold the whole due set, and a second worker would find nothing to do.
    """
    KnowledgeDocument.objects.bulk_create(
        KnowledgeDocument(
            knowledge_base=kb,
            file=f"s{i}.txt",
            file_name=f"s{i}.txt",
            sync_state=SyncState.SYNCED,
            remote_id=uuid.uuid4(),
        )
        for i in range(400)
    )
    KnowledgeDocument.objects.bulk_create(
        KnowledgeDocument(knowledge_base=kb, file=f"q{i}.txt", file_name=f"q{i}.txt")
        for i in range(12)
    )

    def claim() -> list[KnowledgeDocument]:
        return push._due_rows(push._Scope(), "default", timezone.now(), 4)

    first, second = _hold_claim_then(claim, claim)
    assert len(first) == len(second) == 4
    assert not {row.pk for row in first} & {row.pk for row in second}


@pytest.mark.row_locks
@pytest.mark.django_db(transaction=True)
def test_two_drains_take_different_tombstones_with_their_knowledge_base(kb: Any) -> None:
    """The drain's claim joins the knowledge base: only the tombstones are locked (a second
    drain of the same knowledge base still finds work), and the relation comes loaded."""
    from django.test.utils import CaptureQueriesContext

    from promptjuggler_django.sync._locking import first_unlocked

    RemoteDeletion.objects.bulk_create(
        RemoteDeletion(remote_id=uuid.uuid4(), knowledge_base=kb, knowledge_base_slug=kb.slug)
        for _ in range(10)
    )

    def claim() -> list[RemoteDeletion]:
        qs = RemoteDeletion.objects.select_related("knowledge_base").order_by("pk")
        rows = first_unlocked(qs, "default", 4)
        with CaptureQueriesContext(connection) as queries:
            assert {row.knowledge_base.slug for row in rows} == {kb.slug}
        assert not queries.captured_queries
        return rows

    first, second = _hold_claim_then(claim, claim)
    assert len(first) == len(second) == 4
    assert not {row.pk for row in first} & {row.pk for row in second}
