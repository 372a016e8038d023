"""A binary file's first bytes must agree with its extension, on every upload path.

``report.pdf`` that is an HTML page, ``letter.docx`` that is not a ZIP archive: refused with a
message naming the file by the upload page, the admin upload (and change form) and the REST API,
through the one validator in :mod:`promptjuggler_django.filetypes`, whatever content type the
client declares. What is accepted is stored and pushed with the extension's content type.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils.datastructures import MultiValueDict
from rest_framework.test import APIClient

from promptjuggler_django.filetypes import (
    CONTENT_TYPES,
    SIGNATURE_LENGTH,
    SIGNATURES,
    TYPE_NAMES,
    content_matches_extension,
    validate_file_content,
)
from promptjuggler_django.forms import DocumentUploadForm
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument

PAGE = reverse("promptjuggler_django:document_upload")
ADMIN_UPLOAD = reverse("admin:promptjuggler_django_knowledgedocument_upload")
REST = reverse("promptjuggler_django_rest:document-list")

HTML = b"<!doctype html><html><script>alert(1)</script></html>"
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
DOCX_TYPE = CONTENT_TYPES[".docx"]


def docx_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return buffer.getvalue()


#: (file name, content, the type a lying client declares, the refusal's wording)
MISMATCHES = [
    ("report.pdf", HTML, "application/pdf", "“report.pdf” is not a PDF file"),
    ("letter.docx", b"MZ\x90\x00 an executable", DOCX_TYPE, "“letter.docx” is not a Word (DOCX)"),
    ("scan.PDF", b"PK\x03\x04 a zip", "application/pdf", "“scan.PDF” is not a PDF file"),
]
MISMATCH_IDS = [m[0] for m in MISMATCHES]


def spoofed(name: str, content: bytes, declared: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=declared)


# --- the validator ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "head", "matches"),
    [
        ("a.pdf", b"%PDF-1.4", True),
        ("a.PDF", b"%PDF-2.0", True),
        ("a.pdf", b"<html>", False),
        ("a.pdf", b"%PD", False),
        ("a.pdf", b"", False),
        ("a.docx", b"PK\x03\x04\x14\x00", True),
        ("a.docx", b"PK\x05\x06", False),  # an empty archive holds no document
        ("a.docx", b"\xd0\xcf\x11\xe0", False),  # the old binary .doc format
        ("a.xlsx", b"PK\x03\x04", True),  # zip-based types a project may allow
        ("a.odt", b"<xml/>", False),
        ("a.txt", b"\x00\x01 anything", True),  # text types have no signature
        ("a.html", b"%PDF-", True),
    ],
)
def test_content_matches_extension(name, head, matches) -> None:
    assert content_matches_extension(name, head) is matches


def test_the_validator_names_the_file_and_rewinds() -> None:
    file = spoofed("dir/report.pdf", HTML, "application/pdf")
    file.seek(3)
    with pytest.raises(ValidationError) as caught:
        validate_file_content(file)
    assert caught.value.code == "file_content"
    assert caught.value.messages == [
        "“report.pdf” is not a PDF file: its content does not match its extension."
    ]
    assert file.tell() == 3

    good = spoofed("report.pdf", PDF, "text/html")
    good.read()
    validate_file_content(good)
    assert good.tell() == len(PDF)
    good.seek(0)
    assert good.read() == PDF


class CountingReader(io.BytesIO):
    """A file that remembers how many bytes were read from it."""

    bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def test_the_validator_reads_only_the_first_bytes() -> None:
    reader = CountingReader(b"%PDF-1.7" + b"x" * 5_000_000)
    file = SimpleUploadedFile("big.pdf", b"")
    file.file = reader
    validate_file_content(file)
    assert reader.bytes_read == SIGNATURE_LENGTH <= 8


def test_every_signature_has_a_name_for_the_refusal() -> None:
    assert set(TYPE_NAMES) == set(SIGNATURES)


# --- the end-user form and page -----------------------------------------------------------


@pytest.mark.parametrize(("name", "content", "declared", "message"), MISMATCHES, ids=MISMATCH_IDS)
def test_the_form_refuses_a_mismatched_file(name, content, declared, message) -> None:
    form = DocumentUploadForm(
        data={},
        files=MultiValueDict(
            {"files": [spoofed("ok.txt", b"fine", "text/plain"), spoofed(name, content, declared)]}
        ),
    )
    assert not form.is_valid()
    (error,) = form.errors["files"]
    assert error.startswith(message)


def test_a_zip_based_type_a_project_allows_is_checked_too(settings) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "ALLOWED_EXTENSIONS": [".xlsx"]}
    form = DocumentUploadForm(
        data={}, files=MultiValueDict({"files": [spoofed("sheet.xlsx", b"a,b\n1,2\n", "")]})
    )
    assert form.errors["files"] == [
        "“sheet.xlsx” is not a spreadsheet (XLSX) file: its content does not match its extension."
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "content", "declared", "message"), MISMATCHES, ids=MISMATCH_IDS)
def test_the_upload_page_refuses_a_mismatched_file(
    client, django_user_model, name, content, declared, message
) -> None:
    client.force_login(django_user_model.objects.create_user("ann", password="pw"))
    response = client.post(PAGE, {"files": [spoofed(name, content, declared)]})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not KnowledgeDocument.objects.exists()
    # Chosen with a good file, it is left out and the good one is uploaded.
    response = client.post(
        PAGE,
        {"files": [spoofed("ok.txt", b"fine", "text/plain"), spoofed(name, content, declared)]},
        follow=True,
    )
    assert [str(m) for m in response.context["messages"]][-1].startswith(f"Not uploaded: {message}")
    assert list(KnowledgeDocument.objects.values_list("file_name", flat=True)) == ["ok.txt"]


# --- the admin ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "content", "declared", "message"), MISMATCHES, ids=MISMATCH_IDS)
def test_the_admin_upload_refuses_a_mismatched_file(
    admin_client, name, content, declared, message
) -> None:
    knowledge_base = KnowledgeBase.objects.create(slug="kb_test")
    response = admin_client.post(
        ADMIN_UPLOAD,
        {"knowledge_base": knowledge_base.pk, "files": [spoofed(name, content, declared)]},
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not KnowledgeDocument.objects.exists()


@pytest.mark.django_db
def test_the_admin_change_form_refuses_a_mismatched_file(admin_client) -> None:
    knowledge_base = KnowledgeBase.objects.create(slug="kb_test")
    response = admin_client.post(
        reverse("admin:promptjuggler_django_knowledgedocument_add"),
        {
            "knowledge_base": knowledge_base.pk,
            "file": spoofed("report.pdf", HTML, "application/pdf"),
        },
    )
    assert response.status_code == 200
    assert "“report.pdf” is not a PDF file" in response.content.decode()
    assert not KnowledgeDocument.objects.exists()


# --- REST ---------------------------------------------------------------------------------


@pytest.fixture
def api(django_user_model) -> APIClient:
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user("ann", password="pw"))
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "content", "declared", "message"), MISMATCHES, ids=MISMATCH_IDS)
def test_the_rest_api_refuses_a_mismatched_file(api, name, content, declared, message) -> None:
    KnowledgeBase.objects.create(slug="kb_test")
    response = api.post(
        REST,
        {"files": [spoofed("ok.txt", b"fine", "text/plain"), spoofed(name, content, declared)]},
        format="multipart",
    )
    assert response.status_code == 400
    assert list(response.json()["files"]) == ["1"]
    (error,) = response.json()["files"]["1"]
    assert error.startswith(message)
    assert not KnowledgeDocument.objects.exists()


# --- what is accepted goes on with the extension's type -----------------------------------


@pytest.mark.django_db
def test_genuine_files_with_spoofed_types_are_stored_and_pushed_with_the_extensions_type(
    api, fake_promptjuggler, django_capture_on_commit_callbacks
) -> None:
    KnowledgeBase.objects.create(slug="kb_test")
    files = [
        spoofed("report.pdf", PDF, "text/html"),
        spoofed("letter.docx", docx_bytes(), "application/x-msdownload"),
        spoofed("notes.txt", b"plain words", "application/x-msdownload"),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(REST, {"files": files}, format="multipart")
    assert response.status_code == 201, response.content
    expected = {
        "report.pdf": "application/pdf",
        "letter.docx": DOCX_TYPE,
        "notes.txt": "text/plain",
    }
    assert {d["file_name"]: d["content_type"] for d in response.json()} == expected
    stored = dict(KnowledgeDocument.objects.values_list("file_name", "content_type"))
    assert stored == expected
    pushed = {d.file_name: d.declared_content_type for d in fake_promptjuggler.documents("kb_test")}
    assert pushed == expected
    pdf = next(d for d in fake_promptjuggler.documents("kb_test") if d.file_name == "report.pdf")
    assert pdf.bytes == len(PDF)  # stored from its first byte, after the check read the head
