"""Stop an upload while it arrives, as soon as one of its files passes ``MAX_UPLOAD_SIZE``.

Django writes every uploaded file to memory or to a temporary file before any view runs, so a
size check in a form only speaks once the whole file is on disk. :class:`UploadSizeLimitHandler`
goes in front of Django's own upload handlers (the upload page, the admin upload and the REST API
put it there with :meth:`UploadSizeLimitHandler.install`): the chunk that takes a file past the
limit never reaches them, the upload stops, and Django deletes the temporary files it had begun.
The rest of the body is read and thrown away in constant memory (so that the client receives the
answer instead of a reset connection); no part after the refused file is parsed.

The view then refuses the whole request with :func:`upload_refusal`, the same message a form
gives for a file it finds too large (:func:`file_too_large`): nothing of the request is stored.

The limit must be in place before anything reads the request body, and Django's CSRF middleware
reads it for every POST: the views are exempt from the middleware's check and run the same check
themselves right after installing the limit (as Django's documentation on modifying upload
handlers on the fly describes).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from django.core.exceptions import ValidationError
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext_lazy as _

from .conf import pj_settings

__all__ = ["UploadSizeLimitHandler", "file_too_large", "upload_refusal"]

logger = logging.getLogger("promptjuggler_django.uploads")

#: How much of a refused request's remaining body is read (and thrown away) at a time.
DISCARD_CHUNK_SIZE = 64 * 1024


def file_too_large(name: str, size: str, limit: int | None = None) -> ValidationError:
    """The refusal of a file over ``limit`` (``MAX_UPLOAD_SIZE``); ``size``: its size, in words."""
    limit = pj_settings.MAX_UPLOAD_SIZE if limit is None else limit
    return ValidationError(
        _("“%(name)s” is too large (%(size)s). The limit is %(limit)s per file."),
        code="file_size",
        params={"name": name, "size": size, "limit": filesizeformat(limit)},
    )


class UploadSizeLimitHandler(FileUploadHandler):
    """Passes a file's bytes on to the next handlers until the file passes the limit, then stops.

    ``limit``: the most bytes one file may have (default ``MAX_UPLOAD_SIZE``). After a refusal,
    :attr:`refused` names the file.
    """

    def __init__(self, request: HttpRequest | None = None, limit: int | None = None) -> None:
        super().__init__(request)
        #: The most bytes one file may have.
        self.limit = pj_settings.MAX_UPLOAD_SIZE if limit is None else limit
        #: The name of the file that passed the limit, or ``None``.
        self.refused: str | None = None

    @classmethod
    def install(cls, request: HttpRequest) -> bool:
        """Put the limit in front of ``request``'s upload handlers (once); ``False`` if too late.

        Too late is a body already read (by a middleware, or a view that lost its CSRF
        exemption): the form's own size check still refuses the file, after it was received.
        """
        handlers = request.upload_handlers
        if any(isinstance(handler, cls) for handler in handlers):
            return True
        if hasattr(request, "_files"):
            logger.warning(
                "The upload size limit came too late for %s: the request body was already read. "
                "MAX_UPLOAD_SIZE is checked after the upload instead.",
                request.path,
            )
            return False
        handlers.insert(0, cls(request))
        return True

    def new_file(self, field_name: str, file_name: str, *args: Any, **kwargs: Any) -> None:
        super().new_file(field_name, file_name, *args, **kwargs)
        if self.content_length is not None and self.content_length > self.limit:
            self._refuse()  # the part declared its size: no need to read it

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        if start + len(raw_data) > self.limit:
            self._refuse()
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler makes the file

    def _refuse(self) -> None:
        self.refused = os.path.basename(self.file_name or "")
        if self.request is None:
            raise StopUpload(connection_reset=False)
        # The client gets its answer only once its body was read, so the rest is read here and
        # thrown away, chunk by chunk. Django's own discard (StopUpload without a reset) reads
        # the body line by line: a remainder without a newline would come into memory whole.
        while self.request.read(DISCARD_CHUNK_SIZE):
            pass
        raise StopUpload(connection_reset=True)  # nothing left to read


def upload_refusal(request: Any) -> ValidationError | None:
    """Why ``request``'s upload was stopped, or ``None`` (reads the body if not read yet).

    ``request`` is a Django request or a REST framework one.
    """
    request.FILES  # noqa: B018  (parses the body, through the handlers)
    for handler in request.upload_handlers:
        if isinstance(handler, UploadSizeLimitHandler) and handler.refused is not None:
            size = _("more than %(limit)s") % {"limit": filesizeformat(handler.limit)}
            return file_too_large(handler.refused, size, handler.limit)
    return None
