"""REST API: multipart upload of one or several files, owner-scoped list/retrieve/delete,
permissions, pagination, no update, and a schema that DRF's OpenAPI generator renders."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.renderers import OpenAPIRenderer
from rest_framework.schemas.openapi import SchemaGenerator
from rest_framework.test import APIClient

from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, SyncState

pytestmark = pytest.mark.django_db

LIST = reverse("promptjuggler_django_rest:document-list")


def detail(pk: int) -> str:
    return reverse("promptjuggler_django_rest:document-detail", args=[pk])


@pytest.fixture
def knowledge_base() -> KnowledgeBase:
    return KnowledgeBase.objects.create(slug="kb_test")


@pytest.fixture
def api(ann) -> APIClient:
    client = APIClient()
    client.force_authenticate(ann)
    return client


def make_document(knowledge_base, owner, name="notes.txt", **fields) -> KnowledgeDocument:
    return KnowledgeDocument.objects.create(
        knowledge_base=knowledge_base,
        owner=owner,
        file=ContentFile(b"text", name=name),
        file_name=name,
        file_size=4,
        **fields,
    )


def test_anonymous_requests_are_refused(knowledge_base, ann):
    document = make_document(knowledge_base, ann)
    anonymous = APIClient()
    assert anonymous.get(LIST).status_code == 403
    assert anonymous.get(detail(document.pk)).status_code == 403
    assert anonymous.delete(detail(document.pk)).status_code == 403
    assert KnowledgeDocument.objects.filter(pk=document.pk).exists()


def test_upload_several_files(api, ann, knowledge_base):
    response = api.post(
        LIST,
        {
            "files": [
                SimpleUploadedFile("a.txt", b"alpha", "text/plain"),
                SimpleUploadedFile("b.md", b"# beta", "text/markdown"),
            ]
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert [item["file_name"] for item in body] == ["a.txt", "b.md"]
    assert body[0]["knowledge_base"] == "kb_test"
    assert body[0]["status"] == "queued"
    assert body[0]["status_label"] == "Queued"
    assert body[1]["content_type"] == "text/markdown"
    assert set(KnowledgeDocument.objects.values_list("owner", flat=True)) == {ann.pk}


def test_upload_with_indexed_part_names(api, knowledge_base):
    # The same part names PromptJuggler's own API takes.
    response = api.post(
        LIST,
        {
            "files[0]": SimpleUploadedFile("a.txt", b"alpha"),
            "files[1]": SimpleUploadedFile("b.txt", b"beta"),
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert len(response.json()) == 2


def test_upload_into_a_chosen_knowledge_base(api, knowledge_base, settings):
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "CHOOSABLE_KNOWLEDGE_BASES": ["kb_other"]}
    KnowledgeBase.objects.create(slug="kb_other")
    response = api.post(
        LIST,
        {"files": [SimpleUploadedFile("a.txt", b"alpha")], "knowledge_base": "kb_other"},
        format="multipart",
    )
    assert response.status_code == 201
    assert response.json()[0]["knowledge_base"] == "kb_other"

    response = api.post(
        LIST,
        {"files": [SimpleUploadedFile("a.txt", b"alpha")], "knowledge_base": "kb_missing"},
        format="multipart",
    )
    assert response.status_code == 400
    assert "knowledge_base" in response.json()


def test_upload_validation(api, knowledge_base, settings):
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "MAX_UPLOAD_SIZE": 10}
    response = api.post(
        LIST,
        {
            "files": [
                SimpleUploadedFile("ok.txt", b"fine"),
                SimpleUploadedFile("x.exe", b"MZ"),
                SimpleUploadedFile("fake.pdf", b"<html>"),
            ]
        },
        format="multipart",
    )
    assert response.status_code == 400
    errors = response.json()["files"]
    assert errors["1"] == [
        "“x.exe” is not a supported file type. "
        "Allowed types: .txt, .csv, .tsv, .md, .html, .pdf, .docx."
    ]
    assert errors["2"] == [
        "“fake.pdf” is not a PDF file: its content does not match its extension."
    ]
    assert not KnowledgeDocument.objects.exists()

    # A file over the limit stops the upload while it arrives: the whole request is refused.
    files = [SimpleUploadedFile("ok.txt", b"fine"), SimpleUploadedFile("big.txt", b"x" * 11)]
    response = api.post(LIST, {"files": files}, format="multipart")
    assert response.status_code == 400
    assert response.json() == {
        "files": [
            "“big.txt” is too large (more than 10\xa0bytes). The limit is 10\xa0bytes per file."
        ]
    }
    assert not KnowledgeDocument.objects.exists()

    assert api.post(LIST, {}, format="multipart").status_code == 400
    assert api.post(LIST, {"files": []}, format="json").status_code == 415


def test_list_is_owner_scoped_and_paginated(api, knowledge_base, ann, bob):
    for i in range(27):
        make_document(knowledge_base, ann, f"{i}.txt")
    make_document(knowledge_base, bob, "bob.txt")
    page = api.get(LIST).json()
    assert page["count"] == 27
    assert len(page["results"]) == 25
    assert page["next"]
    assert "bob.txt" not in {item["file_name"] for item in page["results"]}
    assert len(api.get(LIST, {"page": 2}).json()["results"]) == 2
    assert len(api.get(LIST, {"page_size": 5}).json()["results"]) == 5


def test_retrieve_shows_status_fields(api, knowledge_base, ann):
    remote_id = uuid.uuid4()
    document = make_document(
        knowledge_base,
        ann,
        sync_state=SyncState.SYNCED,
        remote_id=remote_id,
        remote_status="ready",
        chunk_count=3,
    )
    body = api.get(detail(document.pk)).json()
    assert body["status"] == "ready"
    assert body["remote_id"] == str(remote_id)
    assert body["chunk_count"] == 3
    assert body["sync_state"] == "synced"


def test_another_users_document_is_not_found(api, knowledge_base, bob):
    theirs = make_document(knowledge_base, bob)
    assert api.get(detail(theirs.pk)).status_code == 404
    assert api.delete(detail(theirs.pk)).status_code == 404
    assert KnowledgeDocument.objects.filter(pk=theirs.pk).exists()


def test_a_malformed_id_is_the_apis_json_404(api, knowledge_base, ann):
    """Any id in the path reaches the API, so the answer is its JSON 404, not the site's page."""
    make_document(knowledge_base, ann)
    for malformed in ("1.5", "notes.txt", "abc", "99999999999999999999999"):
        for response in (api.get(f"{LIST}{malformed}/"), api.delete(f"{LIST}{malformed}/")):
            assert response.status_code == 404, malformed
            assert response["Content-Type"] == "application/json", malformed
            assert set(response.json()) == {"detail"}
    assert KnowledgeDocument.objects.count() == 1


def test_no_update(api, knowledge_base, ann):
    document = make_document(knowledge_base, ann)
    assert api.patch(detail(document.pk), {"file_name": "x"}, format="multipart").status_code == 405
    assert api.put(detail(document.pk), {"file_name": "x"}, format="multipart").status_code == 405


def test_upload_and_delete_reach_promptjuggler(
    api, knowledge_base, fake_promptjuggler, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            LIST, {"files": [SimpleUploadedFile("api.txt", b"via the api")]}, format="multipart"
        )
    (created,) = response.json()
    assert [d.file_name for d in fake_promptjuggler.documents("kb_test")] == ["api.txt"]
    body = api.get(detail(created["id"])).json()
    assert body["status"] == "processing"
    assert body["remote_status"] == "pending"

    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(detail(created["id"])).status_code == 204
    assert fake_promptjuggler.documents("kb_test") == []


def test_openapi_schema_renders():
    schema = SchemaGenerator(title="Documents").get_schema(request=None, public=True)
    paths = schema["paths"]
    assert set(paths["/api/documents/"]) == {"get", "post"}
    assert set(paths["/api/documents/{id}/"]) == {"get", "delete"}
    upload = paths["/api/documents/"]["post"]
    assert list(upload["requestBody"]["content"]) == ["multipart/form-data"]
    components = schema["components"]["schemas"]
    files = components["DocumentUpload"]["properties"]["files"]
    assert files == {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "description": "One or several files (the same limits as the upload page).",
        "minItems": 1,
    }
    created = upload["responses"]["201"]["content"]["application/json"]["schema"]
    assert created == {"type": "array", "items": {"$ref": "#/components/schemas/KnowledgeDocument"}}
    listing = paths["/api/documents/"]["get"]["responses"]["200"]["content"]["application/json"]
    assert "count" in listing["schema"]["properties"]  # paginated
    assert "status" in components["KnowledgeDocument"]["properties"]
    assert b"/api/documents/{id}/" in OpenAPIRenderer().render(schema)  # YAML, as served


def test_openapi_schema_documents_the_error_answers():
    """Each operation lists the refusals DRF answers with, and their ``{"detail"}`` or
    per-field body; the path's id is the integer primary key."""
    schema = SchemaGenerator(title="Documents").get_schema(request=None, public=True)
    paths = schema["paths"]
    detail_error = {"$ref": "#/components/schemas/ErrorDetail"}
    expected = {
        ("/api/documents/", "get"): {"200", "401", "403", "404"},  # 404: no such page
        ("/api/documents/", "post"): {"201", "400", "401", "403", "415"},
        ("/api/documents/{id}/", "get"): {"200", "401", "403", "404"},
        ("/api/documents/{id}/", "delete"): {"204", "401", "403", "404"},
    }
    for (path, method), codes in expected.items():
        responses = paths[path][method]["responses"]
        assert set(responses) == codes, (path, method)
        for code in codes - {"200", "201", "204", "400"}:
            assert responses[code]["description"]
            assert responses[code]["content"]["application/json"]["schema"] == detail_error
    invalid = paths["/api/documents/"]["post"]["responses"]["400"]["content"]["application/json"]
    assert invalid["schema"] == {
        "anyOf": [{"$ref": "#/components/schemas/ValidationError"}, detail_error]
    }
    components = schema["components"]["schemas"]
    assert components["ErrorDetail"]["required"] == ["detail"]
    messages = {"type": "array", "items": {"type": "string"}}
    per_item = {"type": "object", "additionalProperties": messages}
    assert components["ValidationError"]["additionalProperties"] == {"anyOf": [messages, per_item]}
    for method in ("get", "delete"):
        (parameter,) = paths["/api/documents/{id}/"][method]["parameters"]
        assert parameter["name"] == "id"
        assert parameter["schema"] == {"type": "integer"}


def test_the_app_works_without_django_rest_framework():
    """Only rest.py and rest_urls.py import DRF: the rest of the app needs no ``rest`` extra."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["rest_framework"] = None  # as if not installed
        import django
        from django.conf import settings
        settings.configure(
            INSTALLED_APPS=[
                "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                "django.contrib.sessions", "django.contrib.messages", "promptjuggler_django",
            ],
            ROOT_URLCONF="promptjuggler_django.urls",
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        )
        django.setup()
        import promptjuggler_django.admin, promptjuggler_django.urls, promptjuggler_django.views
        try:
            import promptjuggler_django.rest
        except ImportError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert 'pip install "promptjuggler-django[rest]"' in result.stdout
