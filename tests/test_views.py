"""End-user pages: login required, owner-scoped, messages, templates, the live-status endpoint."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.messages import get_messages
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.template.loader import get_template
from django.urls import reverse

from promptjuggler_django.forms import allowed_extensions
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, SyncState

pytestmark = pytest.mark.django_db

LIST = reverse("promptjuggler_django:document_list")
UPLOAD = reverse("promptjuggler_django:document_upload")
STATUS = reverse("promptjuggler_django:document_status")


def detail_url(document: KnowledgeDocument) -> str:
    return reverse("promptjuggler_django:document_detail", args=[document.pk])


def delete_url(document: KnowledgeDocument) -> str:
    return reverse("promptjuggler_django:document_delete", args=[document.pk])


@pytest.fixture
def knowledge_base() -> KnowledgeBase:
    return KnowledgeBase.objects.create(slug="kb_test", name="Handbook")


def make_document(knowledge_base, owner, name="notes.txt", **fields) -> KnowledgeDocument:
    return KnowledgeDocument.objects.create(
        knowledge_base=knowledge_base,
        owner=owner,
        file=ContentFile(b"some text", name=name),
        file_name=name,
        file_size=9,
        **fields,
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.mark.parametrize("name", ["document_list", "document_upload", "document_status"])
def test_pages_need_a_login(client, name):
    response = client.get(reverse(f"promptjuggler_django:{name}"))
    if name == "document_status":
        assert response.status_code == 403  # a script gets no login page
    else:
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_list_shows_only_my_documents(client, knowledge_base, ann, bob):
    mine = make_document(knowledge_base, ann, "mine.txt")
    make_document(knowledge_base, bob, "theirs.txt")
    client.force_login(ann)
    response = client.get(LIST)
    assert response.status_code == 200
    assert list(response.context["documents"]) == [mine]
    body = response.content.decode()
    assert "mine.txt" in body and "theirs.txt" not in body
    assert f'data-pj-document="{mine.pk}"' in body
    assert 'data-pj-final="false"' in body
    assert f'data-pj-status-url="{STATUS}"' in body
    assert "promptjuggler_django/documents.js" in body
    assert "Queued" in body


def test_empty_list_invites_the_first_upload(client, ann):
    client.force_login(ann)
    body = client.get(LIST).content.decode()
    assert "You have not uploaded any documents yet." in body
    assert f'href="{UPLOAD}">Upload your first document</a>' in body


def test_waiting_document_says_why_and_when_everywhere(client, knowledge_base, ann):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.localtime()
    next_try = now.replace(hour=10, minute=42, second=0, microsecond=0)
    document = make_document(
        knowledge_base,
        ann,
        sync_state=SyncState.RETRYING,
        attempts=2,
        last_error="PromptJuggler answered 503: Service Unavailable",
        next_attempt_at=next_try,
    )
    # Today: the time alone, in the locale's format (Django's English one here).
    expected = "Waiting to retry — PromptJuggler answered 503, next try at 10:42 a.m."
    client.force_login(ann)
    assert expected in client.get(LIST).content.decode()
    assert expected in client.get(detail_url(document)).content.decode()
    [item] = client.get(STATUS, {"ids": document.pk}).json()["documents"]
    assert item["detail"] == expected
    # Another day: the date too, in the same format as the upload time.
    document.next_attempt_at = next_try + timedelta(days=1)
    document.save()
    [item] = client.get(STATUS, {"ids": document.pk}).json()["documents"]
    tomorrow = document.next_attempt_at.date()
    assert item["detail"].startswith("Waiting to retry — PromptJuggler answered 503, next try at ")
    assert f"{tomorrow.month:02d}/{tomorrow.day:02d}/{tomorrow.year}" in item["detail"]


@pytest.mark.parametrize(
    "fields, detail",
    [
        ({}, "Waiting to be sent to the knowledge base"),
        ({"sync_state": SyncState.UPLOADING}, "Being sent to the knowledge base"),
        ({"sync_state": SyncState.NEEDS_REVIEW}, "Checking whether PromptJuggler received it"),
        (
            {
                "sync_state": SyncState.FAILED,
                "last_error": "Gave up after 5 attempts. PromptJuggler answered 502: Bad Gateway",
            },
            "Not sent — PromptJuggler answered 502",
        ),
        (
            {"sync_state": SyncState.SYNCED, "remote_status": "failed"},
            "PromptJuggler could not process this file",
        ),
    ],
)
def test_status_detail_in_the_users_words(client, knowledge_base, ann, fields, detail):
    document = make_document(knowledge_base, ann, **fields)
    client.force_login(ann)
    assert detail in client.get(LIST).content.decode()
    assert client.get(STATUS, {"ids": document.pk}).json()["documents"][0]["detail"] == detail


def test_pages_say_a_reload_shows_the_latest_status(client, knowledge_base, ann):
    """Without the script (or its static file) the status is right on reload, and says so."""
    document = make_document(knowledge_base, ann)
    client.force_login(ann)
    for url in (LIST, detail_url(document), UPLOAD):
        body = client.get(url).content.decode()
        assert "reload the page to see the latest" in body
        assert 'role="status" aria-live="polite" data-pj-announce' in body


def test_upload_several_files(client, knowledge_base, ann):
    client.force_login(ann)
    response = client.post(
        UPLOAD,
        {
            "files": [
                SimpleUploadedFile("a.txt", b"alpha", "text/plain"),
                SimpleUploadedFile("b.md", b"# beta", "text/markdown"),
            ]
        },
    )
    assert response.status_code == 302
    assert response["Location"] == LIST
    documents = KnowledgeDocument.objects.order_by("file_name")
    assert [(d.file_name, d.owner, d.knowledge_base) for d in documents] == [
        ("a.txt", ann, knowledge_base),
        ("b.md", ann, knowledge_base),
    ]
    assert all(d.sync_state == SyncState.QUEUED for d in documents)
    assert messages_of(response) == [
        "2 documents uploaded. They are being sent to the knowledge base."
    ]


def test_upload_keeps_the_good_files_and_reports_the_bad(client, knowledge_base, ann):
    client.force_login(ann)
    response = client.post(
        UPLOAD,
        {
            "files": [
                SimpleUploadedFile("ok.txt", b"fine"),
                SimpleUploadedFile("tool.exe", b"MZ"),
                SimpleUploadedFile("notes.md", b"# notes"),
            ]
        },
    )
    assert response.status_code == 302
    assert sorted(KnowledgeDocument.objects.values_list("file_name", flat=True)) == [
        "notes.md",
        "ok.txt",
    ]
    assert messages_of(response) == [
        "2 documents uploaded. They are being sent to the knowledge base.",
        "Not uploaded: “tool.exe” is not a supported file type. Allowed types: "
        + ", ".join(allowed_extensions())
        + ".",
    ]


def test_the_pages_script_gets_where_to_go_and_the_messages_wait_there(client, knowledge_base, ann):
    client.force_login(ann)
    response = client.post(
        UPLOAD,
        {"files": [SimpleUploadedFile("a.txt", b"alpha"), SimpleUploadedFile("x.exe", b"MZ")]},
        HTTP_X_PJ_UPLOAD="progress",
    )
    assert response.status_code == 200
    assert response.json() == {"location": LIST}
    assert list(KnowledgeDocument.objects.values_list("file_name", flat=True)) == ["a.txt"]
    shown = [str(m) for m in client.get(LIST).context["messages"]]
    assert shown[0] == "1 document uploaded. It is being sent to the knowledge base."
    assert shown[1].startswith("Not uploaded: “x.exe”")
    # A refused upload answers the page with the form and its errors, as without the script.
    refused = client.post(
        UPLOAD, {"files": [SimpleUploadedFile("x.exe", b"MZ")]}, HTTP_X_PJ_UPLOAD="progress"
    )
    assert refused.status_code == 200
    assert refused["Content-Type"].startswith("text/html")
    assert "data-pj-upload-form" in refused.content.decode()


def test_upload_page_tells_the_script_what_will_be_refused(client, knowledge_base, ann, settings):
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "MAX_UPLOAD_SIZE": 2048}
    client.force_login(ann)
    body = client.get(UPLOAD).content.decode()
    assert 'data-pj-max-size="2048"' in body
    assert "Not a supported type: it will not be uploaded." in body
    assert "Over the limit of 2.0\xa0KB: the whole upload will be refused." in body
    assert 'data-pj-busy-label="Uploading…"' in body and "data-pj-upload-progress" in body


def test_upload_with_only_bad_files_saves_nothing_and_explains(client, knowledge_base, ann):
    client.force_login(ann)
    response = client.post(
        UPLOAD,
        {"files": [SimpleUploadedFile("tool.exe", b"MZ"), SimpleUploadedFile("empty.txt", b"")]},
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "“tool.exe” is not a supported file type." in body
    assert "empty.txt" in body
    assert not KnowledgeDocument.objects.exists()


def test_upload_page_lists_recent_uploads(client, knowledge_base, ann, bob):
    make_document(knowledge_base, ann, "recent.txt")
    make_document(knowledge_base, bob, "someone-else.txt")
    client.force_login(ann)
    response = client.get(UPLOAD)
    body = response.content.decode()
    assert 'enctype="multipart/form-data"' in body
    assert "multiple" in body
    assert "recent.txt" in body and "someone-else.txt" not in body


def test_detail_and_another_users_document(client, knowledge_base, ann, bob):
    document = make_document(
        knowledge_base,
        ann,
        sync_state=SyncState.FAILED,
        last_error="PromptJuggler refused the file (422): unsupported",
    )
    client.force_login(ann)
    response = client.get(detail_url(document))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Upload failed" in body
    assert "PromptJuggler refused the file (422): unsupported" in body

    client.force_login(bob)
    assert client.get(detail_url(document)).status_code == 404
    assert client.get(delete_url(document)).status_code == 404
    assert client.post(delete_url(document)).status_code == 404
    assert KnowledgeDocument.objects.filter(pk=document.pk).exists()


def test_delete_my_document(client, knowledge_base, ann):
    document = make_document(knowledge_base, ann, "old.txt")
    client.force_login(ann)
    confirm = client.get(delete_url(document))
    assert confirm.status_code == 200
    assert "Delete “old.txt”?" in confirm.content.decode()

    response = client.post(delete_url(document))
    assert response.status_code == 302
    assert response["Location"] == LIST
    assert not KnowledgeDocument.objects.filter(pk=document.pk).exists()
    assert messages_of(response) == ["“old.txt” was deleted."]


def test_status_endpoint_is_owner_scoped_and_reports_phases(client, knowledge_base, ann, bob):
    queued = make_document(knowledge_base, ann, "q.txt")
    ready = make_document(
        knowledge_base,
        ann,
        "r.txt",
        sync_state=SyncState.SYNCED,
        remote_id=uuid.uuid4(),
        remote_status="ready",
        chunk_count=7,
    )
    failed = make_document(
        knowledge_base, ann, "f.txt", sync_state=SyncState.FAILED, last_error="refused"
    )
    theirs = make_document(knowledge_base, bob, "b.txt")
    client.force_login(ann)
    ids = ",".join(str(d.pk) for d in (queued, ready, failed, theirs))
    response = client.get(STATUS, {"ids": ids})
    assert response.status_code == 200
    data = response.json()
    by_id = {item["id"]: item for item in data["documents"]}
    assert set(by_id) == {queued.pk, ready.pk, failed.pk}
    assert by_id[queued.pk]["phase"] == "queued"
    assert by_id[queued.pk]["final"] is False
    assert by_id[ready.pk] == {
        "id": ready.pk,
        "name": "r.txt",
        "phase": "ready",
        "label": "Ready",
        "tone": "success",
        "final": True,
        "sync_state": "synced",
        "remote_status": "ready",
        "chunk_count": 7,
        "detail": "",
    }
    assert by_id[failed.pk]["error"] == "refused"
    assert by_id[failed.pk]["detail"] == "Not sent — refused"
    assert data["poll_interval_ms"] == 2000


@pytest.mark.parametrize("ids", ["1,x", ",".join(str(i) for i in range(101))])
def test_status_endpoint_refuses_bad_ids(client, ann, ids):
    client.force_login(ann)
    response = client.get(STATUS, {"ids": ids})
    assert response.status_code == 400
    assert "error" in response.json()


def test_status_endpoint_without_ids(client, ann):
    client.force_login(ann)
    assert client.get(STATUS).json()["documents"] == []


def test_status_endpoint_query_count_does_not_grow(
    client, knowledge_base, ann, django_assert_max_num_queries
):
    documents = [make_document(knowledge_base, ann, f"{i}.txt") for i in range(30)]
    client.force_login(ann)
    ids = ",".join(str(d.pk) for d in documents)
    with django_assert_max_num_queries(3):  # session, user, documents
        assert len(client.get(STATUS, {"ids": ids}).json()["documents"]) == 30


@pytest.mark.parametrize(
    "fields, phase",
    [
        ({"sync_state": SyncState.UPLOADING}, "uploading"),
        ({"sync_state": SyncState.RETRYING}, "retrying"),
        ({"sync_state": SyncState.NEEDS_REVIEW}, "checking"),
        ({"sync_state": SyncState.SYNCED, "remote_status": "pending"}, "processing"),
        ({"sync_state": SyncState.SYNCED, "remote_status": "sealed"}, "processing"),
        ({"sync_state": SyncState.SYNCED, "remote_status": "indexing"}, "processing"),
        ({"sync_state": SyncState.SYNCED, "remote_status": "failed"}, "failed"),
    ],
)
def test_phases_in_the_page(client, knowledge_base, ann, fields, phase):
    document = make_document(knowledge_base, ann, **fields)
    client.force_login(ann)
    body = client.get(LIST).content.decode()
    assert f'data-pj-phase="{phase}"' in body
    assert client.get(STATUS, {"ids": document.pk}).json()["documents"][0]["phase"] == phase


def test_templates_extend_an_overridable_base():
    for name in (
        "document_list",
        "document_upload",
        "document_detail",
        "document_confirm_delete",
    ):
        source = get_template(f"promptjuggler_django/{name}.html").template.source
        assert '{% extends "promptjuggler_django/base.html" %}' in source
        assert "{% block pj_content %}" in source
