"""The file types PromptJuggler accepts: extensions, pinned content types. One source for the app.

The upload form, the admin, the REST API, the receivers and the client all decide a file's type
here, from its extension; the type a browser declares is never trusted. For the binary types the
first bytes must agree with the extension (:func:`validate_file_content`).
"""

from __future__ import annotations

import mimetypes
import os
from typing import Any

from django.core.exceptions import ValidationError
from django.core.files import File
from django.utils.translation import gettext_lazy as _

#: PromptJuggler's documented supported file types.
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".txt", ".csv", ".tsv", ".md", ".html", ".pdf", ".docx")

#: Content types for the file types PromptJuggler documents. ``mimetypes`` depends on the host
#: (``/etc/mime.types``, the Windows registry maps ``.csv`` to an Excel type, older tables lack
#: ``.md``), so the supported ones are pinned here.
CONTENT_TYPES: dict[str, str] = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}

DEFAULT_CONTENT_TYPE = "application/octet-stream"


def guess_content_type(file_name: str) -> str:
    """The part ``Content-Type`` for ``file_name``: pinned for supported types, else a guess."""
    ext = os.path.splitext(file_name)[1].lower()
    if ext in CONTENT_TYPES:
        return CONTENT_TYPES[ext]
    return mimetypes.guess_type(file_name, strict=False)[0] or DEFAULT_CONTENT_TYPE


_ZIP = (b"PK\x03\x04",)

#: The first bytes every file of a binary type starts with: a file whose content does not open
#: with one of them is not what its extension says (an HTML page renamed ``report.pdf``, an
#: executable renamed ``letter.docx``) and is refused before it is stored or pushed. DOCX, like
#: every Office Open XML and OpenDocument format, is a ZIP archive; the zip-based types beyond
#: PromptJuggler's are listed for a project that adds them to ``ALLOWED_EXTENSIONS``.
SIGNATURES: dict[str, tuple[bytes, ...]] = {
    ".pdf": (b"%PDF-",),
    ".docx": _ZIP,
    ".xlsx": _ZIP,
    ".pptx": _ZIP,
    ".odt": _ZIP,
    ".ods": _ZIP,
    ".odp": _ZIP,
    ".epub": _ZIP,
}

#: How the refusal names a binary type: "“x.pdf” is not a PDF file: …".
TYPE_NAMES: dict[str, str] = {
    ".pdf": "PDF",
    ".docx": "Word (DOCX)",
    ".xlsx": "spreadsheet (XLSX)",
    ".pptx": "slide deck (PPTX)",
    ".odt": "text document (ODT)",
    ".ods": "spreadsheet (ODS)",
    ".odp": "slide deck (ODP)",
    ".epub": "e-book (EPUB)",
}

#: The most bytes :func:`validate_file_content` reads, whatever the file's size.
SIGNATURE_LENGTH = max(len(magic) for magics in SIGNATURES.values() for magic in magics)


def content_matches_extension(file_name: str, head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) can start a file named ``file_name``.

    Text types (and types without a known signature) always match: only the binary types of
    :data:`SIGNATURES` are checked.
    """
    magics = SIGNATURES.get(os.path.splitext(file_name)[1].lower())
    return magics is None or head.startswith(magics)


def validate_file_content(file: File[Any]) -> None:
    """Refuse a file whose first bytes contradict its extension, with a message naming it.

    The one content check of every upload path (the upload page, the admin, the REST API).
    Reads at most :data:`SIGNATURE_LENGTH` bytes and puts the file back where it was, so the
    file is stored (and later streamed) from its start.
    """
    name = os.path.basename(file.name or "")
    extension = os.path.splitext(name)[1].lower()
    if extension not in SIGNATURES:
        return
    position = file.tell()
    try:
        file.seek(0)
        head = file.read(SIGNATURE_LENGTH)
    finally:
        file.seek(position)
    if not content_matches_extension(name, head):
        raise ValidationError(
            _("“%(name)s” is not a %(kind)s file: its content does not match its extension."),
            code="file_content",
            params={"name": name, "kind": TYPE_NAMES.get(extension, extension)},
        )
