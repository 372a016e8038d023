"""Open a stored file as a streaming binary reader, whatever the Django storage.

A push must cost the same memory for a 4 KB and a 400 MB file, so files are read in chunks
straight from their storage into the request body. ``Storage.open()`` is fine for the local
file system, but django-storages' ``S3Storage.open()`` downloads the whole object into a
``SpooledTemporaryFile`` first (memory up to ``AWS_S3_MAX_MEMORY_SIZE``, default unlimited), so for
S3 the object's body is streamed from the ``GET`` response instead.

A storage can provide its own streaming by defining ``open_stream(name) -> binary reader``; it
wins over everything here.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import sys
from typing import Any, BinaryIO

from django.core.files.storage import Storage

__all__ = ["LazyStoredFile", "open_stored_file", "stored_size"]


def _s3_storage_class() -> type | None:
    # An S3Storage instance means its module is imported already; never import boto3 here
    # (it costs a third of a second and ~15 MB) just to learn a storage is not S3.
    module = sys.modules.get("storages.backends.s3")
    return getattr(module, "S3Storage", None)


def is_s3_storage(storage: Storage) -> bool:
    cls = _s3_storage_class()
    return cls is not None and isinstance(storage, cls)


def open_stored_file(storage: Storage, name: str) -> BinaryIO:
    """A binary reader over ``name`` in ``storage`` that never holds the whole file.

    Raises ``FileNotFoundError`` when the file does not exist (for S3 too). Close the reader.
    """
    opener = getattr(storage, "open_stream", None)
    if callable(opener):
        return opener(name)  # type: ignore[no-any-return]
    if is_s3_storage(storage):
        return _open_s3(storage, name)
    return storage.open(name, "rb")  # type: ignore[return-value]


def stored_size(storage: Storage, name: str) -> int | None:
    """The number of bytes :func:`open_stored_file` will yield, or None when it cannot be known
    without reading (a gzip-encoded S3 object is stored compressed but read decompressed)."""
    if is_s3_storage(storage) and getattr(storage, "gzip", False):
        return None
    try:
        return int(storage.size(name))
    except (NotImplementedError, TypeError, ValueError):
        return None


# -- S3 --------------------------------------------------------------------------------------


def _open_s3(storage: Any, name: str) -> BinaryIO:
    from botocore.exceptions import ClientError  # type: ignore[import-untyped]
    from storages.utils import clean_name  # type: ignore[import-untyped]

    key = storage._normalize_name(clean_name(name))
    params = _s3_download_params(storage, name)
    try:
        response = storage.bucket.Object(key).get(**params)
    except ClientError as err:
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = err.response.get("Error", {}).get("Code")
        if status == 404 or code in ("NoSuchKey", "404", "NotFound"):
            raise FileNotFoundError(f"File does not exist: {name}") from None
        raise OSError(f"S3 GET of {name!r} failed: {code or status}") from err
    reader = S3BodyReader(response["Body"], size=response.get("ContentLength"))
    if getattr(storage, "gzip", False) and response.get("ContentEncoding") == "gzip":
        # django-storages compresses on save when AWS_IS_GZIPPED is on; S3Storage.open()
        # hands back the original bytes, so do the same, decompressing as we go.
        return gzip.GzipFile(fileobj=reader, mode="rb")  # type: ignore[return-value]
    return reader  # type: ignore[return-value]


def _s3_download_params(storage: Any, name: str) -> dict[str, Any]:
    """SSE-C parameters from ``AWS_S3_OBJECT_PARAMETERS`` (what ``S3Storage.open()`` sends)."""
    try:
        from storages.backends.s3 import (  # type: ignore[import-untyped]
            _filter_download_params,
        )
    except ImportError:  # pragma: no cover - older django-storages
        return {}
    return dict(_filter_download_params(storage.get_object_parameters(name)))


class _ReadStream(io.RawIOBase):
    """A raw stream whose subclasses implement ``read``; ``readinto`` is built on it."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n


class S3BodyReader(_ReadStream):
    """A file-like view of a botocore ``StreamingBody``: read-only, forward-only, chunked.

    botocore raises its own exceptions mid-stream (``IncompleteReadError``, urllib3 protocol
    errors); they are turned into ``OSError`` so callers handle one kind of read failure.
    """

    def __init__(self, body: Any, size: int | None = None) -> None:
        super().__init__()
        self._body = body
        #: ``Content-Length`` of the object as S3 answered it.
        self.size = size

    def read(self, size: int | None = -1) -> bytes:
        try:
            if size is None or size < 0:
                return self._body.read()  # type: ignore[no-any-return]
            return self._body.read(size)  # type: ignore[no-any-return]
        except OSError:
            raise
        except Exception as exc:
            raise OSError(f"reading the S3 object failed: {type(exc).__name__}") from exc

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            finally:
                super().close()


# -- lazily opened files ---------------------------------------------------------------------


class LazyStoredFile(_ReadStream):
    """A stored file opened at its first read and closed at EOF or :meth:`close`.

    A batch upload lists many files but sends them one after another; opening each only when
    its part starts keeps one storage connection busy at a time instead of one per file.
    The reader records what went wrong (:attr:`error`) so that a failed batch can tell which
    file broke it: a missing file, a storage error, or a size different from the declared one.
    """

    def __init__(self, storage: Storage, name: str, expected_size: int | None = None) -> None:
        super().__init__()
        self.storage = storage
        self.name = name
        self.expected_size = expected_size
        self.bytes_read = 0
        #: Why this file broke the upload: ``"missing"``, ``"read_error"``, ``"size_mismatch"``.
        self.error: str | None = None
        self.error_detail = ""
        self._inner: BinaryIO | None = None
        self._eof = False

    def _open(self) -> BinaryIO:
        if self._inner is None:
            try:
                self._inner = open_stored_file(self.storage, self.name)
            except FileNotFoundError as exc:
                self._fail("missing", f"file {self.name!r} not found in storage")
                raise FileNotFoundError(self.error_detail) from exc
            except Exception as exc:
                self._fail("read_error", f"opening {self.name!r} failed: {type(exc).__name__}")
                raise OSError(self.error_detail) from exc
        return self._inner

    def _fail(self, kind: str, detail: str) -> None:
        if self.error is None:
            self.error, self.error_detail = kind, detail

    def read(self, size: int | None = -1) -> bytes:
        if self._eof:
            return b""
        inner = self._open()
        try:
            data = inner.read(-1 if size is None else size)
        except Exception as exc:
            self._fail("read_error", f"reading {self.name!r} failed: {exc}")
            raise OSError(self.error_detail) from exc
        if isinstance(data, bytearray | memoryview):
            data = bytes(data)
        self.bytes_read += len(data)
        expected = self.expected_size
        if expected is not None and self.bytes_read > expected:
            self._fail(
                "size_mismatch", f"{self.name!r} is larger than its recorded size of {expected}"
            )
        if not data:
            if expected is not None and self.bytes_read < expected:
                self._fail(
                    "size_mismatch",
                    f"{self.name!r} has {self.bytes_read} bytes, not the recorded {expected}",
                )
            self._eof = True
            self._close_inner()
        return data

    def _close_inner(self) -> None:
        inner, self._inner = self._inner, None
        if inner is not None:
            # Closing a read stream must not mask the upload's outcome.
            with contextlib.suppress(Exception):
                inner.close()

    def close(self) -> None:
        if not self.closed:
            self._close_inner()
            super().close()

    def __repr__(self) -> str:
        return f"<LazyStoredFile {os.path.basename(self.name)!r}>"
