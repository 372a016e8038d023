"""The file types PromptJuggler accepts, by extension: pinned content types and first bytes.

Plain data and pure functions, without Django, so that the client (which names each part's
``Content-Type``) stays usable outside a Django project. The type a browser declares is never
trusted: the extension decides. :mod:`promptjuggler_django.filetypes` re-exports all of it
next to ``validate_file_content``, the Django validator every upload path runs.
"""

from __future__ import annotations

import mimetypes
import os

__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_CONTENT_TYPE",
    "SIGNATURES",
    "SIGNATURE_LENGTH",
    "SUPPORTED_EXTENSIONS",
    "TYPE_NAMES",
    "content_matches_extension",
    "guess_content_type",
]

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
