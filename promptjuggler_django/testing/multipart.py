"""A small streaming ``multipart/form-data`` parser for the emulator.

The emulator must take 400 MB uploads without holding them in memory, so the body is fed in
chunks and part data is handed on as it arrives; only a delimiter's length of bytes is held back
between chunks (a boundary may straddle two reads). Part headers are bounded.

Header parameters are decoded the way common servers do: quoted strings with backslash escapes
(``filename="a \\"b\\".txt"``), bare tokens, and RFC 5987 ``filename*=UTF-8''…`` (which wins over
``filename``). Percent escapes inside a plain quoted ``filename`` (``%22`` from HTML5-style
encoders such as browsers, httpx and urllib3) are *not* decoded: the bytes are the file name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

#: Part headers larger than this are refused (a real one is a few hundred bytes).
MAX_PART_HEADER_BYTES = 16 * 1024
#: Parts per request beyond this are refused.
MAX_PARTS = 1000

#: ``form-data; name="…"; filename="…"`` without escapes, parsed in one step.
_SIMPLE_DISPOSITION = re.compile(
    r'[ \t]*([A-Za-z-]+)[ \t]*;[ \t]*name="([^"\\]*)"[ \t]*;[ \t]*filename="([^"\\]*)"[ \t]*'
)
_BOUNDARY_CHARS = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$")


class MultipartError(ValueError):
    """The body is not well-formed multipart (answered with 400)."""


@dataclass
class PartHeaders:
    """The headers of one part, with Content-Disposition already taken apart."""

    #: Header names are lowercased; values are decoded as UTF-8 (invalid bytes replaced).
    headers: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    filename: str | None = None

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


def parse_header_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``form-data; name="x"; filename*=UTF-8''y`` into ``("form-data", {...})``.

    Parameter names are lowercased. A ``name*`` parameter in RFC 5987 form is decoded and stored
    under ``name*``; callers decide which wins.
    """
    simple = _SIMPLE_DISPOSITION.fullmatch(value)
    if simple is not None:  # what every client sends for a file part
        return simple.group(1).lower(), {"name": simple.group(2), "filename": simple.group(3)}
    pos = 0
    length = len(value)

    def skip_ws() -> None:
        nonlocal pos
        while pos < length and value[pos] in " \t":
            pos += 1

    end = value.find(";")
    main = (value if end < 0 else value[:end]).strip().lower()
    params: dict[str, str] = {}
    pos = length if end < 0 else end + 1
    while pos < length:
        skip_ws()
        eq = pos
        while eq < length and value[eq] not in "=;":
            eq += 1
        key = value[pos:eq].strip().lower()
        if eq >= length or value[eq] == ";":
            pos = eq + 1  # a parameter without a value: ignore it
            continue
        pos = eq + 1
        skip_ws()
        if pos < length and value[pos] == '"':
            pos += 1
            chars: list[str] = []
            while pos < length and value[pos] != '"':
                if value[pos] == "\\" and pos + 1 < length:
                    pos += 1
                chars.append(value[pos])
                pos += 1
            pos += 1  # the closing quote (or the end of a truncated value)
            raw = "".join(chars)
            semi = value.find(";", pos)
            pos = length if semi < 0 else semi + 1
        else:
            semi = value.find(";", pos)
            raw = (value[pos:] if semi < 0 else value[pos:semi]).strip()
            pos = length if semi < 0 else semi + 1
        if key.endswith("*"):
            raw = _decode_rfc5987(raw)
        if key:
            params[key] = raw
    return main, params


def _decode_rfc5987(raw: str) -> str:
    """Decode ``UTF-8''na%C3%AFve.txt`` (charset'language'percent-encoded)."""
    charset, sep, rest = raw.partition("'")
    if not sep:
        return unquote(raw)
    _language, sep, encoded = rest.partition("'")
    if not sep:
        return unquote(rest)
    try:
        return unquote(encoded, encoding=charset or "utf-8", errors="replace")
    except LookupError:
        return unquote(encoded, encoding="utf-8", errors="replace")


def boundary_from_content_type(content_type: str | None) -> str:
    """The boundary of a ``multipart/form-data`` Content-Type, or raise :class:`MultipartError`."""
    if not content_type:
        raise MultipartError("missing Content-Type")
    main, params = parse_header_params(content_type)
    if main != "multipart/form-data":
        raise MultipartError("Content-Type is not multipart/form-data")
    boundary = params.get("boundary", "")
    if not _BOUNDARY_CHARS.match(boundary) or boundary.endswith(" "):
        raise MultipartError("missing or invalid multipart boundary")
    return boundary


def _parse_part_headers(block: bytes) -> PartHeaders:
    text = block.decode("utf-8", errors="replace")
    headers: dict[str, str] = {}
    last: str | None = None
    for line in text.split("\r\n"):
        if not line:
            continue
        if line[0] in " \t" and last is not None:  # obsolete line folding
            headers[last] += " " + line.strip()
            continue
        key, sep, val = line.partition(":")
        if not sep:
            raise MultipartError("malformed part header line")
        last = key.strip().lower()
        headers[last] = val.strip()
    part = PartHeaders(headers=headers)
    disposition = headers.get("content-disposition")
    if disposition:
        _kind, params = parse_header_params(disposition)
        part.name = params.get("name*", params.get("name"))
        part.filename = params.get("filename*", params.get("filename"))
    return part


class MultipartParser:
    """Push parser: :meth:`feed` it chunks, then :meth:`close` it.

    Calls ``on_part_begin(PartHeaders)``, ``on_part_data(bytes)`` (any number of times) and
    ``on_part_end()`` for each part, in order.
    """

    _PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _DONE = range(5)

    def __init__(
        self,
        boundary: str,
        on_part_begin: Callable[[PartHeaders], None],
        on_part_data: Callable[[bytes], None],
        on_part_end: Callable[[], None],
    ) -> None:
        # Every delimiter but the first is preceded by CRLF; feeding a CRLF first makes the
        # first one look the same, so one search rule covers all of them.
        self._delimiter = b"\r\n--" + boundary.encode("ascii")
        self._buffer = bytearray(b"\r\n")
        self._state = self._PREAMBLE
        self._parts = 0
        self._begin = on_part_begin
        self._data = on_part_data
        self._end = on_part_end

    def feed(self, chunk: bytes) -> None:
        if self._state == self._DONE:
            return  # the epilogue is ignored
        self._buffer += chunk
        self._run()

    def close(self) -> None:
        """Finish; a body that ended before the closing delimiter is an error."""
        self._run()
        if self._state != self._DONE:
            raise MultipartError("multipart body ended before the closing boundary")

    def _run(self) -> None:
        # Consumed bytes are dropped once per call, not once per part: a request of many
        # small files would otherwise move the rest of the buffer for every part.
        buf = self._buffer
        pos = 0
        try:
            pos = self._advance(buf)
        finally:
            if pos:
                del buf[:pos]

    def _advance(self, buf: bytearray) -> int:
        """Parse from the start of ``buf``; returns how many bytes were consumed."""
        delim = self._delimiter
        pos = 0
        while True:
            if self._state == self._PREAMBLE:
                at = buf.find(delim, pos)
                if at < 0:
                    # Keep only what could be the start of a delimiter.
                    return max(pos, len(buf) - len(delim) + 1)
                pos = at + len(delim)
                self._state = self._AFTER_DELIMITER
            elif self._state == self._AFTER_DELIMITER:
                if len(buf) - pos < 2:
                    return pos
                if buf[pos : pos + 2] == b"--":
                    self._state = self._DONE
                    return len(buf)
                # Transport padding (spaces or tabs) may follow a delimiter before its CRLF.
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    if len(buf) - pos > 256:
                        raise MultipartError("malformed boundary line")
                    return pos
                if buf[pos:line_end].strip(b" \t"):
                    raise MultipartError("malformed boundary line")
                pos = line_end + 2
                self._state = self._HEADERS
            elif self._state == self._HEADERS:
                if buf.startswith(b"\r\n", pos):
                    end, skip = pos, 2  # a part with no headers at all
                else:
                    end = buf.find(b"\r\n\r\n", pos)
                    skip = 4
                if end < 0:
                    if len(buf) - pos > MAX_PART_HEADER_BYTES:
                        raise MultipartError("part headers too large")
                    return pos
                if end - pos > MAX_PART_HEADER_BYTES:
                    raise MultipartError("part headers too large")
                self._parts += 1
                if self._parts > MAX_PARTS:
                    raise MultipartError("too many parts")
                headers = _parse_part_headers(bytes(buf[pos:end]))
                pos = end + skip
                self._state = self._BODY
                self._begin(headers)
            elif self._state == self._BODY:
                at = buf.find(delim, pos)
                if at < 0:
                    safe = len(buf) - len(delim) + 1
                    if safe > pos:
                        self._data(bytes(buf[pos:safe]))
                        return safe
                    return pos
                if at > pos:
                    self._data(bytes(buf[pos:at]))
                pos = at + len(delim)
                self._end()
                self._state = self._AFTER_DELIMITER
            else:
                return len(buf)  # the epilogue is ignored
