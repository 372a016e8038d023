"""DocumentUploadForm: several files at once, limits from settings, messages that name the file."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils.datastructures import MultiValueDict

from promptjuggler_django.forms import (
    DocumentUploadForm,
    MultipleFileField,
    MultipleFileInput,
    default_knowledge_base,
)
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, SyncState


def upload(name: str, content: bytes = b"hello world", content_type: str = "text/plain"):
    return SimpleUploadedFile(name, content, content_type=content_type)


def form_with(*files, **kwargs) -> DocumentUploadForm:
    return DocumentUploadForm(data={}, files=MultiValueDict({"files": list(files)}), **kwargs)


@pytest.fixture
def limits(settings):
    settings.PROMPTJUGGLER = {
        **settings.PROMPTJUGGLER,
        "MAX_UPLOAD_SIZE": 100,
        "ALLOWED_EXTENSIONS": [".txt", ".md", "PDF"],
    }


def test_widget_allows_multiple_selection_and_advertises_types(limits):
    form = DocumentUploadForm()
    html = str(form["files"])
    assert isinstance(form.fields["files"], MultipleFileField)
    assert isinstance(form.fields["files"].widget, MultipleFileInput)
    assert "multiple" in html
    assert 'accept=".txt,.md,.pdf"' in html
    assert "100\xa0bytes" in form.fields["files"].help_text
    assert ".txt, .md, .pdf" in form.fields["files"].help_text


def test_several_valid_files_clean_to_a_list(limits):
    form = form_with(upload("a.txt"), upload("B.MD"), upload("c.pdf", b"%PDF-1.4"))
    assert form.is_valid(), form.errors
    assert [f.name for f in form.cleaned_data["files"]] == ["a.txt", "B.MD", "c.pdf"]


def test_every_bad_file_is_reported_by_name(limits):
    form = form_with(
        upload("fine.txt"),
        upload("virus.exe"),
        upload("big.md", b"x" * 101),
        upload("empty.txt", b""),
    )
    assert not form.is_valid()
    errors = form.errors["files"]
    assert len(errors) == 3
    assert "“virus.exe” is not a supported file type. Allowed types: .txt, .md, .pdf." in errors
    assert "“big.md” is too large (101\xa0bytes). The limit is 100\xa0bytes per file." in errors
    assert any("empty.txt" in e for e in errors)


def test_file_exactly_at_the_limit_passes(limits):
    assert form_with(upload("edge.txt", b"x" * 100)).is_valid()


def test_no_file_is_a_clear_error():
    form = DocumentUploadForm(data={}, files=MultiValueDict())
    assert not form.is_valid()
    assert form.errors["files"] == ["Choose at least one file to upload."]


def test_default_extensions_match_promptjuggler_supported_types():
    names = ["a.txt", "b.csv", "c.tsv", "d.md", "e.html", "f.pdf", "g.docx"]
    heads = {"f.pdf": b"%PDF-1.7 ...", "g.docx": b"PK\x03\x04 ..."}  # binary types: real heads
    assert form_with(*[upload(n, heads.get(n, b"text")) for n in names]).is_valid()
    form = form_with(upload("h.doc"))
    assert not form.is_valid()


@pytest.mark.django_db
def test_save_creates_queued_documents_in_the_default_knowledge_base(django_user_model):
    user = django_user_model.objects.create_user("ann", password="pw")
    form = form_with(upload("notes.txt", b"abc"), upload("guide.md", b"# guide", "text/markdown"))
    assert form.is_valid()
    documents = form.save(owner=user)

    assert [d.file_name for d in documents] == ["notes.txt", "guide.md"]
    for document in documents:
        document.refresh_from_db()
        assert document.owner == user
        assert document.knowledge_base.slug == "kb_test"
        assert document.sync_state == SyncState.QUEUED
    assert documents[0].file_size == 3
    assert documents[1].content_type == "text/markdown"
    with documents[0].file.open("rb") as stored:
        assert stored.read() == b"abc"
    assert KnowledgeBase.objects.filter(slug="kb_test").count() == 1


@pytest.mark.django_db
def test_choosing_a_knowledge_base(django_user_model):
    other = KnowledgeBase.objects.create(slug="kb_other")
    KnowledgeBase.objects.create(slug="kb_test")
    form = DocumentUploadForm(
        data={"knowledge_base": str(other.pk)},
        files=MultiValueDict({"files": [upload("x.txt")]}),
        knowledge_bases=KnowledgeBase.objects.all(),
    )
    assert list(form.fields) == ["knowledge_base", "files"]
    assert form.is_valid(), form.errors
    (document,) = form.save()
    assert document.knowledge_base == other
    assert document.owner is None


@pytest.mark.django_db
def test_saving_an_invalid_form_is_refused():
    form = form_with(upload("bad.exe"))
    assert not form.is_valid()
    with pytest.raises(ValueError):
        form.save()
    assert not KnowledgeDocument.objects.exists()


@pytest.mark.django_db
def test_default_knowledge_base_needs_the_setting(settings):
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "DEFAULT_KNOWLEDGE_BASE": None}
    with pytest.raises(ImproperlyConfigured, match="DEFAULT_KNOWLEDGE_BASE"):
        default_knowledge_base()
