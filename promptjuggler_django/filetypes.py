"""The file types PromptJuggler accepts: extensions, pinned content types. One source for the app.

The upload form, the admin, the REST API, the receivers and the client all decide a file's type
here, from its extension; the type a browser declares is never trusted.
"""

from __future__ import annotations

import mimetypes
import os

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
