"""The content type of a document is decided from its extension, whichever way it arrives.

Browsers declare what they guess (Windows sends ``.csv`` as ``application/vnd.ms-excel``) and a
client may lie; :mod:`promptjuggler_django.filetypes` is the one source on every path.
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from promptjuggler_django.forms import create_documents
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument

pytestmark = pytest.mark.django_db

CASES = [
    ("table.csv", "application/vnd.ms-excel", "text/csv"),
    ("report.pdf", "text/html", "application/pdf"),
    ("notes.txt", "application/x-msdownload", "text/plain"),
    ("page.md", "", "text/markdown"),
]


@pytest.fixture
def knowledge_base() -> KnowledgeBase:
    return KnowledgeBase.objects.create(slug="kb_test")


def declared(name: str, content_type: str) -> SimpleUploadedFile:
    content = b"%PDF-1.4 x" if name.endswith(".pdf") else b"a,b\n1,2\n"
    return SimpleUploadedFile(name, content, content_type=content_type)


@pytest.mark.parametrize(("name", "browser_type", "expected"), CASES)
def test_the_model_path(knowledge_base, name, browser_type, expected) -> None:
    doc = KnowledgeDocument.objects.create(
        knowledge_base=knowledge_base, file=declared(name, browser_type)
    )
    assert doc.content_type == expected


@pytest.mark.parametrize(("name", "browser_type", "expected"), CASES)
def test_the_upload_form_path(knowledge_base, name, browser_type, expected) -> None:
    (doc,) = create_documents(knowledge_base, [declared(name, browser_type)])
    doc.refresh_from_db()
    assert doc.content_type == expected


@pytest.mark.parametrize(("name", "browser_type", "expected"), CASES)
def test_the_rest_path(knowledge_base, django_user_model, name, browser_type, expected) -> None:
    api = APIClient()
    api.force_authenticate(django_user_model.objects.create_user("ann", password="pw"))
    response = api.post(
        reverse("promptjuggler_django_rest:document-list"),
        {"files": [declared(name, browser_type)]},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert response.json()[0]["content_type"] == expected


@pytest.mark.parametrize(("name", "browser_type", "expected"), CASES)
def test_the_admin_change_form_path(
    knowledge_base, admin_client, name, browser_type, expected
) -> None:
    doc = KnowledgeDocument.objects.create(
        knowledge_base=knowledge_base, file=declared("first.txt", "text/plain")
    )
    url = reverse("admin:promptjuggler_django_knowledgedocument_change", args=[doc.pk])
    response = admin_client.post(
        url,
        {"knowledge_base": knowledge_base.pk, "file": declared(name, browser_type)},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    doc.refresh_from_db()
    assert (doc.file_name, doc.content_type) == (name, expected)
