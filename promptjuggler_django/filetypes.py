"""The file types PromptJuggler accepts: extensions, pinned content types. One source for the app.

The upload form, the admin, the REST API, the receivers and the client all decide a file's type
from its extension; the type a browser declares is never trusted. The table and the pure checks
live in :mod:`promptjuggler_django.mediatypes` (Django-free, for the client) and are re-exported
here. For the binary types the first bytes must agree with the extension
(:func:`validate_file_content`, the Django validator every upload path runs).
"""

from __future__ import annotations

import os
from typing import Any

from django.core.exceptions import ValidationError
from django.core.files import File
from django.utils.translation import gettext_lazy as _

from . import mediatypes
from .mediatypes import CONTENT_TYPES as CONTENT_TYPES
from .mediatypes import DEFAULT_CONTENT_TYPE as DEFAULT_CONTENT_TYPE
from .mediatypes import SIGNATURE_LENGTH as SIGNATURE_LENGTH
from .mediatypes import SIGNATURES as SIGNATURES
from .mediatypes import SUPPORTED_EXTENSIONS as SUPPORTED_EXTENSIONS
from .mediatypes import TYPE_NAMES as TYPE_NAMES
from .mediatypes import content_matches_extension as content_matches_extension
from .mediatypes import guess_content_type as guess_content_type

#: The table and pure checks of :mod:`.mediatypes` (re-exported above), and the validator.
__all__ = [*mediatypes.__all__, "validate_file_content"]


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
