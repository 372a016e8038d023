import uuid
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import InMemoryStorage
from django.db import IntegrityError, connection
from django.utils import timezone

from promptjuggler_django.models import (
    KnowledgeBase,
    KnowledgeDocument,
    RemoteDeletion,
    SyncState,
    WebhookDelivery,
    document_storage,
    document_upload_to,
)
from promptjuggler_django.sync import suppress_sync

pytestmark = pytest.mark.django_db


@pytest.fixture
def kb():
    return KnowledgeBase.objects.create(slug="kb_models")


def make_doc(kb, name="a.txt", **fields):
    with suppress_sync():
        return KnowledgeDocument.objects.create(
            knowledge_base=kb, file=ContentFile(b"hello", name=name), **fields
        )


def test_document_defaults(kb):
    doc = make_doc(kb)
    assert doc.sync_state == SyncState.QUEUED
    assert doc.remote_id is None
    assert doc.remote_status == ""
    assert doc.attempts == 0
    assert doc.file.read() == b"hello"


def test_upload_path_uses_strftime_setting(kb, settings):
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "UPLOAD_TO": "docs/%Y/"}
    path = document_upload_to(KnowledgeDocument(knowledge_base=kb), "dir/report.pdf")
    assert path == f"docs/{timezone.now():%Y}/report.pdf"


def test_upload_path_accepts_a_callable(kb, settings):
    settings.PROMPTJUGGLER = {
        **settings.PROMPTJUGGLER,
        "UPLOAD_TO": lambda instance, filename: f"kb/{instance.knowledge_base.slug}/{filename}",
    }
    doc = make_doc(kb, name="x.md")
    assert doc.file.name.startswith("kb/kb_models/x")


def test_storage_is_configurable(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "documents": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "STORAGE": "documents"}
    from django.core.files.storage import storages

    assert document_storage() is storages["documents"]
    assert isinstance(document_storage(), InMemoryStorage)


def test_remote_id_is_unique(kb):
    rid = uuid.uuid4()
    make_doc(kb, remote_id=rid)
    with pytest.raises(IntegrityError):
        make_doc(kb, name="b.txt", remote_id=rid)


def test_due_selects_queued_and_retrying_whose_time_came(kb):
    now = timezone.now()
    queued = make_doc(kb)
    later = make_doc(kb, sync_state=SyncState.RETRYING, next_attempt_at=now + timedelta(hours=1))
    ready = make_doc(kb, sync_state=SyncState.RETRYING, next_attempt_at=now - timedelta(seconds=1))
    make_doc(kb, sync_state=SyncState.SYNCED)
    make_doc(kb, sync_state=SyncState.FAILED)
    due = set(KnowledgeDocument.objects.due(now))
    assert due == {queued, ready}
    assert later not in due


def test_in_flight_excludes_terminal_statuses(kb):
    pending = make_doc(kb, sync_state=SyncState.SYNCED, remote_status="pending")
    sealed = make_doc(kb, sync_state=SyncState.SYNCED, remote_status="sealed")
    odd = make_doc(kb, sync_state=SyncState.SYNCED, remote_status="brand-new-status")
    make_doc(kb, sync_state=SyncState.SYNCED, remote_status="ready")
    make_doc(kb, sync_state=SyncState.SYNCED, remote_status="failed")
    assert set(KnowledgeDocument.objects.in_flight()) == {pending, sealed, odd}


def test_unknown_remote_status_is_stored_verbatim(kb):
    doc = make_doc(kb, remote_status="vectorizing")
    doc.refresh_from_db()
    assert doc.remote_status == "vectorizing"
    assert not doc.is_searchable


def test_knowledge_base_status_names_the_known_statuses_and_keeps_unknown_ones(kb):
    field = KnowledgeBase._meta.get_field("status")
    assert field.choices == KnowledgeBase.Status.choices
    kb.status = KnowledgeBase.Status.READY
    kb.save()
    assert kb.get_status_display() == "Ready"
    kb.status = "reindexing"  # a status PromptJuggler may add later
    kb.save()
    kb.refresh_from_db()
    assert (kb.status, kb.get_status_display()) == ("reindexing", "reindexing")


def test_tombstone_survives_knowledge_base_deletion(kb):
    tomb = RemoteDeletion.objects.create(
        remote_id=uuid.uuid4(), knowledge_base=kb, knowledge_base_slug=kb.slug
    )
    with suppress_sync():
        kb.delete()
    tomb.refresh_from_db()
    assert tomb.knowledge_base is None
    assert tomb.knowledge_base_slug == "kb_models"


def test_slugs_are_compared_exactly_on_every_database():
    """A slug is PromptJuggler's handle, compared as written: ``kb_Docs`` and ``kb_docs`` are two
    knowledge bases. (MariaDB's and MySQL's default collations ignore case and accents.)"""
    upper = KnowledgeBase.objects.create(slug="kb_Docs")
    lower, created = KnowledgeBase.objects.get_or_create(slug="kb_docs")
    assert created and lower.pk != upper.pk
    assert list(KnowledgeBase.objects.filter(slug="kb_docs")) == [lower]
    assert not KnowledgeBase.objects.filter(slug="kb_DOCS").exists()
    assert not KnowledgeBase.objects.filter(slug="kb_döcs").exists()
    RemoteDeletion.objects.create(remote_id=uuid.uuid4(), knowledge_base_slug="kb_Docs")
    assert not RemoteDeletion.objects.filter(knowledge_base_slug="kb_docs").exists()
    # Searches that ignore case (the admin's) still do.
    both = {upper, lower}
    assert set(KnowledgeBase.objects.filter(slug__iexact="KB_DOCS")) == both
    assert set(KnowledgeBase.objects.filter(slug__icontains="_DoC")) == both
    assert set(KnowledgeBase.objects.filter(slug__istartswith="KB_d")) == both
    assert set(KnowledgeBase.objects.filter(slug__iendswith="OCS")) == both
    assert RemoteDeletion.objects.filter(knowledge_base_slug__icontains="docs").count() == 1


def test_the_claim_index_raises_no_warning_where_it_cannot_be_partial():
    """``pj_doc_claim`` is partial where the database allows it and plain elsewhere (MariaDB,
    MySQL) by design: Django's "conditions will be ignored" (models.W037) says nothing a user
    could act on, and Django 6.1 shows it on every ``check``."""
    messages = KnowledgeDocument.check(databases=["default"])
    assert [m.id for m in messages] == []


def test_the_document_owner_is_indexed_once_by_a_composite_index():
    """Every index costs each of a push's two writes per row: the owner has no index of its
    own, and its lookups use the composite index it leads."""
    table = KnowledgeDocument._meta.db_table
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, table)
    leading = {}
    for info in indexes.values():
        if info["index"] and info["columns"]:
            leading.setdefault(info["columns"][0], []).append(info["columns"])
    assert any(len(columns) > 1 for columns in leading["owner_id"]), leading["owner_id"]
    if connection.vendor != "mysql":  # InnoDB adds an index of its own to a foreign key
        assert ["owner_id"] not in leading["owner_id"], indexes


def test_webhook_dedupe_key_is_unique():
    WebhookDelivery.objects.create(event_type="unknown", dedupe_key="k" * 64)
    with pytest.raises(IntegrityError):
        WebhookDelivery.objects.create(event_type="unknown", dedupe_key="k" * 64)


def test_str_representations(kb):
    doc = make_doc(kb, name="notes.md", file_name="notes.md")
    assert str(doc) == "notes.md"
    assert str(kb) == "kb_models"
    kb.name = "Handbook"
    assert str(kb) == "Handbook"
