"""Read an HTTP/1.1 request body in bounded chunks: ``Content-Length`` or chunked encoding."""

from __future__ import annotations

from typing import Protocol

#: Chunk size used when reading request bodies.
READ_SIZE = 64 * 1024
_MAX_CHUNK_LINE = 4096
_MAX_TRAILER_BYTES = 16 * 1024


class _Stream(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...
    def read1(self, size: int = ..., /) -> bytes: ...
    def readline(self, size: int = ..., /) -> bytes: ...


class BodyError(Exception):
    """The request body is malformed or was cut off (the connection is then closed)."""


class BodyTooLarge(BodyError):
    """The body exceeds the emulator's request size bound (answered with 413)."""


class BodyReader:
    """Yields a request body chunk by chunk, never more than ``READ_SIZE`` bytes at a time.

    ``limit`` bounds the total body size; a declared ``Content-Length`` above it is refused
    before a byte is read, a chunked body as soon as it grows past it.
    """

    def __init__(
        self,
        rfile: _Stream,
        *,
        content_length: int | None,
        chunked: bool,
        limit: int,
    ) -> None:
        self._rfile = rfile
        self._chunked = chunked
        self._limit = limit
        self._remaining = 0 if content_length is None else content_length
        self._chunk_left = 0
        self._done = not chunked and self._remaining == 0
        #: Bytes of body (decoded from chunking) read so far.
        self.bytes_read = 0
        if not chunked and self._remaining > limit:
            raise BodyTooLarge(f"request body of {self._remaining} bytes exceeds {limit}")

    @property
    def done(self) -> bool:
        return self._done

    def read(self) -> bytes:
        """The next piece of the body, or ``b""`` at its end."""
        if self._done:
            return b""
        data = self._read_chunked() if self._chunked else self._read_plain()
        self.bytes_read += len(data)
        if self.bytes_read > self._limit:
            raise BodyTooLarge(f"request body exceeds {self._limit} bytes")
        return data

    def drain(self) -> int:
        """Read and discard the rest of the body; returns how many bytes that was."""
        start = self.bytes_read
        while self.read():
            pass
        return self.bytes_read - start

    def __iter__(self) -> BodyReader:
        return self

    def __next__(self) -> bytes:
        data = self.read()
        if not data:
            raise StopIteration
        return data

    def _read_plain(self) -> bytes:
        # What has arrived, not a full READ_SIZE: parsing keeps pace with a streaming client.
        data = self._rfile.read1(min(READ_SIZE, self._remaining))
        if not data:
            raise BodyError("connection closed before the end of the request body")
        self._remaining -= len(data)
        if self._remaining == 0:
            self._done = True
        return data

    def _read_chunked(self) -> bytes:
        if self._chunk_left == 0:
            size = self._next_chunk_size()
            if size == 0:
                self._read_trailers()
                self._done = True
                return b""
            self._chunk_left = size
        data = self._rfile.read(min(READ_SIZE, self._chunk_left))
        if not data:
            raise BodyError("connection closed inside a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and self._rfile.read(2) != b"\r\n":
            raise BodyError("chunk not followed by CRLF")
        return data

    def _next_chunk_size(self) -> int:
        line = self._rfile.readline(_MAX_CHUNK_LINE + 1)
        if not line.endswith(b"\n") or len(line) > _MAX_CHUNK_LINE:
            raise BodyError("malformed chunk size line")
        size_text = line.split(b";", 1)[0].strip()  # chunk extensions are ignored
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BodyError("malformed chunk size") from None
        if size < 0 or not size_text.isalnum():
            raise BodyError("malformed chunk size")
        if self.bytes_read + size > self._limit:
            raise BodyTooLarge(f"request body exceeds {self._limit} bytes")
        return size

    def _read_trailers(self) -> None:
        total = 0
        while True:
            line = self._rfile.readline(_MAX_CHUNK_LINE + 1)
            total += len(line)
            if not line or total > _MAX_TRAILER_BYTES:
                raise BodyError("malformed chunked trailer")
            if line in (b"\r\n", b"\n"):
                return
