"""Refresh, reconcile and the promptjuggler_sync command."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from promptjuggler_django import signals, sync
from promptjuggler_django.client import PromptJugglerClient
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, RemoteDeletion, SyncState
from tests.sync_support import *  # noqa: F403  (fixtures: pj, kb, …)
from tests.sync_support import make_doc, remote_state

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("promptjuggler_sync", *args, stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def pushed(kb: KnowledgeBase, *names: str) -> list[KnowledgeDocument]:
    docs = [make_doc(kb, n, f"content of {n}".encode()) for n in names]
    sync.push_documents([d.pk for d in docs])
    for d in docs:
        d.refresh_from_db()
        assert d.sync_state == SyncState.SYNCED
    return docs


def test_refresh_learns_the_knowledge_base_and_polls_statuses(
    pj: Any, kb: Any, django_capture_on_commit_callbacks: Any
) -> None:
    a, b = pushed(kb, "a.txt", "b.txt")
    pj.finish(a.remote_id)  # no webhook URL configured: only polling can tell
    pj.seal(b.remote_id)
    changes: list[tuple[str, str]] = []

    def on_change(sender: Any, old_status: str, new_status: str, **kw: Any) -> None:
        changes.append((old_status, new_status))

    signals.document_status_changed.connect(on_change, dispatch_uid="t-poll")
    try:
        with (
            PromptJugglerClient.from_settings() as client,
            django_capture_on_commit_callbacks(execute=True),
        ):
            report = sync.refresh_knowledge_base(kb, client=client)
    finally:
        signals.document_status_changed.disconnect(dispatch_uid="t-poll")
    assert pj.request_count("get_knowledge_base") == 1
    assert report.status_changes == 2 and not report.missing and not report.orphans
    kb.refresh_from_db()
    remote_kb = pj.knowledge_base("kb_test")
    assert kb.remote_id == remote_kb.id and kb.status == remote_kb.status
    assert kb.document_count == 2 and kb.last_synced_at is not None
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.remote_status, b.remote_status) == ("ready", "sealed")
    assert sorted(changes) == [("pending", "ready"), ("pending", "sealed")]


def test_refresh_documents_makes_one_get_per_knowledge_base(pj: Any, kb: Any) -> None:
    pj.create_knowledge_base("kb_two")
    two = KnowledgeBase.objects.create(slug="kb_two")
    docs = pushed(kb, "a.txt", "b.txt") + pushed(two, "c.txt")
    pj.finish()
    before = pj.request_count("get_knowledge_base")
    assert sync.refresh_documents(KnowledgeDocument.objects.all()) == 3
    assert pj.request_count("get_knowledge_base") - before == 2
    assert {KnowledgeDocument.objects.get(pk=d.pk).remote_status for d in docs} == {"ready"}


def test_a_document_deleted_remotely_is_pushed_again(pj: Any, kb: Any) -> None:
    _, lost = pushed(kb, "keep.txt", "lost.txt")
    with PromptJugglerClient.from_settings() as client:
        client.delete_document(lost.remote_id)
    code, out = run()
    assert code == 0, out
    lost.refresh_from_db()
    assert lost.sync_state == SyncState.SYNCED
    assert set(remote_state(pj)) == {"keep.txt", "lost.txt"}
    assert pj.document(lost.remote_id) is not None
    assert "1 missing remotely were pushed again" in out


def test_orphans_are_reported_then_deleted_on_request(pj: Any, kb: Any) -> None:
    pushed(kb, "mine.txt")
    stranger = pj.add_document("kb_test", "stranger.txt", b"not ours")
    code, out = run()
    assert code == 0
    assert f"orphan kb_test: stranger.txt ({stranger.id})" in out
    assert pj.document(stranger.id) is not None
    code, out = run("--delete-orphans")
    assert code == 0
    assert pj.document(stranger.id) is None
    assert set(remote_state(pj)) == {"mine.txt"}
    assert RemoteDeletion.objects.count() == 0


def test_needs_review_adopts_the_remote_copy(pj: Any, kb: Any, settings: Any) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "READ_TIMEOUT": 0.5}
    doc = make_doc(kb, "unsure.txt", b"payload")
    pj.set_fault("upload", read_timeout=2, after_effect=True, times=1)
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.NEEDS_REVIEW
    code, out = run()
    assert code == 0, out
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.SYNCED
    assert [d.id for d in pj.documents("kb_test")] == [doc.remote_id]
    assert pj.request_count("upload") == 1  # adopted, not uploaded twice


def test_needs_review_without_a_remote_copy_is_pushed_again(pj: Any, kb: Any) -> None:
    doc = make_doc(kb, "lost.txt", b"payload")
    pj.set_fault("upload", reset=True, times=1)  # no effect: nothing was created
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.NEEDS_REVIEW
    code, _ = run()
    assert code == 0
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.SYNCED
    assert set(remote_state(pj)) == {"lost.txt"}


def test_adoption_needs_the_same_size(pj: Any, kb: Any) -> None:
    doc = make_doc(kb, "same-name.txt", b"12345")
    KnowledgeDocument.objects.filter(pk=doc.pk).update(
        sync_state=SyncState.NEEDS_REVIEW, attempts=1
    )
    other = pj.add_document("kb_test", "same-name.txt", b"1234")  # same name, other size
    run("--delete-orphans")
    doc.refresh_from_db()
    assert doc.remote_id != other.id and doc.sync_state == SyncState.SYNCED
    assert pj.document(other.id) is None


def test_an_upload_in_flight_is_never_taken_for_an_orphan(pj: Any, kb: Any) -> None:
    flying = make_doc(kb, "flying.txt", b"abc")
    KnowledgeDocument.objects.filter(pk=flying.pk).update(
        sync_state=SyncState.UPLOADING, next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    remote = pj.add_document("kb_test", "flying.txt", b"abc")  # its answer is not stored yet
    code, out = run("--delete-orphans")
    assert code == 0, out
    assert pj.document(remote.id) is not None
    assert "Orphans (remote documents no row knows): 0" in out


def test_a_deleted_row_with_an_unknown_outcome_gets_its_copy_deleted(
    pj: Any, kb: Any, settings: Any
) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "READ_TIMEOUT": 0.5}
    doc = make_doc(kb, "ghost.txt", b"boo")
    pj.set_fault("upload", read_timeout=2, after_effect=True, times=1)
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.NEEDS_REVIEW
    doc.delete()
    assert RemoteDeletion.objects.get().remote_id is None
    assert len(pj.documents("kb_test")) == 1
    code, out = run()  # no --delete-orphans needed: the app knows this copy is its own
    assert code == 0, out
    assert pj.documents("kb_test") == []
    assert RemoteDeletion.objects.count() == 0


def test_markers_of_a_deleted_knowledge_base_are_resolved_by_slug(pj: Any, kb: Any) -> None:
    doc = make_doc(kb, "orphaned.txt", b"zz")
    KnowledgeDocument.objects.filter(pk=doc.pk).update(
        sync_state=SyncState.NEEDS_REVIEW, attempts=1
    )
    pj.add_document("kb_test", "orphaned.txt", b"zz")  # the unknown outcome did land
    kb.delete()
    marker = RemoteDeletion.objects.get()
    assert marker.knowledge_base_id is None and marker.remote_id is None
    code, out = run()
    assert code == 0, out
    assert pj.documents("kb_test") == [] and RemoteDeletion.objects.count() == 0


def test_dry_run_changes_nothing(pj: Any, kb: Any) -> None:
    doc = make_doc(kb, "later.txt")
    pj.add_document("kb_test", "stranger.txt", b"x")
    tomb = RemoteDeletion.objects.create(remote_id=uuid.uuid4(), knowledge_base=kb)
    code, out = run("--dry-run", "--delete-orphans")
    assert code == 0, out
    assert "Dry run: 1 document(s) due to push, 1 remote deletion(s) due." in out
    assert "1 would be deleted" in out
    assert pj.request_count("upload") == 0 and pj.request_count("delete") == 0
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.QUEUED
    assert RemoteDeletion.objects.filter(pk=tomb.pk).exists()
    assert KnowledgeBase.objects.get(pk=kb.pk).remote_id is None


def test_the_command_fails_when_work_is_left_failing(pj: Any, kb: Any) -> None:
    doc = make_doc(kb, "bad.png", b"\x89PNG")
    code, out = run()
    assert code == 1
    assert "1 failed" in out and "left failing" in out
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.FAILED
    sync.push_again(KnowledgeDocument.objects.filter(pk=doc.pk))
    doc.delete()
    assert run()[0] == 0


def test_the_command_scopes_to_one_knowledge_base(pj: Any, kb: Any) -> None:
    pj.create_knowledge_base("kb_two")
    two = KnowledgeBase.objects.create(slug="kb_two")
    make_doc(kb, "one.txt")
    make_doc(two, "two.txt")
    code, _ = run("--knowledge-base", "kb_two")
    assert code == 0
    assert set(remote_state(pj, "kb_two")) == {"two.txt"}
    assert pj.documents("kb_test") == []
    assert pj.request_count("get_knowledge_base") == 1
    with pytest.raises(CommandError, match="No knowledge base"):
        call_command("promptjuggler_sync", "--knowledge-base", "kb_nope", stdout=io.StringIO())


def test_progress_line_only_on_a_terminal(pj: Any, kb: Any) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    for i in range(3):
        make_doc(kb, f"p{i}.txt")
    tty = Tty()
    call_command("promptjuggler_sync", stdout=tty)
    assert "\rpush" in tty.getvalue() and "3/3" in tty.getvalue()
    plain = io.StringIO()
    call_command("promptjuggler_sync", stdout=plain)
    assert "\r" not in plain.getvalue()


def test_run_sync_pushes_retrying_rows_once_due(pj: Any, kb: Any) -> None:
    doc = make_doc(kb, "r.txt")
    pj.set_fault("upload", status=500, times=1)
    summary = sync.run_sync()
    # Retrying is work that finishes by itself: it does not fail the command.
    assert summary.retrying == 1 and summary.failing == 0
    KnowledgeDocument.objects.filter(pk=doc.pk).update(next_attempt_at=timezone.now())
    summary = sync.run_sync()
    assert summary.failing == 0
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.SYNCED
