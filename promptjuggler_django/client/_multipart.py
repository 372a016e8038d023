"""A streaming ``multipart/form-data`` body for PromptJuggler uploads.

The upload endpoint wants one part per file, named ``files[0]``, ``files[1]``, … (a bare repeated
``files`` name is read by the server as a single file), each part with a ``filename`` (the server
takes the document's ``fileName`` from it) and an accurate ``Content-Type``.

The body is produced by a generator that reads each file in ``chunk_size`` pieces, so the memory a
request needs does not depend on the size of the files. When every size is known the exact length
is computed up front (``Content-Length``); otherwise the caller sends the body chunked.

:class:`BodyProgress` records how far the transport got: a chunk counts as sent only once the
transport asks for the next one, which it does after the previous one was written to the socket.
That is what lets the client tell "nothing complete reached the server" from "the whole request
was sent and then the connection failed".
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, BinaryIO, Protocol

from ..mediatypes import guess_content_type


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


_NEEDS_ESCAPING = re.compile(r'["\\\x00-\x1f\x7f]')


def quote_filename(file_name: str) -> str:
    """Escape ``file_name`` for the quoted ``filename="…"`` parameter of a part.

    The HTML form-submission rule percent-encodes ``"``, CR and LF and sends other characters as
    raw UTF-8; we also percent-encode the other control characters, which no header may carry.
    A backslash is escaped as ``\\\\`` (as httpx does): servers read ``filename`` as an RFC 9110
    quoted-string, where a raw backslash escapes the next character and disappears.
    ``filename*=`` is deliberately not used: RFC 7578 §4.2 forbids it in ``multipart/form-data``
    and servers built for browsers read the raw UTF-8 form.
    """
    if not _NEEDS_ESCAPING.search(file_name):
        return file_name  # the usual case, and a batch has hundreds of names
    out = []
    for ch in file_name:
        code = ord(ch)
        if ch == '"' or code < 0x20 or code == 0x7F:
            out.append(f"%{code:02X}")
        elif ch == "\\":
            out.append("\\\\")
        else:
            out.append(ch)
    return "".join(out)


def remote_file_name(file_name: str) -> str:
    """The ``fileName`` PromptJuggler records for a file uploaded as ``file_name``.

    A server reading the quoted-string undoes the backslash escapes but not the percent-encoding
    browsers use, so quotes and control characters come back as ``%22``, ``%0D``…: match
    documents listed by the API against this, not against the local name.
    """
    return quote_filename(file_name).replace("\\\\", "\\")


def part_header(boundary: str, index: int, file_name: str, content_type: str) -> bytes:
    """The delimiter and headers that open part ``files[index]``."""
    # Header values with CR/LF would let a file name inject headers or end the part early.
    content_type = content_type.replace("\r", " ").replace("\n", " ")
    return (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="files[{index}]"; '
        f'filename="{quote_filename(file_name)}"\r\n'
        f"Content-Type: {content_type}\r\n"
        "\r\n"
    ).encode()


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode()


def new_boundary() -> str:
    # 128 random bits: the odds of the boundary occurring inside a file are negligible, so the
    # content is never scanned for it (that would mean reading the file twice).
    return "pjdjango" + secrets.token_hex(16)


class StreamError(Exception):
    """Reading a file's stream failed, or it gave more or fewer bytes than its declared size."""


@dataclass
class BodyProgress:
    """How much of a request body the transport has taken."""

    #: bytes of body the transport has written (a chunk counts once the next one is requested)
    sent: int = 0
    #: True once any file stream was read, i.e. the streams' positions have moved
    streams_touched: bool = False
    #: True once the transport asked for more after the last chunk: the whole body was written
    complete: bool = False


@dataclass
class Part:
    file_name: str
    content_type: str
    stream: Readable
    size: int | None


@dataclass
class MultipartBody:
    """The upload body for ``parts``; iterate it once per attempt via :meth:`chunks`."""

    parts: Sequence[Part]
    chunk_size: int = 64 * 1024
    boundary: str = field(default_factory=new_boundary)
    _header_cache: list[bytes] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _headers(self) -> list[bytes]:
        # Built once per body: a batch of small files spends real time quoting names.
        if self._header_cache is None:
            self._header_cache = [
                part_header(self.boundary, i, part.file_name, part.content_type)
                for i, part in enumerate(self.parts)
            ]
        return self._header_cache

    @property
    def content_length(self) -> int | None:
        """The exact body length when every part's size is known, else None (send chunked)."""
        total = len(closing(self.boundary))
        for part, header in zip(self.parts, self._headers(), strict=True):
            if part.size is None:
                return None
            total += len(header) + part.size + 2
        return total

    def chunks(self, progress: BodyProgress) -> Generator[bytes, None, None]:
        """Yield the body, updating ``progress`` as the consumer asks for each next chunk.

        Small pieces (part headers, small files, the CRLF closing each part) are joined into
        chunks of up to ``chunk_size`` bytes: each chunk is one socket write, and a batch of
        small files would otherwise cost three writes per file. A piece that does not fit is
        passed on as it is (never copied), so memory stays bounded by ``chunk_size``. The
        first part header goes out alone: until the transport asks for more, no stream has
        been read, so a connection that fails on the first write can be retried.
        """
        limit = self.chunk_size
        pending: list[bytes] = []
        pending_size = 0
        for i, (part, header) in enumerate(zip(self.parts, self._headers(), strict=True)):
            if i == 0:
                yield header
                progress.sent += len(header)
                pieces: Iterable[bytes] = chain(self._read(part, progress), (b"\r\n",))
            else:
                pieces = chain((header,), self._read(part, progress), (b"\r\n",))
            for piece in pieces:
                if pending and pending_size + len(piece) > limit:
                    chunk = b"".join(pending)
                    pending.clear()
                    pending_size = 0
                    yield chunk
                    progress.sent += len(chunk)
                pending.append(piece)
                pending_size += len(piece)
        pending.append(closing(self.boundary))
        chunk = b"".join(pending)
        yield chunk
        progress.sent += len(chunk)
        progress.complete = True

    def _read(self, part: Part, progress: BodyProgress) -> Generator[bytes, None, None]:
        remaining = part.size
        while remaining is None or remaining > 0:
            want = self.chunk_size if remaining is None else min(self.chunk_size, remaining)
            progress.streams_touched = True
            piece = _read_some(part, want)
            if not piece:
                if remaining is not None:
                    raise StreamError(
                        f"{part.file_name!r} ended {remaining} bytes before its declared size "
                        f"of {part.size} bytes"
                    )
                return
            if remaining is not None:
                remaining -= len(piece)
                if remaining < 0:  # a stream that ignores the size argument
                    raise StreamError(f"{part.file_name!r} is larger than its declared size")
            yield piece
        if _read_some(part, 1):
            raise StreamError(
                f"{part.file_name!r} is larger than its declared size of {part.size} bytes"
            )


def _read_some(part: Part, size: int) -> bytes:
    try:
        value = part.stream.read(size)
    except OSError as exc:  # a storage backend failing mid-file
        raise StreamError(f"reading {part.file_name!r} failed: {exc}") from exc
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(
        f"The stream of {part.file_name!r} returned {type(value).__name__}; open it in binary mode"
    )


def rewind_positions(streams: Sequence[Any]) -> list[int] | None:
    """The current position of every stream if all of them can seek back, else None."""
    positions = []
    for stream in streams:
        try:
            if not stream.seekable():
                return None
            positions.append(stream.tell())
        except (AttributeError, OSError, ValueError):
            return None
    return positions


def rewind(streams: Sequence[BinaryIO | Any], positions: Sequence[int]) -> bool:
    try:
        for stream, pos in zip(streams, positions, strict=True):
            stream.seek(pos)
    except (AttributeError, OSError, ValueError):
        return False
    return True


@dataclass
class UploadFile:
    """One file to upload: a name, a binary stream read in chunks, and optionally its size.

    With a ``size`` for every file the request carries an exact ``Content-Length``; without, it is
    sent chunked. A stream that yields a different number of bytes than ``size`` fails the upload
    before the body is complete (so the server never stores a truncated file).
    """

    file_name: str
    stream: BinaryIO | Any  # anything with .read(n) -> bytes
    size: int | None = None
    content_type: str | None = None
    _owned: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.file_name:
            raise ValueError(
                "UploadFile needs a file_name: PromptJuggler names the document after it"
            )
        if self.content_type is None:
            self.content_type = guess_content_type(self.file_name)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], file_name: str | None = None) -> UploadFile:
        """Open ``path`` for reading; close it with :meth:`close` or a ``with`` block."""
        stream = open(path, "rb")  # noqa: SIM115 - owned by the UploadFile, closed by close()
        size = os.fstat(stream.fileno()).st_size
        return cls(file_name or os.path.basename(path), stream, size, _owned=True)

    @classmethod
    def from_django_file(cls, file: Any, file_name: str | None = None) -> UploadFile:
        """Wrap a Django ``File``/``FieldFile`` (any storage); rewinds it when it can."""
        name = file_name or os.path.basename(file.name or "")
        try:
            size: int | None = file.size
        except (AttributeError, OSError, NotImplementedError, TypeError):
            size = None  # some storages cannot tell: send chunked
        try:
            if file.seekable():
                file.seek(0)
        except (AttributeError, OSError, ValueError):
            pass
        return cls(name, file, size)

    def close(self) -> None:
        """Close the stream if this object opened it (``from_path``)."""
        if self._owned:
            self.stream.close()

    def __enter__(self) -> UploadFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
