"""Tests for promptjuggler_django.client.

Most tests talk to :class:`LoopbackServer`, a raw HTTP/1.1 server on 127.0.0.1 whose next answers
are scripted per test (answer, answer slowly, reset in the middle of or after the body), because the
client's promises are about what happens on a real socket. respx is used only where the exact
bytes on the wire are asserted.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import io
import json
import logging
import pickle
import re
import socket
import struct
import threading
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.http.multipartparser import MultiPartParser
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from promptjuggler_django.client import (
    AccessDenied,
    APIError,
    AuthenticationError,
    FileReadError,
    InvalidResponse,
    NotFound,
    OutcomeUnknown,
    PromptJugglerClient,
    PromptJugglerError,
    RateLimited,
    RemoteDocument,
    RemoteKnowledgeBase,
    RequestNotSent,
    ServerError,
    UnprocessableEntity,
    UploadFile,
    parse_retry_after,
    remote_file_name,
)
from promptjuggler_django.client._multipart import BodyProgress, MultipartBody, Part, quote_filename

API_KEY = "pj_live_SECRET_7f3a9c"
DOC_ID = "3f2b8c1e-8a4d-4c55-9a8e-1c2d3e4f5a6b"
KB_ID = "9d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"


# -- a scriptable loopback HTTP server -------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None = None  # None when the behaviour did not read it
    body_sha256: str = ""


@dataclass
class Exchange:
    """One request on the server side; behaviours use it to read the body and answer."""

    conn: socket.socket
    rfile: Any
    received: Received
    stop: threading.Event
    closed: bool = False

    def read_body(self, keep: int = 1 << 20) -> bytes:
        """Read the whole body (Content-Length or chunked); keep at most ``keep`` bytes."""
        digest, kept, total = hashlib.sha256(), bytearray(), 0
        for piece in self._body_pieces():
            digest.update(piece)
            total += len(piece)
            if len(kept) < keep:
                kept += piece[: keep - len(kept)]
        self.received.body = bytes(kept)
        self.received.body_sha256 = digest.hexdigest()
        return self.received.body

    def _body_pieces(self) -> Iterator[bytes]:
        headers = self.received.headers
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        remaining = int(headers.get("content-length", "0"))
        while remaining:
            piece = self.rfile.read(min(remaining, 1 << 16))
            if not piece:
                return
            remaining -= len(piece)
            yield piece

    def respond(self, status: int, body: Any = b"", headers: dict[str, str] | None = None) -> None:
        if not isinstance(body, bytes | str):
            body = json.dumps(body)
            headers = {"Content-Type": "application/json", **(headers or {})}
        data = body.encode() if isinstance(body, str) else body
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines.append(f"Content-Length: {len(data)}")
        self.conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)

    def reset(self) -> None:
        """Abort the connection with a TCP RST."""
        self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # the file holds a reference: the socket closes with the last one
        self.conn.close()
        self.closed = True


Behaviour = Callable[[Exchange], None]


def answer(status: int, body: Any = b"", headers: dict[str, str] | None = None) -> Behaviour:
    def run(ex: Exchange) -> None:
        ex.read_body()
        ex.respond(status, body, headers)

    return run


def slow_answer(seconds: float, status: int = 200, body: Any = b"[]") -> Behaviour:
    """Read the whole body, then keep the client waiting."""

    def run(ex: Exchange) -> None:
        ex.read_body()
        if not ex.stop.wait(seconds):
            ex.respond(status, body)

    return run


def reset_after_body(ex: Exchange) -> None:
    ex.read_body()
    ex.reset()


def reset_mid_body(ex: Exchange) -> None:
    """Take the first MiB of the body (so the client has started reading the file), then RST."""
    ex.rfile.read(1 << 20)
    ex.reset()


def echo_upload(ex: Exchange) -> None:
    """Answer an upload like PromptJuggler: one pending document per ``files[i]`` part."""
    raw = ex.read_body(keep=1 << 30)
    boundary = ex.received.headers["content-type"].split("boundary=")[1].encode()
    docs = []
    for chunk in raw.split(b"--" + boundary)[1:-1]:  # fast enough for 32 MB, unlike `email`
        head, _, data = chunk.partition(b"\r\n\r\n")
        file_name = head.split(b'filename="')[1].split(b'"')[0].decode()
        docs.append(
            {
                "id": str(uuid.uuid4()),
                "status": "pending",
                "fileName": file_name,
                "bytes": len(data) - 2,
                "chunkCount": 0,
            }
        )
    ex.respond(200, docs)


class LoopbackServer:
    """Serves scripted behaviours in order, then ``default``; records every request."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.script: deque[Behaviour] = deque()
        self.default: Behaviour = answer(500, {"error": "unscripted request"})
        self.requests: list[Received] = []
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def push(self, *behaviours: Behaviour) -> None:
        self.script.extend(behaviours)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        rfile = conn.makefile("rb")
        try:
            while not self.stop.is_set():
                line = rfile.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (h := rfile.readline()) not in (b"\r\n", b""):
                    k, _, v = h.decode("utf-8", "replace").partition(":")
                    headers[k.strip().lower()] = v.strip()
                received = Received(method, path, headers)
                self.requests.append(received)
                behaviour = self.script.popleft() if self.script else self.default
                exchange = Exchange(conn, rfile, received, self.stop)
                behaviour(exchange)
                if exchange.closed:
                    return
        except (OSError, ValueError):
            return
        finally:
            rfile.close()
            conn.close()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer()
    yield srv
    srv.close()


@dataclass
class Harness:
    client: PromptJugglerClient
    sleeps: list[float] = field(default_factory=list)


def make_client(base_url: str, **kw: Any) -> PromptJugglerClient:
    kw.setdefault("timeout", httpx.Timeout(connect=2.0, read=0.5, write=5.0, pool=1.0))
    kw.setdefault("max_retries", 2)
    client = PromptJugglerClient(api_key=API_KEY, base_url=base_url, **kw)
    client._sleep = lambda s: None
    return client


@pytest.fixture
def harness(server: LoopbackServer) -> Iterator[Harness]:
    h = Harness(make_client(server.url))
    h.client._sleep = h.sleeps.append
    yield h
    h.client.close()


def refused_url() -> str:
    """A loopback URL where nothing listens."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def parse_multipart(content_type: str, body: bytes) -> list[dict[str, Any]]:
    """Parse with the standard library's MIME parser."""
    msg = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )
    assert msg.is_multipart() and not msg.defects
    return [
        {
            "name": part.get_param("name", header="content-disposition"),
            "filename": part.get_filename(),
            "content_type": part.get_content_type(),
            "data": part.get_payload(decode=True),
        }
        for part in msg.iter_parts()
    ]


class Unseekable(io.RawIOBase):
    """``size`` bytes of a repeating pattern, produced on demand, no seeking."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.reads: list[int] = []

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        self.reads.append(n)
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return b"x" * n


def doc_json(**overrides: Any) -> dict[str, Any]:
    return {
        "id": DOC_ID,
        "status": "pending",
        "fileName": "a.md",
        "bytes": 3,
        "chunkCount": 0,
        **overrides,
    }


# -- uploads --------------------------------------------------------------------------------


def test_upload_streams_parts_with_exact_length(server, harness, tmp_path):
    path = tmp_path / "guide.md"
    path.write_bytes(b"# Guide\n" * 1000)
    server.push(echo_upload)
    with UploadFile.from_path(path) as f1:
        f2 = UploadFile("table.csv", io.BytesIO(b"a,b\n1,2\n"), size=8)
        docs = harness.client.upload_documents("kb_docs", [f1, f2])
    assert [d.file_name for d in docs] == ["guide.md", "table.csv"]
    assert [d.bytes for d in docs] == [8000, 8]
    assert all(isinstance(d, RemoteDocument) and d.status == "pending" for d in docs)
    req = server.requests[0]
    assert (req.method, req.path) == ("POST", "/api/v1/knowledge-bases/kb_docs/documents")
    assert req.headers["authorization"] == f"Bearer {API_KEY}"
    assert "transfer-encoding" not in req.headers
    assert int(req.headers["content-length"]) == len(req.body)
    parts = parse_multipart(req.headers["content-type"], req.body)
    assert [(p["name"], p["filename"], p["content_type"]) for p in parts] == [
        ("files[0]", "guide.md", "text/markdown"),
        ("files[1]", "table.csv", "text/csv"),
    ]
    assert parts[0]["data"] == path.read_bytes()
    assert harness.sleeps == []


def test_upload_of_unknown_size_is_chunked(server, harness):
    server.push(echo_upload)
    stream = Unseekable(200_000)
    docs = harness.client.upload_documents("kb", [UploadFile("big.txt", stream)])
    req = server.requests[0]
    assert req.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in req.headers
    assert docs[0].bytes == 200_000
    assert max(stream.reads) == harness.client.chunk_size


def test_upload_timeout_after_body_is_outcome_unknown_and_not_retried(server, harness):
    server.push(slow_answer(5))
    with pytest.raises(OutcomeUnknown) as info:
        harness.client.upload_documents("kb", [UploadFile("a.md", io.BytesIO(b"abc"), 3)])
    assert "ReadTimeout" in str(info.value)
    assert len(server.requests) == 1
    assert server.requests[0].body  # the server had the whole body
    assert harness.sleeps == []


def test_upload_reset_after_body_is_outcome_unknown(server, harness):
    server.push(reset_after_body, echo_upload)
    with pytest.raises(OutcomeUnknown):
        harness.client.upload_documents("kb", [UploadFile("a.md", io.BytesIO(b"abc"), 3)])
    assert len(server.requests) == 1


def test_upload_connection_refused_is_retried_then_not_sent():
    client = make_client(refused_url(), max_retries=2)
    sleeps: list[float] = []
    client._sleep = sleeps.append
    stream = io.BytesIO(b"abc")
    with pytest.raises(RequestNotSent) as info:
        client.upload_documents("kb", [UploadFile("a.md", stream, 3)])
    assert "could not connect to 127.0.0.1:" in str(info.value)
    assert len(sleeps) == 2  # nothing was read from the stream, so each retry was safe
    assert stream.tell() == 0


def test_connection_refused_names_the_host_and_the_setting():
    """Is it PromptJuggler that is down, or a wrong BASE_URL? The message says where it tried."""
    url = refused_url()
    client = make_client(url, max_retries=0)
    with pytest.raises(RequestNotSent) as info:
        client.get_knowledge_base("kb")
    host = url.removeprefix("http://")
    assert f"could not connect to {host} (BASE_URL): Connection refused" in str(info.value)
    assert "Errno" not in str(info.value)
    assert str(info.value).startswith("GET /api/v1/knowledge-bases/kb: ")


def test_an_unknown_host_is_named():
    client = make_client("https://pj-no-such-host.invalid", max_retries=0)
    with pytest.raises(RequestNotSent) as info:
        client.upload_documents("kb", [UploadFile("a.md", io.BytesIO(b"abc"), 3)])
    message = str(info.value)
    assert "could not connect to pj-no-such-host.invalid (BASE_URL): " in message
    assert API_KEY not in message


def test_the_host_named_has_no_user_info():
    url = refused_url().replace("http://", f"http://user:{API_KEY}@")
    client = make_client(url, max_retries=0)
    with pytest.raises(RequestNotSent) as info:
        client.get_knowledge_base("kb")
    assert "could not connect to 127.0.0.1:" in str(info.value)
    assert API_KEY not in str(info.value) and "user" not in str(info.value)


def test_upload_broken_mid_body_is_not_sent_and_unseekable_is_not_retried(server, harness):
    server.push(reset_mid_body)
    stream = Unseekable(32 * 1024 * 1024)
    with pytest.raises(RequestNotSent) as info:
        harness.client.upload_documents("kb", [UploadFile("big.txt", stream, 32 * 1024 * 1024)])
    assert "bytes of the body" in str(info.value)
    assert harness.sleeps == [] and len(server.requests) == 1


def test_upload_broken_mid_body_is_resent_when_streams_can_rewind(server, harness, tmp_path):
    path = tmp_path / "big.txt"
    size = 32 * 1024 * 1024
    with open(path, "wb") as f:
        f.truncate(size)  # a sparse file of zeros: fast to create
    server.push(reset_mid_body, echo_upload)
    with UploadFile.from_path(path) as upload:
        docs = harness.client.upload_documents("kb", [upload])
    assert docs[0].bytes == size
    assert len(server.requests) == 2 and len(harness.sleeps) == 1


def test_upload_429_is_not_retried_and_carries_retry_after(server, harness):
    server.push(answer(429, {"error": "Too many requests"}, {"Retry-After": "7"}))
    with pytest.raises(RateLimited) as info:
        harness.client.upload_documents("kb", [UploadFile("a.md", io.BytesIO(b"abc"), 3)])
    err = info.value
    assert (err.status_code, err.retry_after, err.message, err.retryable) == (
        429,
        7.0,
        "Too many requests",
        True,
    )
    assert len(server.requests) == 1 and harness.sleeps == []


def test_upload_5xx_is_not_retried(server, harness):
    server.push(answer(503, "<html>Service Unavailable</html>"))
    with pytest.raises(ServerError) as info:
        harness.client.upload_documents("kb", [UploadFile("a.md", io.BytesIO(b"abc"), 3)])
    assert info.value.message == "<html>Service Unavailable</html>"
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, AuthenticationError),
        (403, AccessDenied),
        (404, NotFound),
        (422, UnprocessableEntity),
        (400, APIError),
    ],
)
def test_upload_definite_errors_are_typed(server, harness, status, cls):
    server.push(answer(status, {"error": f"refused {status}"}))
    with pytest.raises(cls) as info:
        harness.client.upload_documents("kb", [UploadFile("a.md", io.BytesIO(b"abc"), 3)])
    assert info.value.message == f"refused {status}"
    assert not info.value.retryable
    assert type(info.value) is cls


def test_upload_declared_size_too_large_fails_before_the_body_ends(server, harness):
    server.push(echo_upload)
    with pytest.raises(FileReadError, match="ended 2 bytes before"):
        harness.client.upload_documents("kb", [UploadFile("a.md", io.BytesIO(b"abc"), 5)])
    assert harness.sleeps == []  # resending the same wrong size cannot help


def test_upload_declared_size_too_small_fails(server, harness):
    server.push(echo_upload)
    with pytest.raises(FileReadError, match="larger than its declared size"):
        harness.client.upload_documents("kb", [UploadFile("a.md", io.BytesIO(b"abcdef"), 3)])


def test_upload_answer_that_is_not_a_list_is_invalid(server, harness):
    server.push(answer(200, {"documents": []}))
    with pytest.raises(InvalidResponse) as info:
        harness.client.upload_documents("kb", [UploadFile("a.md", io.BytesIO(b"abc"), 3)])
    assert info.value.status_code == 200 and '"documents"' in info.value.body


def test_slug_is_a_single_path_segment(server, harness):
    server.push(answer(200, {"id": KB_ID, "status": "ready"}))
    harness.client.get_knowledge_base("kb/../x y")
    assert server.requests[0].path == "/api/v1/knowledge-bases/kb%2F..%2Fx%20y"


# -- GET and DELETE -------------------------------------------------------------------------


def test_get_knowledge_base_parses_summaries_and_tolerates_surprises(server, harness):
    server.push(
        answer(
            200,
            {
                "id": KB_ID,
                "status": "reindexing",
                "documentCount": 2,
                "chunkCount": 14,
                "name": "new",
                "documents": [
                    {
                        "id": DOC_ID,
                        "status": "ready",
                        "fileName": "a.md",
                        "bytes": 10,
                        "mimeType": "text/markdown",
                        "extra": {"x": 1},
                    },
                    {"id": str(uuid.UUID(int=1)), "status": "quarantined", "fileName": "b.pdf"},
                ],
            },
        )
    )
    kb = harness.client.get_knowledge_base("kb_docs")
    assert isinstance(kb, RemoteKnowledgeBase)
    assert (kb.id, kb.status, kb.document_count, kb.chunk_count) == (
        uuid.UUID(KB_ID),
        "reindexing",
        2,
        14,
    )
    first, second = kb.documents
    assert first == RemoteDocument(uuid.UUID(DOC_ID), "ready", "a.md", 10, None, "text/markdown")
    assert (second.status, second.bytes, second.mime_type) == ("quarantined", None, None)


def test_get_knowledge_base_with_missing_counts(server, harness):
    server.push(answer(200, {"id": KB_ID, "documents": [doc_json()]}))
    kb = harness.client.get_knowledge_base(KB_ID)
    assert (kb.status, kb.document_count, kb.chunk_count) == ("", 1, 0)


def test_get_document(server, harness):
    server.push(answer(200, doc_json(status="sealed", chunkCount=12)))
    doc = harness.client.get_document(uuid.UUID(DOC_ID))
    assert (doc.status, doc.chunk_count, doc.bytes) == ("sealed", 12, 3)
    assert server.requests[0].path == f"/api/v1/knowledge-documents/{DOC_ID}"


def test_get_document_rejects_a_malformed_id_without_a_request(server, harness):
    with pytest.raises(ValueError):
        harness.client.get_document("../knowledge-bases/kb")
    assert server.requests == []


@pytest.mark.parametrize("body", [b"<html>ok</html>", b'{"status": "ready"}', b'{"id": 12}', b"[]"])
def test_2xx_with_unusable_body_is_invalid_response(server, harness, body):
    server.push(answer(200, body))
    with pytest.raises(InvalidResponse) as info:
        harness.client.get_document(DOC_ID)
    assert info.value.status_code == 200
    assert info.value.body == body.decode()
    assert len(server.requests) == 1  # not retried: the server did answer


def test_get_retries_5xx_then_succeeds(server, harness):
    server.push(answer(500, {"error": "boom"}), answer(200, doc_json()))
    assert harness.client.get_document(DOC_ID).id == uuid.UUID(DOC_ID)
    assert len(server.requests) == 2 and len(harness.sleeps) == 1


def test_get_honours_retry_after(server, harness):
    server.push(
        answer(429, {"error": "slow down"}, {"Retry-After": "0.04"}), answer(200, doc_json())
    )
    harness.client.get_document(DOC_ID)
    assert harness.sleeps and harness.sleeps[0] >= 0.04


def test_get_gives_up_at_once_when_retry_after_exceeds_backoff_max(server, harness):
    server.push(answer(429, {"error": "later"}, {"Retry-After": "3600"}))
    with pytest.raises(RateLimited) as info:
        harness.client.get_document(DOC_ID)
    assert info.value.retry_after == 3600.0
    assert harness.sleeps == [] and len(server.requests) == 1


def test_get_raises_the_last_error_after_max_retries(server, harness):
    server.default = answer(502, "Bad Gateway")
    with pytest.raises(ServerError) as info:
        harness.client.get_knowledge_base("kb")
    assert info.value.status_code == 502 and info.value.message == "Bad Gateway"
    assert len(server.requests) == 3  # 1 + max_retries
    assert len(harness.sleeps) == 2


def test_get_retries_read_timeout_and_reset(server, harness):
    server.push(slow_answer(5), reset_after_body, answer(200, doc_json()))
    assert harness.client.get_document(DOC_ID).file_name == "a.md"
    assert len(server.requests) == 3


def test_get_read_timeout_on_every_try_is_outcome_unknown(server, harness):
    server.default = slow_answer(5)
    with pytest.raises(OutcomeUnknown):
        harness.client.get_document(DOC_ID)
    assert len(server.requests) == 3


def test_get_connection_refused_is_request_not_sent():
    client = make_client(refused_url(), max_retries=3)
    sleeps: list[float] = []
    client._sleep = sleeps.append
    with pytest.raises(RequestNotSent):
        client.get_knowledge_base("kb")
    assert len(sleeps) == 3


def test_backoff_is_jittered_exponential_and_capped(server):
    client = make_client(server.url, max_retries=6, backoff=1.0, backoff_max=4.0)
    sleeps: list[float] = []
    client._sleep = sleeps.append
    server.default = answer(503, "")
    with pytest.raises(ServerError):
        client.get_document(DOC_ID)
    caps = [1, 2, 4, 4, 4, 4]
    assert all(0 <= s <= cap for s, cap in zip(sleeps, caps, strict=True))


def test_get_does_not_retry_definite_errors(server, harness):
    server.push(answer(404, {"error": "Knowledge base not found"}))
    with pytest.raises(NotFound) as info:
        harness.client.get_knowledge_base("kb_missing")
    assert str(info.value) == "PromptJuggler answered 404: Knowledge base not found"
    assert harness.sleeps == []


def test_delete_true_on_204_false_on_404(server, harness):
    server.push(answer(204), answer(404, {"error": "Document not found"}))
    assert harness.client.delete_document(DOC_ID) is True
    assert harness.client.delete_document(DOC_ID) is False
    assert [r.method for r in server.requests] == ["DELETE", "DELETE"]


def test_delete_retries_server_errors(server, harness):
    server.push(answer(500, ""), answer(204))
    assert harness.client.delete_document(DOC_ID) is True


def test_one_connection_pool_is_reused(server, harness):
    server.push(answer(200, doc_json()), answer(200, doc_json()))
    harness.client.get_document(DOC_ID)
    harness.client.get_document(DOC_ID)
    assert server.connections == 1


def test_error_body_that_is_not_json_is_capped(server, harness):
    server.push(answer(400, "x" * 100_000))
    with pytest.raises(APIError) as info:
        harness.client.get_document(DOC_ID)
    assert len(info.value.message) == 500 and len(info.value.body) <= 2048


# -- secrets --------------------------------------------------------------------------------


def test_api_key_never_in_repr_messages_tracebacks_or_logs(server, caplog):
    caplog.set_level(logging.DEBUG)  # includes httpx and httpcore's own debug logging
    client = make_client(server.url, max_retries=1)
    assert API_KEY not in repr(client)
    errors: list[BaseException] = []
    server.push(slow_answer(5), slow_answer(5))  # OutcomeUnknown
    server.push(answer(401, {"error": f"bad key {API_KEY}"}))  # a server that echoes it
    server.push(answer(200, f"not json {API_KEY}"))
    calls = [
        lambda: client.get_document(DOC_ID),
        lambda: client.get_document(DOC_ID),
        lambda: client.get_document(DOC_ID),
    ]
    for call in calls:
        with pytest.raises(PromptJugglerError) as info:
            call()
        errors.append(info.value)
    refused = make_client(refused_url(), max_retries=0)
    with pytest.raises(RequestNotSent) as info:
        refused.upload_documents("kb", [UploadFile("a.md", io.BytesIO(b"abc"), 3)])
    errors.append(info.value)
    assert [type(e) for e in errors] == [
        OutcomeUnknown,
        AuthenticationError,
        InvalidResponse,
        RequestNotSent,
    ]
    for err in errors:
        text = "".join(traceback.format_exception(err)) + repr(err) + repr(vars(err))
        assert API_KEY not in text
        assert err.__cause__ is None and err.__context__ is None  # no httpx request attached
    assert "[redacted]" in errors[1].message
    assert API_KEY not in caplog.text
    assert "GET /api/v1/knowledge-documents/" in caplog.text  # the client did log
    client.close()
    refused.close()


def test_errors_survive_pickling_for_task_queues(server, harness):
    server.push(answer(429, {"error": "slow down"}, {"Retry-After": "3600"}))
    with pytest.raises(RateLimited) as info:
        harness.client.get_document(DOC_ID)
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is RateLimited and str(copy) == str(info.value)
    assert (copy.status_code, copy.retry_after, copy.message, copy.path) == (
        429,
        3600.0,
        "slow down",
        f"/api/v1/knowledge-documents/{DOC_ID}",
    )


def test_client_debug_log_has_method_path_status_duration(server, harness, caplog):
    caplog.set_level(logging.DEBUG, logger="promptjuggler_django.client")
    server.push(answer(204))
    harness.client.delete_document(DOC_ID)
    (record,) = [r for r in caplog.records if r.name == "promptjuggler_django.client"]
    assert record.getMessage().startswith(f"DELETE /api/v1/knowledge-documents/{DOC_ID} -> 204 in ")


# -- configuration --------------------------------------------------------------------------


def test_from_settings_reads_promptjuggler_settings(settings):
    settings.PROMPTJUGGLER = {
        "API_KEY": API_KEY,
        "BASE_URL": "http://127.0.0.1:1/",
        "CONNECT_TIMEOUT": 1.5,
        "READ_TIMEOUT": 2.5,
        "WRITE_TIMEOUT": 3.5,
        "POOL_TIMEOUT": 4.5,
        "MAX_RETRIES": 7,
        "RETRY_BACKOFF": 0.25,
        "RETRY_BACKOFF_MAX": 9.0,
        "UPLOAD_CHUNK_SIZE": 1024,
    }
    with PromptJugglerClient.from_settings(max_retries=1) as client:
        assert client.timeout == httpx.Timeout(connect=1.5, read=2.5, write=3.5, pool=4.5)
        assert (client.max_retries, client.backoff, client.backoff_max, client.chunk_size) == (
            1,
            0.25,
            9.0,
            1024,
        )
        assert client.base_url == "http://127.0.0.1:1"
        assert API_KEY not in repr(client)


def test_from_settings_without_a_key_names_the_setting(settings, monkeypatch):
    monkeypatch.delenv("PROMPTJUGGLER_API_KEY", raising=False)
    settings.PROMPTJUGGLER = {}
    with pytest.raises(ImproperlyConfigured, match=r'settings\.PROMPTJUGGLER\["API_KEY"\]'):
        PromptJugglerClient.from_settings()


def test_from_settings_falls_back_to_the_environment(settings, monkeypatch):
    monkeypatch.setenv("PROMPTJUGGLER_API_KEY", "pj_from_env")
    settings.PROMPTJUGGLER = {}
    with PromptJugglerClient.from_settings() as client:
        assert client._http.headers["authorization"] == "Bearer pj_from_env"


def test_redirects_are_not_followed(server, harness):
    # Following one would send the bearer token to wherever the Location points.
    server.push(answer(302, "", {"Location": "http://127.0.0.1:9/steal"}))
    with pytest.raises(APIError) as info:
        harness.client.get_document(DOC_ID)
    assert info.value.status_code == 302 and not info.value.retryable
    assert len(server.requests) == 1


def test_parse_retry_after():
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# -- UploadFile -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.md", "text/markdown"),
        ("A.CSV", "text/csv"),
        ("t.tsv", "text/tab-separated-values"),
        ("r.txt", "text/plain"),
        ("p.html", "text/html"),
        ("d.pdf", "application/pdf"),
        ("w.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("blob", "application/octet-stream"),
    ],
)
def test_content_type_is_guessed_from_the_name(name, expected):
    assert UploadFile(name, io.BytesIO()).content_type == expected


def test_explicit_content_type_wins():
    assert UploadFile("a.md", io.BytesIO(), content_type="text/x-markdown").content_type == (
        "text/x-markdown"
    )


def test_from_path_knows_its_size_and_closes(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello")
    upload = UploadFile.from_path(path, file_name="renamed.txt")
    assert (upload.file_name, upload.size) == ("renamed.txt", 5)
    upload.close()
    assert upload.stream.closed


def test_from_django_file_rewinds_and_uses_the_size(server, harness):
    content = ContentFile(b"alpha,beta\n", name="dir/data.csv")
    content.read()  # a previous reader left it at the end
    upload = UploadFile.from_django_file(content)
    assert (upload.file_name, upload.size, upload.content_type) == ("data.csv", 11, "text/csv")
    server.push(echo_upload)
    harness.client.upload_documents("kb", [upload])
    assert (
        parse_multipart(server.requests[0].headers["content-type"], server.requests[0].body)[0][
            "data"
        ]
        == b"alpha,beta\n"
    )


def test_from_django_file_on_storage(server, harness):
    from django.core.files.storage import InMemoryStorage

    storage = InMemoryStorage()
    name = storage.save("docs/report.pdf", ContentFile(b"%PDF-1.7 ..."))
    with storage.open(name, "rb") as f:
        upload = UploadFile.from_django_file(f)
        server.push(echo_upload)
        (doc,) = harness.client.upload_documents("kb", [upload])
    assert (doc.file_name, doc.bytes) == ("report.pdf", 12)


# -- the multipart body ---------------------------------------------------------------------


def body_bytes(parts: list[Part], chunk_size: int = 7) -> tuple[MultipartBody, bytes]:
    body = MultipartBody(parts, chunk_size=chunk_size)
    progress = BodyProgress()
    raw = b"".join(body.chunks(progress))
    assert progress.complete and progress.sent == len(raw)
    return body, raw


def django_parse(body: MultipartBody, raw: bytes) -> dict[str, Any]:
    meta = {"CONTENT_TYPE": body.content_type, "CONTENT_LENGTH": str(len(raw))}
    _, files = MultiPartParser(meta, io.BytesIO(raw), [MemoryFileUploadHandler()], "utf-8").parse()
    return {key: (f.name, f.content_type, f.read()) for key, f in files.items()}


def test_body_with_quotes_newlines_and_non_ascii_names_parses():
    names = ['say "hi".md', "line\r\nbreak.txt", "Übersicht 東京 été.pdf"]
    parts = [
        Part(n, "text/plain", io.BytesIO(f"content {i}".encode()), None)
        for i, n in enumerate(names)
    ]
    body, raw = body_bytes(parts)
    assert body.content_length is None
    parsed = parse_multipart(body.content_type, raw)
    assert [p["filename"] for p in parsed] == [
        "say %22hi%22.md",
        "line%0D%0Abreak.txt",
        "Übersicht 東京 été.pdf",
    ]
    assert [p["data"] for p in parsed] == [b"content 0", b"content 1", b"content 2"]
    assert "Übersicht 東京 été.pdf".encode() in raw  # raw UTF-8, as browsers send it
    assert b"filename*" not in raw
    assert django_parse(body, raw)["files[2]"] == (
        "Übersicht 東京 été.pdf",
        "text/plain",
        b"content 2",
    )


@hypothesis_settings(max_examples=40, deadline=None)
@given(
    files=st.lists(
        # (the stdlib parser strips surrounding spaces from parameters, so names have none)
        st.tuples(
            st.text(min_size=1, max_size=30).filter(lambda s: s.strip() == s != ""),
            st.binary(max_size=300),
        ),
        min_size=1,
        max_size=4,
    ),
    chunk_size=st.integers(1, 64),
)
def test_body_round_trips_and_content_length_is_exact(files, chunk_size):
    parts = [
        Part(name, "application/octet-stream", io.BytesIO(data), len(data)) for name, data in files
    ]
    body, raw = body_bytes(parts, chunk_size)
    assert body.content_length == len(raw)
    parsed = parse_multipart(body.content_type, raw)
    assert [p["name"] for p in parsed] == [f"files[{i}]" for i in range(len(files))]
    assert [p["data"] for p in parsed] == [data for _, data in files]
    # what a server reads back: the original name, quotes and control characters percent-encoded
    expected = [re.sub(r'["\x00-\x1f\x7f]', lambda m: f"%{ord(m[0]):02X}", n) for n, _ in files]
    assert [p["filename"] for p in parsed] == expected


def test_quote_filename_matches_the_official_sdk_encoder():
    from urllib3.fields import format_multipart_header_param

    for name in ['a"b.md', "x\r\ny.txt", "naïve.pdf", "東京.docx"]:
        sdk = format_multipart_header_param("filename", name)
        assert f'filename="{quote_filename(name)}"' == sdk
    # Deliberate differences: control characters never go raw, and a backslash is escaped so
    # that quoted-string parsers (which drop a raw one) read it back.
    assert quote_filename("tab\tname.csv") == "tab%09name.csv"
    assert quote_filename("dir\\") == "dir\\\\"


@respx.mock
def test_wire_bytes_part_headers_and_content_length():
    sent: dict[str, Any] = {}

    def capture(request: httpx.Request) -> httpx.Response:
        sent["body"] = request.read()
        sent["headers"] = request.headers
        return httpx.Response(200, json=[doc_json(fileName='ré"sumé.md')])

    respx.post("https://pj.test/api/v1/knowledge-bases/kb_a/documents").mock(side_effect=capture)
    client = PromptJugglerClient(api_key=API_KEY, base_url="https://pj.test", user_agent="t/1")
    client.upload_documents("kb_a", [UploadFile('ré"sumé.md', io.BytesIO(b"# CV\n"), 5)])
    headers, raw = sent["headers"], sent["body"]
    boundary = headers["content-type"].split("boundary=")[1]
    assert headers["content-type"] == f"multipart/form-data; boundary={boundary}"
    assert headers["content-length"] == str(len(raw))
    assert headers["user-agent"] == "t/1"
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert (
        raw
        == (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="files[0]"; filename="r\u00e9%22sum\u00e9.md"\r\n'
            "Content-Type: text/markdown\r\n\r\n# CV\n\r\n"
            f"--{boundary}--\r\n"
        ).encode()
    )


def test_body_memory_does_not_depend_on_file_size():
    # Every piece handed to the transport is at most one chunk (or a part header).
    stream = Unseekable(5 * 1024 * 1024)
    body = MultipartBody([Part("big.txt", "text/plain", stream, 5 * 1024 * 1024)], chunk_size=4096)
    assert max(len(piece) for piece in body.chunks(BodyProgress())) <= 4096
    assert set(stream.reads) <= {4096, 1}


def test_upload_of_zero_files_is_refused():
    with PromptJugglerClient(api_key=API_KEY) as client, pytest.raises(ValueError):
        client.upload_documents("kb", [])


def test_a_text_mode_stream_is_a_clear_error(tmp_path, server, harness):
    path = tmp_path / "a.txt"
    path.write_text("hi")
    server.push(echo_upload)
    with open(path) as text, pytest.raises(TypeError, match="binary mode"):
        harness.client.upload_documents("kb", [UploadFile("a.txt", text)])


# -- against the bundled emulator -----------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[Any]:
    from promptjuggler_django.testing import FakePromptJuggler

    with FakePromptJuggler(API_KEY, knowledge_bases=["kb_docs"]) as emulator:
        yield emulator


@pytest.fixture
def fake_client(fake: Any) -> Iterator[PromptJugglerClient]:
    client = make_client(fake.url)
    yield client
    client.close()


def test_emulator_upload_three_files_then_read_them_back(fake, fake_client, tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(b"%PDF-1.7\n" + b"0" * 5000)
    with UploadFile.from_path(path) as pdf:
        files = [
            UploadFile("notes.md", io.BytesIO(b"# Notes\n"), 8),
            pdf,
            UploadFile("rows.csv", Unseekable(3000)),  # unknown size: sent chunked
        ]
        docs = fake_client.upload_documents("kb_docs", files)
    assert [d.file_name for d in docs] == ["notes.md", "report.pdf", "rows.csv"]
    assert [d.bytes for d in docs] == [8, 5009, 3000]
    stored = fake.documents("kb_docs")
    assert [(d.part_name, d.declared_content_type) for d in stored] == [
        ("files[0]", "text/markdown"),
        ("files[1]", "application/pdf"),
        ("files[2]", "text/csv"),
    ]
    assert stored[1].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    fake.finish()
    kb = fake_client.get_knowledge_base("kb_docs")
    assert (kb.id, kb.status, kb.document_count) == (fake.knowledge_base("kb_docs").id, "ready", 3)
    assert {d.id for d in kb.documents} == {d.id for d in docs}
    assert {d.status for d in kb.documents} == {"ready"}
    finished = fake.document(docs[1].id)
    assert finished is not None and finished.chunk_count > 0
    assert fake_client.get_document(docs[1].id).chunk_count == finished.chunk_count


def test_emulator_delete_twice_is_true_then_false(fake, fake_client):
    (doc,) = fake_client.upload_documents("kb_docs", [UploadFile("a.txt", io.BytesIO(b"x"), 1)])
    assert fake_client.delete_document(doc.id) is True
    assert fake_client.delete_document(doc.id) is False
    assert fake.document(doc.id) is None
    with pytest.raises(NotFound):
        fake_client.get_document(doc.id)


def test_emulator_errors_are_typed(fake, fake_client):
    with pytest.raises(NotFound) as info:
        fake_client.get_knowledge_base("kb_unknown")
    assert info.value.message  # the emulator's {"error": ...}
    with pytest.raises(UnprocessableEntity):
        fake_client.upload_documents("kb_docs", [UploadFile("run.exe", io.BytesIO(b"MZ"), 2)])
    big = 8 * 1024 * 1024
    with PromptJugglerClient(api_key="pj_wrong", base_url=fake.url) as wrong:
        with pytest.raises(AuthenticationError):
            wrong.get_knowledge_base("kb_docs")
        # refused before the body was read: still a definite answer, not a transport failure
        with pytest.raises(AuthenticationError):
            wrong.upload_documents("kb_docs", [UploadFile("big.txt", Unseekable(big), big)])


def test_emulator_reset_after_the_upload_took_effect_is_outcome_unknown(fake, fake_client):
    fake.set_fault("upload", reset=True, after_effect=True, times=1)
    with pytest.raises(OutcomeUnknown):
        fake_client.upload_documents("kb_docs", [UploadFile("a.md", io.BytesIO(b"abc"), 3)])
    # not retried, and the document exists: the caller must reconcile before sending again
    assert fake.request_count("upload") == 1
    assert [d.file_name for d in fake.documents("kb_docs")] == ["a.md"]


def test_emulator_get_rides_out_transient_faults(fake, fake_client):
    fake.set_fault("get_knowledge_base", status=503, times=1)
    fake.set_fault("get_knowledge_base", status=429, retry_after=0, times=1)
    assert fake_client.get_knowledge_base("kb_docs").id == fake.knowledge_base("kb_docs").id
    assert fake.request_count("get_knowledge_base") == 3


def test_emulator_upload_rate_limit_carries_retry_after(fake, fake_client):
    fake.set_fault("upload", status=429, retry_after=30, times=1)
    with pytest.raises(RateLimited) as info:
        fake_client.upload_documents("kb_docs", [UploadFile("a.md", io.BytesIO(b"abc"), 3)])
    assert info.value.retry_after == 30.0
    assert fake.documents("kb_docs") == []


def test_emulator_reads_the_file_name_the_official_sdk_would_send(fake, fake_client):
    import promptjuggler

    names = ["naïve 東京.md", 'say "hi".txt']
    ours = fake_client.upload_documents(
        "kb_docs", [UploadFile(n, io.BytesIO(b"abc"), 3) for n in names]
    )
    sdk = promptjuggler.PromptJuggler(API_KEY, base_url=fake.url)
    theirs = sdk.upload_documents("kb_docs", [(n, b"abc") for n in names])
    assert [d.file_name for d in ours] == [d.file_name for d in theirs]
    assert [d.file_name for d in ours] == [remote_file_name(n) for n in names]
    assert remote_file_name(names[1]) == "say %22hi%22.txt"
    # The SDK sends a backslash raw, which a quoted-string parser drops; this client escapes it.
    (doc,) = fake_client.upload_documents("kb_docs", [UploadFile("a\\b.md", io.BytesIO(b"x"), 1)])
    assert doc.file_name == remote_file_name("a\\b.md") == "a\\b.md"
