"""The push: batching, answers mapped to rows, failure classification, signals."""

from __future__ import annotations

import socket
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from promptjuggler_django import signals, sync
from promptjuggler_django.client import PromptJugglerClient, RemoteDocument
from promptjuggler_django.models import KnowledgeDocument, RemoteDeletion, SyncState
from promptjuggler_django.sync._push import match_answer
from tests.sync_support import *  # noqa: F403  (fixtures: pj, kb, …)
from tests.sync_support import make_doc, remote_state, sha

pytestmark = pytest.mark.django_db


def states(*docs: KnowledgeDocument) -> list[str]:
    return [KnowledgeDocument.objects.get(pk=d.pk).sync_state for d in docs]


def test_push_stores_remote_id_status_and_counts(pj: Any, kb: Any) -> None:
    doc = make_doc(kb, "notes.md", b"# Notes\n" * 300)
    report = sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert (report.synced, report.requests) == (1, 1)
    remote = pj.document(doc.remote_id)
    assert remote is not None
    assert remote.file_name == "notes.md"
    assert remote.sha256 == sha(b"# Notes\n" * 300)
    assert remote.declared_content_type == "text/markdown"
    assert doc.sync_state == SyncState.SYNCED
    assert doc.remote_status == "pending"
    assert doc.chunk_count == remote.chunk_count
    assert doc.pushed_at is not None and doc.attempts == 1 and doc.last_error == ""
    assert doc.file_name == "notes.md" and doc.file_size == len(b"# Notes\n" * 300)


def test_push_is_idempotent(pj: Any, kb: Any) -> None:
    doc = make_doc(kb)
    sync.push_documents([doc.pk])
    again = sync.push_documents([doc.pk, 987654])  # a pushed row and a missing one: no-ops
    assert again.attempted == 0 and again.requests == 0
    assert len(pj.documents("kb_test")) == 1


def test_batches_are_bounded_by_files_and_bytes(pj: Any, kb: Any, settings: Any) -> None:
    settings.PROMPTJUGGLER = {
        **settings.PROMPTJUGGLER,
        "BATCH_MAX_FILES": 3,
        "BATCH_MAX_BYTES": 250,
    }
    docs = [make_doc(kb, f"f{i}.txt", b"x" * 100) for i in range(7)]
    report = sync.push_due()
    assert report.synced == 7
    # 100-byte files, at most 250 bytes per request: two per request.
    assert report.requests == 4
    sizes = [len(r.file_names) for r in pj.requests if r.endpoint == "upload"]
    assert sizes == [2, 2, 2, 1]
    assert set(states(*docs)) == {SyncState.SYNCED}


def test_a_file_larger_than_the_byte_limit_goes_alone(pj: Any, kb: Any, settings: Any) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BATCH_MAX_BYTES": 10}
    make_doc(kb, "big.txt", b"y" * 50)
    make_doc(kb, "small.txt", b"z")
    assert sync.push_due().requests == 2


def test_batches_never_mix_knowledge_bases(pj: Any, kb: Any) -> None:
    from promptjuggler_django.models import KnowledgeBase

    pj.create_knowledge_base("kb_other")
    other = KnowledgeBase.objects.create(slug="kb_other")
    make_doc(kb, "a.txt")
    make_doc(other, "b.txt")
    make_doc(kb, "c.txt")
    report = sync.push_due()
    assert report.requests == 2
    assert set(remote_state(pj, "kb_test")) == {"a.txt", "c.txt"}
    assert set(remote_state(pj, "kb_other")) == {"b.txt"}


def test_a_422_batch_is_isolated_file_by_file(pj: Any, kb: Any) -> None:
    good = [make_doc(kb, f"ok{i}.txt") for i in range(3)]
    bad = make_doc(kb, "image.png", b"\x89PNG")
    report = sync.push_due()
    assert report.requests == 1 + 4  # the batch, then each file alone
    bad.refresh_from_db()
    assert bad.sync_state == SyncState.FAILED
    assert "png" in bad.last_error.lower() or "support" in bad.last_error.lower()
    assert set(states(*good)) == {SyncState.SYNCED}
    assert set(remote_state(pj)) == {"ok0.txt", "ok1.txt", "ok2.txt"}


def test_answers_are_mapped_by_position_and_name() -> None:
    rows = [
        KnowledgeDocument(pk=i, file_name=n, file_size=s)
        for i, (n, s) in enumerate([("a.txt", 1), ("b.txt", 2), ("a.txt", 3)])
    ]

    def remote(name: str, size: int) -> RemoteDocument:
        return RemoteDocument(id=uuid.uuid4(), status="pending", file_name=name, bytes=size)

    in_order = [remote("a.txt", 1), remote("b.txt", 2), remote("a.txt", 3)]
    assert [r.remote for r in match_answer(rows, in_order)] == in_order
    shuffled = [in_order[1], in_order[0], in_order[2]]
    got = [r.remote for r in match_answer(rows, shuffled)]
    assert got[1] is in_order[1]  # b.txt found by name despite its position
    assert {got[0].file_name, got[2].file_name} == {"a.txt"}
    short = match_answer(rows, [in_order[1]])
    assert [r.kind for r in short] == ["needs_review", "synced", "needs_review"]
    renamed = [remote("a_1.txt", 1), remote("b_1.txt", 2), remote("a_2.txt", 3)]
    assert [r.remote for r in match_answer(rows, renamed)] == renamed  # position, sizes agree
    wrong_sizes = [remote("x.txt", 9), remote("y.txt", 9), remote("z.txt", 9)]
    assert {r.kind for r in match_answer(rows, wrong_sizes)} == {"needs_review"}


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_retry_with_backoff(pj: Any, kb: Any, status: int) -> None:
    doc = make_doc(kb)
    pj.set_fault("upload", status=status, times=1)
    before = timezone.now()
    report = sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert report.retrying == 1
    assert doc.sync_state == SyncState.RETRYING
    assert str(status) in doc.last_error
    assert doc.next_attempt_at is not None and doc.next_attempt_at > before
    assert pj.documents("kb_test") == []


def test_retry_after_is_honoured(pj: Any, kb: Any) -> None:
    doc = make_doc(kb)
    pj.set_fault("upload", status=429, retry_after=120, times=1)
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.RETRYING
    assert doc.next_attempt_at - timezone.now() > timedelta(seconds=100)
    # Not due yet: another push leaves it alone.
    assert sync.push_due().attempted == 0


def test_a_knowledge_base_answering_429_is_left_alone_for_the_run(
    pj: Any, kb: Any, settings: Any
) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BATCH_MAX_FILES": 1}
    for i in range(5):
        make_doc(kb, f"d{i}.txt")
    pj.set_fault("upload", status=429, retry_after=30)
    report = sync.push_due()
    assert report.requests == 1  # no hammering after the first 429
    assert KnowledgeDocument.objects.filter(sync_state=SyncState.QUEUED).count() == 4


def test_retries_then_gives_up_after_max_attempts(
    pj: Any, kb: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "PUSH_MAX_ATTEMPTS": 3}
    doc = make_doc(kb)
    failures: list[dict[str, Any]] = []

    def on_failed(sender: Any, **kwargs: Any) -> None:
        failures.append(kwargs)

    signals.upload_failed.connect(on_failed, dispatch_uid="t-failed")
    pj.set_fault("upload", status=503)
    try:
        for _ in range(3):
            KnowledgeDocument.objects.filter(pk=doc.pk).update(next_attempt_at=None)
            with django_capture_on_commit_callbacks(execute=True):
                sync.push_documents([doc.pk])
    finally:
        signals.upload_failed.disconnect(dispatch_uid="t-failed")
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.FAILED
    assert doc.attempts == 3
    assert doc.last_error.startswith("Gave up after 3 attempts")
    assert len(failures) == 1 and failures[0]["document"].pk == doc.pk


def test_a_definite_4xx_for_a_file_fails_with_the_api_message(pj: Any, kb: Any) -> None:
    # A refusal of the knowledge base as a whole blocks it instead (tests/test_sync_blocked.py).
    doc = make_doc(kb, "image.png", b"\x89PNG")
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.FAILED
    assert doc.last_error.startswith("Unsupported file type: image.png.")


@pytest.mark.parametrize("fault", [{"read_timeout": 3}, {"reset": True}])
def test_outcome_unknown_means_needs_review(pj: Any, kb: Any, settings: Any, fault: Any) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "READ_TIMEOUT": 0.5}
    doc = make_doc(kb)
    pj.set_fault("upload", after_effect=True, times=1, **fault)
    report = sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert report.needs_review == 1
    assert doc.sync_state == SyncState.NEEDS_REVIEW
    assert doc.remote_id is None
    assert len(pj.documents("kb_test")) == 1  # created, though we could not know


def test_a_retry_adopts_the_copy_a_failed_attempt_created(pj: Any, kb: Any) -> None:
    doc = make_doc(kb, "report.txt", b"quarterly")
    pj.set_fault("upload", status=502, after_effect=True, times=1)
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.RETRYING
    KnowledgeDocument.objects.filter(pk=doc.pk).update(next_attempt_at=None)
    report = sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert (report.adopted, report.requests) == (1, 0)
    assert doc.sync_state == SyncState.SYNCED
    assert [d.id for d in pj.documents("kb_test")] == [doc.remote_id]


def test_a_missing_file_fails_without_blocking_the_batch(pj: Any, kb: Any) -> None:
    gone = make_doc(kb, "gone.txt")
    ok = make_doc(kb, "ok.txt")
    gone.file.storage.delete(gone.file.name)
    KnowledgeDocument.objects.filter(pk=gone.pk).update(file_size=None)
    sync.push_due()
    gone.refresh_from_db()
    assert gone.sync_state == SyncState.FAILED
    assert "missing" in gone.last_error
    assert states(ok) == [SyncState.SYNCED]


def test_a_file_that_vanishes_mid_batch_blames_only_itself(pj: Any, kb: Any) -> None:
    first = make_doc(kb, "first.txt")
    gone = make_doc(kb, "gone.txt")  # size recorded, so the batch is sent before it is read
    gone.file.storage.delete(gone.file.name)
    report = sync.push_due()
    gone.refresh_from_db()
    assert gone.sync_state == SyncState.FAILED and "not found" in gone.last_error
    assert states(first) == [SyncState.SYNCED]
    assert report.requeued == 1 and report.requests == 2


def test_signals_are_sent_after_commit(
    pj: Any, kb: Any, django_capture_on_commit_callbacks: Any
) -> None:
    got: list[Any] = []

    def on_success(sender: Any, document: Any, remote_document: Any, **kw: Any) -> None:
        got.append((document.pk, remote_document.id, transaction.get_connection().in_atomic_block))

    signals.upload_succeeded.connect(on_success, dispatch_uid="t-success")
    try:
        doc = make_doc(kb)
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            sync.push_documents([doc.pk])
        assert got == []  # not before commit
        for callback in callbacks:
            callback()
    finally:
        signals.upload_succeeded.disconnect(dispatch_uid="t-success")
    doc.refresh_from_db()
    assert [(pk, rid) for pk, rid, _ in got] == [(doc.pk, doc.remote_id)]


def test_no_remote_call_happens_inside_the_users_transaction(
    pj: Any, kb: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        with transaction.atomic():
            make_doc(kb, "x.txt")
            make_doc(kb, "y.txt")
            assert pj.request_count() == 0
        assert pj.request_count() == 0


def test_a_rolled_back_save_sends_nothing(
    pj: Any, kb: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        make_doc(kb, "x.txt")
        raise RuntimeError
    assert callbacks == []
    assert pj.request_count() == 0


def test_expired_lease_moves_to_needs_review(pj: Any, kb: Any) -> None:
    doc = make_doc(kb)
    KnowledgeDocument.objects.filter(pk=doc.pk).update(
        sync_state=SyncState.UPLOADING, next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    assert sync.expire_leases() == 1
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.NEEDS_REVIEW
    assert "lease" in doc.last_error


def test_client_can_be_shared(pj: Any, kb: Any) -> None:
    docs = [make_doc(kb, f"s{i}.txt") for i in range(3)]
    with PromptJugglerClient.from_settings() as client:
        report = sync.push_due(client=client)
        assert report.synced == 3
    assert set(states(*docs)) == {SyncState.SYNCED}
    assert RemoteDeletion.objects.count() == 0


@pytest.mark.parametrize("signal_name", ["upload_succeeded", "remote_deleted"])
def test_a_failing_receiver_of_an_engine_signal_stops_nothing(
    pj: Any, kb: Any, caplog: Any, signal_name: str, django_capture_on_commit_callbacks: Any
) -> None:
    signal = getattr(signals, signal_name)
    received: list[str] = []

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    def working(**kwargs: Any) -> None:
        received.append(signal_name)

    signal.connect(broken, dispatch_uid="broken-first")
    signal.connect(working, dispatch_uid="working-second")
    try:
        doc = make_doc(kb)
        with django_capture_on_commit_callbacks(execute=True):
            sync.push_documents([doc.pk])
        doc.delete()
        with django_capture_on_commit_callbacks(execute=True):
            sync.drain_tombstones()
    finally:
        signal.disconnect(dispatch_uid="broken-first")
        signal.disconnect(dispatch_uid="working-second")
    assert received == [signal_name]
    assert KnowledgeDocument.objects.filter(pk=doc.pk).exists() is False
    assert RemoteDeletion.objects.count() == 0  # the drain finished despite the receiver
    # Logged once, by Django's send_robust, to django.dispatch.
    logged = [r for r in caplog.records if "receiver bug" in str(r.exc_info)]
    assert [r.name for r in logged] == ["django.dispatch"]


def test_an_unreachable_base_url_is_named_in_last_error(kb: Any, settings: Any) -> None:
    """ "Connection refused" alone does not say whether PromptJuggler is down or BASE_URL wrong."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    settings.PROMPTJUGGLER = {
        **settings.PROMPTJUGGLER,
        "BASE_URL": f"http://127.0.0.1:{port}",
        "RETRY_BACKOFF": 0.001,
        "RETRY_BACKOFF_MAX": 0.001,
    }
    doc = make_doc(kb)
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.RETRYING
    assert f"could not connect to 127.0.0.1:{port} (BASE_URL): Connection refused" in (
        doc.last_error
    )
    assert settings.PROMPTJUGGLER["API_KEY"] not in doc.last_error
