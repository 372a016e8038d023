"""Upload forms: several files at once, checked against the size and type limits in settings.

:class:`DocumentUploadForm` is used by the end-user upload page and by the admin's multi-file
upload; :func:`validate_document_file` is shared with the REST API so that every entry point
refuses the same files with the same messages. Saving only creates rows: the app's receivers push
them to PromptJuggler after the transaction commits.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext_lazy as _

from .conf import pj_settings
from .filetypes import guess_content_type, validate_file_content
from .models import KnowledgeBase, KnowledgeDocument
from .uploadhandlers import file_too_large
from .uploadtargets import NOT_ALLOWED

__all__ = [
    "DocumentUploadForm",
    "MultipleFileField",
    "MultipleFileInput",
    "create_documents",
    "default_knowledge_base",
    "report_refused_files",
    "validate_document_file",
]

_FILE_NAME_MAX = KnowledgeDocument._meta.get_field("file_name").max_length or 255


def allowed_extensions() -> list[str]:
    """``PROMPTJUGGLER["ALLOWED_EXTENSIONS"]``, lower-cased, each with its leading dot."""
    return [
        ext.lower() if ext.startswith(".") else f".{ext.lower()}"
        for ext in pj_settings.ALLOWED_EXTENSIONS
    ]


def validate_document_file(file: File[Any]) -> None:
    """Refuse a file PromptJuggler would refuse, that exceeds ``MAX_UPLOAD_SIZE``, or whose first
    bytes contradict its extension (:func:`~promptjuggler_django.filetypes.validate_file_content`).

    Checked here rather than left to the API so the user learns it at once, on the form, instead
    of seeing a document fail minutes later. Raises a :class:`ValidationError` naming the file.
    """
    name = os.path.basename(file.name or "")
    extension = os.path.splitext(name)[1].lower()
    allowed = allowed_extensions()
    if extension not in allowed:
        raise ValidationError(
            _("“%(name)s” is not a supported file type. Allowed types: %(allowed)s."),
            code="file_type",
            params={"name": name, "allowed": ", ".join(allowed)},
        )
    size = file.size or 0
    if size == 0:
        raise ValidationError(_("“%(name)s” is empty."), code="empty_file", params={"name": name})
    if size > pj_settings.MAX_UPLOAD_SIZE:
        raise file_too_large(name, filesizeformat(size))
    validate_file_content(file)


def default_knowledge_base() -> KnowledgeBase:
    """The knowledge base named by ``PROMPTJUGGLER["DEFAULT_KNOWLEDGE_BASE"]`` (created if new).

    PromptJuggler has no API to create a knowledge base, so the slug must exist there; the local
    row only mirrors it (its id and counts are learned by the next sync).
    """
    slug = pj_settings.DEFAULT_KNOWLEDGE_BASE
    if not slug:
        raise ImproperlyConfigured(
            'settings.PROMPTJUGGLER["DEFAULT_KNOWLEDGE_BASE"] must name a knowledge base slug '
            "(kb_…) for uploads that do not choose one."
        )
    knowledge_base, _created = KnowledgeBase.objects.get_or_create(slug=slug)
    return knowledge_base


def create_documents(
    knowledge_base: KnowledgeBase,
    files: Iterable[UploadedFile[Any]],
    owner: Any = None,
) -> list[KnowledgeDocument]:
    """Create one document per file, in one transaction.

    One transaction means one push per knowledge base after commit: PromptJuggler receives the
    files in a single multi-part request instead of one request per file.
    """
    documents = []
    with transaction.atomic():
        for file in files:
            name = os.path.basename(file.name or "")[:_FILE_NAME_MAX]
            documents.append(
                KnowledgeDocument.objects.create(
                    knowledge_base=knowledge_base,
                    owner=owner if owner is not None and owner.is_authenticated else None,
                    file=file,
                    file_name=name,
                    file_size=file.size,
                    content_type=guess_content_type(name),
                )
            )
    return documents


class MultipleFileInput(forms.ClearableFileInput):
    """A file input that lets the browser pick several files (``<input multiple>``)."""

    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field whose cleaned value is a list of files, each checked on its own.

    Every file's errors are reported together, so a user who picked ten files learns about all
    the bad ones at once. With ``keep_good_files``, a choice with at least one good file cleans
    to the good ones, and the bad ones' errors wait in :attr:`refused` (the pages report them
    beside the upload); otherwise any bad file makes the field invalid.
    """

    widget = MultipleFileInput

    def __init__(self, *args: Any, keep_good_files: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        # Empty files are refused by validate_document_file, whose message names the file.
        kwargs.setdefault("allow_empty_file", True)
        super().__init__(*args, **kwargs)
        self.keep_good_files = keep_good_files
        #: The errors of the files left out by the last clean (``keep_good_files`` only).
        self.refused: list[ValidationError] = []

    def clean(self, data: Any, initial: Any = None) -> list[UploadedFile[Any]]:
        single_clean = super().clean
        items = list(data) if isinstance(data, list | tuple) else [data]
        if not any(items):
            return [single_clean(None, initial)] if self.required else []
        cleaned: list[UploadedFile[Any]] = []
        errors: list[ValidationError] = []
        for item in items:
            try:
                cleaned.append(single_clean(item, initial))
            except ValidationError as exc:
                errors.extend(exc.error_list)
        self.refused = []
        if errors and self.keep_good_files and cleaned:
            self.refused = errors
        elif errors:
            raise ValidationError(errors)
        return cleaned


class DocumentUploadForm(forms.Form):
    """Upload one or several documents into a knowledge base.

    ``knowledge_base``: where the files go (default: ``DEFAULT_KNOWLEDGE_BASE``).
    ``knowledge_bases``: a queryset to let the user choose instead (the admin passes one; the
    upload page does when the user may upload into several): anything else is refused with
    :data:`~promptjuggler_django.uploadtargets.NOT_ALLOWED`, whether it exists or not.
    ``refused_upload``: the request's upload was stopped
    (:func:`~promptjuggler_django.uploadhandlers.upload_refusal`): the form is invalid with that
    error on ``files``, whatever files did arrive.
    ``keep_good_files``: a file of the wrong type does not throw away the good ones; the form is
    valid with those, and :attr:`refused_files` says why each other file was left out (the
    upload page and the admin; the REST API stays all-or-nothing). A file over the size limit
    still refuses the whole request.
    """

    # The metaclass moves declared fields into base_fields: no clash with BaseForm.files.
    files = MultipleFileField(  # type: ignore[assignment]
        label=_("Files"),
        validators=[validate_document_file],
        error_messages={"required": _("Choose at least one file to upload.")},
    )

    def __init__(
        self,
        *args: Any,
        knowledge_base: KnowledgeBase | None = None,
        knowledge_bases: QuerySet[KnowledgeBase] | None = None,
        refused_upload: ValidationError | None = None,
        keep_good_files: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.knowledge_base = knowledge_base
        self.refused_upload = refused_upload
        files_field = self.fields["files"]
        assert isinstance(files_field, MultipleFileField)
        files_field.keep_good_files = keep_good_files
        extensions = allowed_extensions()
        files_field.widget.attrs["accept"] = ",".join(extensions)
        files_field.help_text = _("Up to %(limit)s per file. Supported types: %(types)s.") % {
            "limit": filesizeformat(pj_settings.MAX_UPLOAD_SIZE),
            "types": ", ".join(extensions),
        }
        if knowledge_bases is not None:
            self.fields = {
                "knowledge_base": forms.ModelChoiceField(
                    queryset=knowledge_bases,
                    label=_("Knowledge base"),
                    initial=knowledge_base,
                    empty_label=None,
                    error_messages={"invalid_choice": NOT_ALLOWED},
                ),
                **self.fields,
            }

    def full_clean(self) -> None:
        super().full_clean()
        if self.is_bound and self.refused_upload is not None:
            # The upload stopped at a file over the limit: the files that did arrive are not
            # what the user chose, so the refusal is the one thing to say about them.
            self.errors.pop("files", None)
            self.add_error("files", self.refused_upload)

    @property
    def refused_files(self) -> list[str]:
        """Why each file left out of a valid form was refused (``keep_good_files``), one
        message per file, naming it."""
        files_field = self.fields["files"]
        assert isinstance(files_field, MultipleFileField)
        return [message for error in files_field.refused for message in error.messages]

    def target_knowledge_base(self) -> KnowledgeBase:
        """The knowledge base chosen on the form, given to it, or the default one."""
        chosen = self.cleaned_data.get("knowledge_base")
        return chosen or self.knowledge_base or default_knowledge_base()

    def save(self, owner: Any = None) -> list[KnowledgeDocument]:
        """Create the documents (call after :meth:`is_valid`); they are pushed after commit."""
        if self.errors:
            raise ValueError("DocumentUploadForm.save() called on an invalid form.")
        files: Sequence[UploadedFile[Any]] = self.cleaned_data["files"]
        return create_documents(self.target_knowledge_base(), files, owner=owner)


def report_refused_files(request: HttpRequest, form: DocumentUploadForm) -> None:
    """One warning per file left out of an otherwise valid upload, naming it and why."""
    for reason in form.refused_files:
        messages.warning(request, _("Not uploaded: %(reason)s") % {"reason": reason})
