"""Receivers: record work in the user's transaction, enqueue after commit, never call out."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save

from promptjuggler_django import sync
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, RemoteDeletion, SyncState
from promptjuggler_django.sync import _receivers as receivers
from tests.sync_support import *  # noqa: F403  (fixtures: pj, kb, …)
from tests.sync_support import make_doc

pytestmark = pytest.mark.django_db


def enqueued(results: list[Any]) -> list[tuple[str, tuple[Any, ...]]]:
    return [(r.task.name, tuple(r.args)) for r in results]


def synced_doc(kb: KnowledgeBase, name: str = "a.txt", **fields: Any) -> KnowledgeDocument:
    with sync.suppress_sync():
        return make_doc(
            kb,
            name,
            sync_state=SyncState.SYNCED,
            remote_id=uuid.uuid4(),
            remote_status="ready",
            **fields,
        )


def test_new_documents_enqueue_one_push_per_knowledge_base_per_transaction(
    kb: KnowledgeBase, dummy_tasks: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    other = KnowledgeBase.objects.create(slug="kb_other")
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        for i in range(30):
            make_doc(kb if i % 2 else other, f"d{i}.txt")
        assert dummy_tasks == []  # nothing before commit
    assert callbacks  # run at commit...
    assert sorted(enqueued(dummy_tasks)) == [
        ("push_knowledge_base_task", (kb.pk,)),
        ("push_knowledge_base_task", (other.pk,)),
    ]
    assert KnowledgeDocument.objects.filter(sync_state=SyncState.QUEUED).count() == 30


def test_a_rolled_back_savepoint_does_not_lose_the_enqueue(
    kb: KnowledgeBase, dummy_tasks: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        try:
            with transaction.atomic():
                make_doc(kb, "rolled-back.txt")
                raise RuntimeError
        except RuntimeError:
            pass
        make_doc(kb, "kept.txt")
    assert enqueued(dummy_tasks) == [("push_knowledge_base_task", (kb.pk,))]
    assert list(KnowledgeDocument.objects.values_list("file_name", flat=True)) == ["kept.txt"]


def test_rollback_enqueues_nothing(
    kb: KnowledgeBase, dummy_tasks: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        make_doc(kb)
        raise RuntimeError
    assert dummy_tasks == []


def test_pre_save_describes_the_uploaded_file(kb: KnowledgeBase) -> None:
    upload = SimpleUploadedFile(
        "Report 2024.pdf", b"%PDF-1.4 ...", content_type="application/x-whatever"
    )
    doc = KnowledgeDocument.objects.create(knowledge_base=kb, file=upload)
    assert doc.file_name == "Report 2024.pdf"  # the name the user gave, not the storage's
    assert doc.file_size == len(b"%PDF-1.4 ...")
    assert doc.content_type == "application/pdf"  # pinned for supported types
    odd = KnowledgeDocument.objects.create(
        knowledge_base=kb, file=SimpleUploadedFile("x.weird", b"1", content_type="text/x-weird")
    )
    # From the extension, never the declared type: an unknown one is sent as octet-stream.
    assert odd.content_type == "application/octet-stream"
    named = make_doc(kb, "stored.txt", file_name="Shown name.txt")
    assert named.file_name == "Shown name.txt"


def test_saving_other_fields_changes_nothing(
    kb: KnowledgeBase,
    dummy_tasks: list[Any],
    django_capture_on_commit_callbacks: Any,
    django_assert_num_queries: Any,
) -> None:
    doc = synced_doc(kb)
    doc.owner = None
    with django_capture_on_commit_callbacks(execute=True):
        with django_assert_num_queries(1):  # the UPDATE only: no lookup of the stored file
            doc.save(update_fields=["owner"])
        doc.save()
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.SYNCED
    assert dummy_tasks == [] and RemoteDeletion.objects.count() == 0


@pytest.mark.parametrize("update_fields", [None, ["file"]])
def test_a_replaced_file_tombstones_the_old_copy_and_queues_a_push(
    kb: KnowledgeBase,
    dummy_tasks: list[Any],
    django_capture_on_commit_callbacks: Any,
    update_fields: Any,
) -> None:
    doc = synced_doc(kb, "v1.txt")
    old_remote = doc.remote_id
    with django_capture_on_commit_callbacks(execute=True):
        doc.file = SimpleUploadedFile("v2.txt", b"second version")
        doc.save(update_fields=update_fields)
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.QUEUED
    assert doc.remote_id is None and doc.remote_status == ""
    assert doc.file_version == 2
    assert doc.file_name == "v2.txt" and doc.file_size == len(b"second version")
    tomb = RemoteDeletion.objects.get()
    assert (tomb.remote_id, tomb.reason, tomb.knowledge_base_slug) == (
        old_remote,
        "replaced",
        "kb_test",
    )
    assert sorted(enqueued(dummy_tasks)) == [
        ("delete_remote_task", ([tomb.pk],)),
        ("push_knowledge_base_task", (kb.pk,)),
    ]


def test_moving_a_document_to_another_knowledge_base(kb: KnowledgeBase) -> None:
    other = KnowledgeBase.objects.create(slug="kb_other")
    doc = synced_doc(kb)
    old_remote = doc.remote_id
    doc.knowledge_base = other
    doc.save()
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.QUEUED and doc.remote_id is None
    tomb = RemoteDeletion.objects.get()
    assert (tomb.remote_id, tomb.knowledge_base_id, tomb.reason) == (old_remote, kb.pk, "moved")


def test_replacing_a_file_whose_upload_outcome_is_unknown_leaves_a_marker(
    kb: KnowledgeBase,
) -> None:
    doc = make_doc(kb, "first.txt", b"12345")
    KnowledgeDocument.objects.filter(pk=doc.pk).update(
        sync_state=SyncState.NEEDS_REVIEW, attempts=1
    )
    doc.refresh_from_db()
    doc.file = SimpleUploadedFile("second.txt", b"67")
    doc.save()
    marker = RemoteDeletion.objects.get()
    assert marker.remote_id is None
    assert (marker.file_name, marker.file_size, marker.reason) == (
        "first.txt",
        5,
        "unknown_outcome",
    )


def test_delete_writes_a_tombstone_in_the_same_transaction(
    kb: KnowledgeBase, dummy_tasks: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    doc = synced_doc(kb)
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        doc.delete()
        assert RemoteDeletion.objects.filter(remote_id=doc.remote_id).exists()
        raise RuntimeError  # rolled back: the tombstone goes with the delete
    assert RemoteDeletion.objects.count() == 0 and dummy_tasks == []
    doc = KnowledgeDocument.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        doc.delete()
    tomb = RemoteDeletion.objects.get()
    assert (tomb.remote_id, tomb.reason, tomb.file_name) == (doc.remote_id, "deleted", "a.txt")
    assert enqueued(dummy_tasks) == [("delete_remote_task", ([tomb.pk],))]


def test_queryset_delete_tombstones_every_row_and_enqueues_once(
    kb: KnowledgeBase, dummy_tasks: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    docs = [synced_doc(kb, f"q{i}.txt") for i in range(12)]
    with sync.suppress_sync():
        never_pushed = make_doc(kb, "queued.txt")
    with django_capture_on_commit_callbacks(execute=True):
        KnowledgeDocument.objects.all().delete()
    assert set(RemoteDeletion.objects.values_list("remote_id", flat=True)) == {
        d.remote_id for d in docs
    }
    assert never_pushed.remote_id is None  # nothing remote to delete for it
    assert len(dummy_tasks) == 1
    assert sorted(dummy_tasks[0].args[0]) == sorted(
        RemoteDeletion.objects.values_list("pk", flat=True)
    )


def test_cascade_from_a_knowledge_base_keeps_the_slug(
    kb: KnowledgeBase, django_capture_on_commit_callbacks: Any
) -> None:
    docs = [synced_doc(kb, f"c{i}.txt") for i in range(3)]
    with django_capture_on_commit_callbacks(execute=False), transaction.atomic():
        kb.delete()
    tombs = list(RemoteDeletion.objects.all())
    assert {t.remote_id for t in tombs} == {d.remote_id for d in docs}
    assert {(t.knowledge_base_id, t.knowledge_base_slug) for t in tombs} == {(None, "kb_test")}


def test_deleting_knowledge_bases_in_bulk_keeps_their_slugs(
    kb: KnowledgeBase, django_capture_on_commit_callbacks: Any
) -> None:
    """The admin's bulk delete: the tombstones never point at a deleted row, even for a moment
    (MariaDB and MySQL check foreign keys at once, not at commit)."""
    other = KnowledgeBase.objects.create(slug="kb_other")
    docs = [synced_doc(kb, "a.txt"), synced_doc(other, "b.txt")]
    kept = synced_doc(KnowledgeBase.objects.create(slug="kb_kept"), "c.txt")
    with django_capture_on_commit_callbacks(execute=False), transaction.atomic():
        KnowledgeBase.objects.filter(slug__in=["kb_test", "kb_other"]).delete()
    tombs = {
        t.remote_id: (t.knowledge_base_id, t.knowledge_base_slug)
        for t in RemoteDeletion.objects.all()
    }
    assert tombs == {docs[0].remote_id: (None, "kb_test"), docs[1].remote_id: (None, "kb_other")}
    # A document deleted later in another knowledge base keeps its reference.
    kept.delete()
    assert RemoteDeletion.objects.get(remote_id=kept.remote_id).knowledge_base_id is not None


def test_deleting_an_upload_in_flight_leaves_a_marker(kb: KnowledgeBase) -> None:
    doc = make_doc(kb, "flying.txt", b"abc")
    KnowledgeDocument.objects.filter(pk=doc.pk).update(sync_state=SyncState.UPLOADING, attempts=1)
    doc.refresh_from_db()
    doc.delete()
    marker = RemoteDeletion.objects.get()
    assert marker.remote_id is None and (marker.file_name, marker.file_size) == ("flying.txt", 3)


def test_fixture_loading_is_skipped(
    kb: KnowledgeBase,
    dummy_tasks: list[Any],
    tmp_path: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    fixture = tmp_path / "docs.json"
    payload = [
        {
            "model": "promptjuggler_django.knowledgedocument",
            "pk": 500,
            "fields": {
                "knowledge_base": kb.pk,
                "file": "promptjuggler/x.txt",
                "file_version": 1,
                "sync_state": "synced",
                "remote_id": str(uuid.uuid4()),
                "created_at": "2024-01-01T00:00:00Z",
                "updated_at": "2024-01-01T00:00:00Z",
            },
        }
    ]
    fixture.write_text(json.dumps(payload))
    with django_capture_on_commit_callbacks(execute=True):
        call_command("loaddata", str(fixture), verbosity=0)
    doc = KnowledgeDocument.objects.get(pk=500)
    assert doc.file_name == "" and doc.sync_state == SyncState.SYNCED  # untouched
    assert dummy_tasks == []


def test_suppress_sync_skips_receivers(
    kb: KnowledgeBase, dummy_tasks: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    doc = synced_doc(kb)
    with django_capture_on_commit_callbacks(execute=True), sync.suppress_sync():
        make_doc(kb, "quiet.txt")
        doc.delete()
    assert dummy_tasks == [] and RemoteDeletion.objects.count() == 0
    # The new row is still queued: the next promptjuggler_sync or push_queryset pushes it.
    assert KnowledgeDocument.objects.get().sync_state == SyncState.QUEUED


def test_suppress_sync_is_per_thread_and_per_task() -> None:
    seen: dict[str, bool] = {}

    def other_thread() -> None:
        seen["thread"] = sync.sync_suppressed()

    async def task(name: str, suppress: bool) -> None:
        if suppress:
            with sync.suppress_sync():
                await asyncio.sleep(0.01)
                seen[name] = sync.sync_suppressed()
        else:
            await asyncio.sleep(0.005)
            seen[name] = sync.sync_suppressed()

    async def both() -> None:
        await asyncio.gather(task("quiet", True), task("loud", False))

    with sync.suppress_sync():
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
        assert sync.sync_suppressed()
    assert not sync.sync_suppressed()
    asyncio.run(both())
    assert seen == {"thread": False, "quiet": True, "loud": False}


def test_sync_disabled_records_but_enqueues_nothing(
    kb: KnowledgeBase,
    dummy_tasks: list[Any],
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "SYNC_ENABLED": False}
    doc = synced_doc(kb)
    with django_capture_on_commit_callbacks(execute=True):
        make_doc(kb, "later.txt")
        doc.delete()
    assert dummy_tasks == []
    assert RemoteDeletion.objects.count() == 1
    assert KnowledgeDocument.objects.get().sync_state == SyncState.QUEUED


def test_receivers_are_sender_scoped_and_connected_once() -> None:
    receivers.connect()
    receivers.connect()
    for signal, uid in [
        (pre_save, "promptjuggler_document_pre_save"),
        (post_save, "promptjuggler_document_post_save"),
        (post_delete, "promptjuggler_document_post_delete"),
    ]:
        keys = [key for key, *_ in signal.receivers if key[0] == uid]
        assert len(keys) == 1
    assert not post_save.has_listeners(RemoteDeletion) or all(
        key[0] != "promptjuggler_document_post_save"
        for key, *_ in post_save.receivers
        if key[1] == id(RemoteDeletion)
    )


def test_end_to_end_with_the_immediate_backend(
    pj: Any, kb: KnowledgeBase, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        docs = [make_doc(kb, f"e{i}.txt", f"content {i}".encode()) for i in range(5)]
        assert pj.request_count() == 0
    assert pj.request_count("upload") == 1
    for doc in docs:
        doc.refresh_from_db()
    assert {d.sync_state for d in docs} == {SyncState.SYNCED}
    with django_capture_on_commit_callbacks(execute=True):
        docs[0].delete()
        KnowledgeDocument.objects.filter(pk__in=[d.pk for d in docs[1:3]]).delete()
    assert {d.file_name for d in pj.documents("kb_test")} == {"e3.txt", "e4.txt"}
    assert RemoteDeletion.objects.count() == 0
    with django_capture_on_commit_callbacks(execute=True):
        docs[3].file = ContentFile(b"new content", name="e3-v2.txt")
        docs[3].save()
    assert {d.file_name for d in pj.documents("kb_test")} == {"e3-v2.txt", "e4.txt"}
    assert RemoteDeletion.objects.count() == 0


def test_deleting_a_stale_instance_still_tombstones_the_remote_copy(kb: KnowledgeBase) -> None:
    stale = make_doc(kb, "stale.txt")  # loaded before a worker pushed it
    remote_id = uuid.uuid4()
    KnowledgeDocument.objects.filter(pk=stale.pk).update(
        sync_state=SyncState.SYNCED, remote_id=remote_id
    )
    assert stale.remote_id is None
    stale.delete()
    assert RemoteDeletion.objects.get().remote_id == remote_id


def test_deleting_a_row_whose_5xx_may_have_stored_it_leaves_a_marker(kb: KnowledgeBase) -> None:
    doc = make_doc(kb, "maybe.txt", b"abcd")
    KnowledgeDocument.objects.filter(pk=doc.pk).update(sync_state=SyncState.RETRYING, attempts=2)
    KnowledgeDocument.objects.filter(pk=doc.pk).delete()
    marker = RemoteDeletion.objects.get()
    assert marker.remote_id is None and marker.reason == "unknown_outcome"
    never_sent = make_doc(kb, "never.txt")
    never_sent.delete()
    assert RemoteDeletion.objects.count() == 1


def test_a_rolled_back_transaction_leaves_nothing_for_the_next_commit(
    kb: KnowledgeBase, dummy_tasks: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    other = KnowledgeBase.objects.create(slug="kb_other")
    with pytest.raises(RuntimeError), transaction.atomic():
        make_doc(kb, "rolled-back.txt")
        raise RuntimeError
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        make_doc(other, "kept.txt")
    assert enqueued(dummy_tasks) == [("push_knowledge_base_task", (other.pk,))]


def test_a_rolled_back_savepoint_takes_its_tombstones_enqueue_with_it(
    kb: KnowledgeBase, dummy_tasks: list[Any], django_capture_on_commit_callbacks: Any
) -> None:
    kept, dropped = synced_doc(kb, "kept.txt"), synced_doc(kb, "dropped.txt")
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        try:
            with transaction.atomic():
                dropped.delete()
                raise RuntimeError
        except RuntimeError:
            pass
        kept.delete()
    [task] = dummy_tasks
    assert task.args == [list(RemoteDeletion.objects.values_list("pk", flat=True))]
    assert RemoteDeletion.objects.get().remote_id == kept.remote_id
