"""Admin: badges, filters, search, read-only remote fields, actions through the real sync path
(the emulator over loopback), the multi-file upload and a changelist with constant queries."""

from __future__ import annotations

import uuid

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from promptjuggler_django.models import (
    KnowledgeBase,
    KnowledgeDocument,
    RemoteDeletion,
    SyncState,
)

pytestmark = pytest.mark.django_db

DOC_CHANGELIST = reverse("admin:promptjuggler_django_knowledgedocument_changelist")
DOC_UPLOAD = reverse("admin:promptjuggler_django_knowledgedocument_upload")
KB_CHANGELIST = reverse("admin:promptjuggler_django_knowledgebase_changelist")


@pytest.fixture
def knowledge_base() -> KnowledgeBase:
    return KnowledgeBase.objects.create(slug="kb_test", name="Handbook")


@pytest.fixture
def staff(admin_user, client):
    client.force_login(admin_user)
    return admin_user


def make_document(knowledge_base, name="notes.txt", owner=None, **fields) -> KnowledgeDocument:
    return KnowledgeDocument.objects.create(
        knowledge_base=knowledge_base,
        owner=owner,
        file=ContentFile(b"some text for the knowledge base", name=name),
        file_name=name,
        file_size=32,
        content_type="text/plain",
        **fields,
    )


def run_action(client, action: str, documents, url=DOC_CHANGELIST):
    return client.post(
        url,
        {"action": action, "_selected_action": [d.pk for d in documents]},
        follow=True,
    )


def page_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_changelist_shows_badges_and_filters(client, staff, knowledge_base):
    KnowledgeBase.objects.create(slug="kb_other")  # filters need two choices to show
    make_document(knowledge_base, "queued.txt", owner=staff)
    make_document(
        knowledge_base,
        "ready.txt",
        sync_state=SyncState.SYNCED,
        remote_id=uuid.uuid4(),
        remote_status="ready",
        chunk_count=4,
    )
    make_document(knowledge_base, "odd.txt", sync_state=SyncState.SYNCED, remote_status="indexing")
    response = client.get(DOC_CHANGELIST)
    assert response.status_code == 200
    body = response.content.decode()
    # Every badge: the label (the model's, else the value with a capital), the value kept.
    queued = 'title="queued" data-pj-sync-state="queued">Queued</span>'
    ready = 'title="ready" data-pj-remote-status="ready">Ready</span>'
    assert f'class="pj-badge pj-badge--neutral" {queued}' in body
    assert f'class="pj-badge pj-badge--success" {ready}' in body
    # A status PromptJuggler may add later is shown verbatim but for the capital, like the rest.
    assert 'title="indexing" data-pj-remote-status="indexing">Indexing</span>' in body
    # The remote status filter is spelled like the badges.
    remote_filter = response.context["cl"].filter_specs[1]
    assert [c["display"] for c in remote_filter.choices(response.context["cl"])][1:] == [
        "Pending",
        "Sealed",
        "Ready",
        "Failed",
    ]
    assert "promptjuggler_django/documents.css" in body
    for title in ("By sync state", "By remote status", "By knowledge base", "By owner"):
        assert title in body
    assert DOC_UPLOAD in body  # the "Upload files" button


def test_filters_narrow_the_list(client, staff, knowledge_base):
    make_document(knowledge_base, "a.txt", sync_state=SyncState.FAILED)
    make_document(knowledge_base, "b.txt")
    response = client.get(DOC_CHANGELIST, {"sync_state__exact": "failed"})
    assert [d.file_name for d in response.context["cl"].result_list] == ["a.txt"]


def test_changelist_query_count_is_constant(
    client, staff, knowledge_base, django_user_model, django_assert_num_queries
):
    def add_rows(count: int, start: int) -> None:
        for i in range(start, start + count):
            owner = django_user_model.objects.create_user(f"user{i}")
            make_document(
                knowledge_base,
                f"doc{i}.txt",
                owner=owner,
                sync_state=SyncState.SYNCED,
                remote_id=uuid.uuid4(),
                remote_status="pending",
            )

    add_rows(5, 0)
    with CaptureQueriesContext(connection) as five:
        assert client.get(DOC_CHANGELIST).status_code == 200
    add_rows(45, 5)
    with django_assert_num_queries(len(five.captured_queries)):
        response = client.get(DOC_CHANGELIST)
    assert len(response.context["cl"].result_list) == 50


def test_search_by_name_and_remote_id(client, staff, knowledge_base):
    remote_id = uuid.uuid4()
    make_document(knowledge_base, "travel-policy.txt")
    make_document(
        knowledge_base,
        "handbook.md",
        sync_state=SyncState.SYNCED,
        remote_id=remote_id,
        remote_status="pending",
    )

    def found(term: str) -> list[str]:
        response = client.get(DOC_CHANGELIST, {"q": term})
        return [d.file_name for d in response.context["cl"].result_list]

    assert found("travel") == ["travel-policy.txt"]
    assert found(str(remote_id)) == ["handbook.md"]
    assert found(str(remote_id)[:8]) == ["handbook.md"]


def test_remote_fields_and_last_error_are_read_only(client, staff, knowledge_base):
    document = make_document(
        knowledge_base,
        sync_state=SyncState.FAILED,
        attempts=3,
        last_error="PromptJuggler refused the file (422): unsupported file type",
    )
    url = reverse("admin:promptjuggler_django_knowledgedocument_change", args=[document.pk])
    response = client.get(url)
    assert response.status_code == 200
    form_fields = set(response.context["adminform"].form.fields)
    assert form_fields == {"owner", "file"}  # the knowledge base is fixed once created
    body = response.content.decode()
    assert "PromptJuggler refused the file (422): unsupported file type" in body
    assert 'data-pj-sync-state="failed"' in body


def test_replacing_the_file_pushes_the_new_one(
    client, staff, knowledge_base, fake_promptjuggler, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        document = make_document(knowledge_base, "v1.txt")
    document.refresh_from_db()
    old_remote_id = document.remote_id
    url = reverse("admin:promptjuggler_django_knowledgedocument_change", args=[document.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            url,
            {"owner": "", "file": SimpleUploadedFile("v2.md", b"# version two", "text/markdown")},
        )
    assert response.status_code == 302
    document.refresh_from_db()
    assert (document.file_name, document.file_size, document.content_type) == (
        "v2.md",
        13,
        "text/markdown",
    )
    assert document.remote_id not in (None, old_remote_id)
    assert [d.file_name for d in fake_promptjuggler.documents("kb_test")] == ["v2.md"]


def test_push_again_sends_a_failed_document(
    client, staff, knowledge_base, fake_promptjuggler, django_capture_on_commit_callbacks
):
    document = make_document(
        knowledge_base, "retry-me.txt", sync_state=SyncState.FAILED, attempts=8, last_error="x"
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(client, "push_again", [document])
    assert page_messages(response) == ["1 document queued to be pushed again."]
    document.refresh_from_db()
    assert document.sync_state == SyncState.SYNCED
    assert document.last_error == ""
    remote = fake_promptjuggler.documents("kb_test")
    assert [d.file_name for d in remote] == ["retry-me.txt"]
    assert document.remote_id == remote[0].id


def test_refresh_status_reads_the_api(
    client, staff, knowledge_base, fake_promptjuggler, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        document = make_document(knowledge_base, "poll-me.txt")
    document.refresh_from_db()
    assert document.remote_status == "pending"
    fake_promptjuggler.finish()  # no webhook URL: only polling can tell
    response = run_action(client, "refresh_status", [document])
    assert page_messages(response) == ["Checked 1 pushed document; 1 status changed."]
    document.refresh_from_db()
    assert document.remote_status == "ready"


def test_bulk_delete_removes_remote_copies(
    client, staff, knowledge_base, fake_promptjuggler, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        documents = [make_document(knowledge_base, f"{i}.txt") for i in range(3)]
    assert len(fake_promptjuggler.documents("kb_test")) == 3
    doomed = documents[:2]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            DOC_CHANGELIST,
            {
                "action": "delete_selected",
                "_selected_action": [d.pk for d in doomed],
                "post": "yes",
            },
            follow=True,
        )
    assert response.status_code == 200
    assert list(KnowledgeDocument.objects.values_list("file_name", flat=True)) == ["2.txt"]
    assert [d.file_name for d in fake_promptjuggler.documents("kb_test")] == ["2.txt"]
    assert not RemoteDeletion.objects.exists()  # every tombstone drained


def test_upload_several_files_from_the_admin(
    client, staff, knowledge_base, fake_promptjuggler, django_capture_on_commit_callbacks
):
    other = KnowledgeBase.objects.create(slug="kb_other")
    page = client.get(DOC_UPLOAD)
    assert page.status_code == 200
    body = page.content.decode()
    assert "multiple" in body and 'name="knowledge_base"' in body
    assert page.context["form"]["knowledge_base"].initial == knowledge_base  # the default KB

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            DOC_UPLOAD,
            {
                "knowledge_base": knowledge_base.pk,
                "files": [
                    SimpleUploadedFile("one.txt", b"first file", "text/plain"),
                    SimpleUploadedFile("two.md", b"# second", "text/markdown"),
                ],
            },
            follow=True,
        )
    assert response.redirect_chain[-1][0] == DOC_CHANGELIST
    documents = KnowledgeDocument.objects.order_by("file_name")
    assert [(d.file_name, d.owner, d.knowledge_base) for d in documents] == [
        ("one.txt", staff, knowledge_base),
        ("two.md", staff, knowledge_base),
    ]
    assert {d.file_name for d in fake_promptjuggler.documents("kb_test")} == {"one.txt", "two.md"}
    # One multi-file request, not one per file.
    assert fake_promptjuggler.request_count("upload") == 1
    assert other.documents.count() == 0


def test_admin_upload_refuses_bad_files(client, staff, knowledge_base):
    response = client.post(
        DOC_UPLOAD,
        {"knowledge_base": knowledge_base.pk, "files": [SimpleUploadedFile("x.exe", b"MZ")]},
    )
    assert response.status_code == 200
    assert "“x.exe” is not a supported file type." in response.content.decode()
    assert not KnowledgeDocument.objects.exists()


def test_admin_upload_keeps_the_good_files_and_reports_the_bad(client, staff, knowledge_base):
    response = client.post(
        DOC_UPLOAD,
        {
            "knowledge_base": knowledge_base.pk,
            "files": [SimpleUploadedFile("x.exe", b"MZ"), SimpleUploadedFile("ok.txt", b"fine")],
        },
        follow=True,
    )
    assert response.redirect_chain[-1][0] == DOC_CHANGELIST
    assert list(KnowledgeDocument.objects.values_list("file_name", flat=True)) == ["ok.txt"]
    shown = [str(m) for m in response.context["messages"]]
    assert any(m.startswith("Not uploaded: “x.exe” is not a supported file type.") for m in shown)


def test_upload_needs_add_permission(client, django_user_model, knowledge_base):
    clerk = django_user_model.objects.create_user("clerk", is_staff=True)
    client.force_login(clerk)
    assert client.get(DOC_UPLOAD).status_code == 403


def test_knowledge_base_changelist_and_change_page(client, staff, knowledge_base):
    knowledge_base.status = "ready"
    knowledge_base.document_count = 2
    knowledge_base.chunk_count = 9
    knowledge_base.save()
    make_document(knowledge_base, "first.txt")
    make_document(knowledge_base, "second.txt", sync_state=SyncState.SYNCED, remote_status="ready")

    body = client.get(KB_CHANGELIST).content.decode()
    assert 'data-pj-remote-status="ready">Ready</span>' in body  # KnowledgeBase.Status's label
    assert f"?knowledge_base__id__exact={knowledge_base.pk}" in body  # linked local documents

    url = reverse("admin:promptjuggler_django_knowledgebase_change", args=[knowledge_base.pk])
    response = client.get(url)
    assert set(response.context["adminform"].form.fields) == {"name"}  # slug fixed once saved
    body = response.content.decode()
    assert "first.txt" in body and "second.txt" in body
    assert "All documents of this knowledge base" in body


def test_knowledge_base_refresh_action(client, staff, knowledge_base, fake_promptjuggler):
    remote = fake_promptjuggler.knowledge_base("kb_test")
    response = run_action(client, "refresh_from_api", [knowledge_base], url=KB_CHANGELIST)
    messages = page_messages(response)
    assert len(messages) == 1 and messages[0].startswith("Handbook: ")
    knowledge_base.refresh_from_db()
    assert knowledge_base.remote_id == remote.id
    assert knowledge_base.last_synced_at is not None


def test_knowledge_base_refresh_reports_api_errors(client, staff, fake_promptjuggler):
    missing = KnowledgeBase.objects.create(slug="kb_nowhere")
    response = run_action(client, "refresh_from_api", [missing], url=KB_CHANGELIST)
    (message,) = page_messages(response)
    assert message.startswith("Could not refresh kb_nowhere:")
    assert "pj_test_key" not in message


def test_remote_deletions_are_read_only(client, staff):
    RemoteDeletion.objects.create(remote_id=uuid.uuid4(), file_name="gone.txt")
    response = client.get(reverse("admin:promptjuggler_django_remotedeletion_changelist"))
    assert response.status_code == 200
    assert "gone.txt" in response.content.decode()
    assert client.get(reverse("admin:promptjuggler_django_remotedeletion_add")).status_code == 403


def test_knowledge_base_counts_are_labelled_as_promptjugglers(client, staff, knowledge_base):
    html = client.get(KB_CHANGELIST).content.decode()
    assert "Documents (PromptJuggler)" in html and "Chunks (PromptJuggler)" in html
    assert "Last sync" in html
    assert "never" in html  # not synced yet


@pytest.mark.usefixtures("staff")
def test_the_upload_page_leads_back_to_the_document_list(client) -> None:
    page = client.get(DOC_UPLOAD).content.decode()
    crumbs = page.split('<div class="breadcrumbs">', 1)[1].split("</div>", 1)[0]
    assert f'href="{DOC_CHANGELIST}"' in crumbs and "Knowledge documents" in crumbs
    assert 'href="/admin/promptjuggler_django/"' in crumbs
