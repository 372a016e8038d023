"""The PromptJuggler emulator over real loopback HTTP: wire format, processing, webhooks, faults,
streaming, concurrency, the pytest fixtures and the management command."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptjuggler_django import signature
from promptjuggler_django.testing import (
    FakePromptJuggler,
    WebhookDeliveryError,
    sign_webhook,
)
from promptjuggler_django.testing.multipart import (
    MultipartError,
    MultipartParser,
    PartHeaders,
    parse_header_params,
)

SECRET = "whsec_emulator_tests"
KEY = "pj_test_key"
ROOT = Path(__file__).resolve().parent.parent


# -- helpers ---------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    body: bytes
    header: str | None
    verified: bool


class WebhookReceiver:
    """A tiny HTTP server that records webhooks and checks their signatures."""

    def __init__(self, secret: str = SECRET, status: int = 200) -> None:
        self.secret = secret
        self.status = status
        self.received: list[Received] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                header = self.headers.get(signature.HEADER)
                ok = signature.verify(body, header, [receiver.secret]) is not None
                with receiver._cond:
                    receiver.received.append(Received(self.path, body, header, ok))
                    receiver._cond.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/promptjuggler/"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def wait(self, count: int, timeout: float = 5.0) -> list[Received]:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.received) >= count, timeout)
            assert ok, f"expected {count} webhooks, got {len(self.received)}"
            return list(self.received)

    def bodies(self) -> list[dict]:
        with self._cond:
            return [json.loads(r.body) for r in self.received]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


@pytest.fixture
def fake() -> Iterator[FakePromptJuggler]:
    with FakePromptJuggler(KEY, knowledge_bases=["kb_docs"]) as f:
        yield f


@pytest.fixture
def client(fake: FakePromptJuggler) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=fake.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    ) as c:
        yield c


def upload(
    client: httpx.Client, *files: tuple[str, bytes], slug: str = "kb_docs"
) -> httpx.Response:
    parts = [(f"files[{i}]", (name, data, "text/plain")) for i, (name, data) in enumerate(files)]
    return client.post(f"/api/v1/knowledge-bases/{slug}/documents", files=parts)


def multipart_body(
    parts: list[tuple[str, str]], boundary: str = "XyZbOuNdArY"
) -> tuple[bytes, str]:
    """A hand-written multipart body: (Content-Disposition params, content) per part."""
    out = b""
    for disposition, content in parts:
        out += (
            f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n"
            f"Content-Type: text/plain\r\n\r\n{content}\r\n"
        ).encode()
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def post_raw(client: httpx.Client, body: bytes, content_type: str) -> httpx.Response:
    return client.post(
        "/api/v1/knowledge-bases/kb_docs/documents",
        content=body,
        headers={"Content-Type": content_type},
    )


# -- upload ----------------------------------------------------------------------------------


def test_upload_answers_200_with_pending_documents_in_part_order(fake, client):
    response = upload(client, ("a.txt", b"alpha" * 600), ("notes.md", b"# beta"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert [d["fileName"] for d in body] == ["a.txt", "notes.md"]
    for item, size in zip(body, (3000, 6), strict=True):
        assert set(item) == {"id", "status", "fileName", "bytes", "chunkCount"}
        assert item["status"] == "pending"
        assert item["bytes"] == size
        assert item["chunkCount"] == 0
        uuid.UUID(item["id"])
    stored = fake.documents("kb_docs")
    assert [str(d.id) for d in stored] == [d["id"] for d in body]
    first = stored[0]
    assert first.content == b"alpha" * 600
    assert first.sha256 == hashlib.sha256(b"alpha" * 600).hexdigest()
    assert first.mime_type == "text/plain"
    assert first.declared_content_type == "text/plain"
    assert first.part_name == "files[0]"
    assert stored[1].mime_type == "text/markdown"
    assert fake.requests[-1].file_names == ("a.txt", "notes.md")


@pytest.mark.parametrize("ext", [".txt", ".csv", ".tsv", ".md", ".html", ".pdf", ".docx", ".PDF"])
def test_every_documented_extension_is_accepted(client, ext):
    assert upload(client, (f"file{ext}", b"x")).status_code == 200


def test_unsupported_type_is_422_and_nothing_of_the_request_is_stored(fake, client):
    response = upload(client, ("ok.txt", b"fine"), ("evil.exe", b"MZ"))
    assert response.status_code == 422
    assert "evil.exe" in response.json()["error"]
    assert fake.documents() == []
    assert upload(client, ("README", b"no extension")).status_code == 422


def test_bare_repeated_files_parts_collapse_into_the_last_file(fake, client):
    parts = [
        ("files", ("first.txt", b"1", "text/plain")),
        ("files", ("second.txt", b"22", "text/plain")),
    ]
    response = client.post("/api/v1/knowledge-bases/kb_docs/documents", files=parts)
    assert response.status_code == 200
    assert [d["fileName"] for d in response.json()] == ["second.txt"]
    assert [d.file_name for d in fake.documents()] == ["second.txt"]


def test_empty_brackets_append_files(client):
    parts = [("files[]", ("a.txt", b"1", "text/plain")), ("files[]", ("b.txt", b"2", "text/plain"))]
    response = client.post("/api/v1/knowledge-bases/kb_docs/documents", files=parts)
    assert [d["fileName"] for d in response.json()] == ["a.txt", "b.txt"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"files": [("other", ("a.txt", b"x", "text/plain"))]},  # not a files field
        {"data": {"files[0]": "just a form field"}, "files": [("x", ("y.txt", b"", "text/plain"))]},
        {"json": {"files": ["a.txt"]}},  # not multipart at all
    ],
)
def test_no_file_parts_is_422(fake, client, kwargs):
    response = client.post("/api/v1/knowledge-bases/kb_docs/documents", **kwargs)
    assert response.status_code == 422
    assert "error" in response.json()
    assert fake.documents() == []


def test_file_part_without_filename_is_not_a_file(client):
    body, ctype = multipart_body([('name="files[0]"', "no filename here")])
    assert post_raw(client, body, ctype).status_code == 422


def test_filename_with_escaped_quotes_and_rfc5987_name(fake, client):
    body, ctype = multipart_body(
        [
            (r'name="files[0]"; filename="say \"hi\".txt"', "quoted"),
            (
                'name="files[1]"; filename="fallback.txt"; filename*=UTF-8\'\'na%C3%AFve%20plan.md',
                "utf8",
            ),
        ]
    )
    response = post_raw(client, body, ctype)
    assert response.status_code == 200, response.text
    assert [d["fileName"] for d in response.json()] == ['say "hi".txt', "naïve plan.md"]
    assert [d.content for d in fake.documents()] == [b"quoted", b"utf8"]


def test_truncated_multipart_is_400_and_stores_nothing(fake, client):
    body, ctype = multipart_body([('name="files[0]"; filename="a.txt"', "data")])
    response = post_raw(client, body[:-30], ctype)
    assert response.status_code == 400
    assert fake.documents() == []


def test_unknown_slug_is_404(fake, client):
    response = upload(client, ("a.txt", b"x"), slug="kb_missing")
    assert response.status_code == 404
    assert response.json() == {"error": "Knowledge base not found"}


def test_aliases_and_renames_resolve_to_the_same_knowledge_base(fake, client):
    kb = fake.create_knowledge_base("kb_new", aliases=["kb_old"])
    assert upload(client, ("a.txt", b"x"), slug="kb_old").status_code == 200
    assert client.get("/api/v1/knowledge-bases/kb_old").json()["id"] == str(kb.id)
    renamed = fake.rename_knowledge_base("kb_new", "kb_newer")
    assert set(renamed.aliases) == {"kb_old", "kb_new"}
    for handle in ("kb_old", "kb_new", "kb_newer"):
        got = client.get(f"/api/v1/knowledge-bases/{handle}").json()
        assert got["id"] == str(kb.id) and got["documentCount"] == 1
    assert fake.documents("kb_newer")[0].knowledge_base_slug == "kb_newer"
    assert fake.knowledge_base(kb.id).slug == "kb_newer"


# -- reads and deletes -----------------------------------------------------------------------


def test_get_knowledge_base_lists_every_document_unpaginated(fake, client):
    for i in range(120):
        fake.add_document("kb_docs", f"doc{i}.txt", b"x" * 2500)
    body = client.get("/api/v1/knowledge-bases/kb_docs").json()
    assert set(body) == {"id", "status", "documentCount", "chunkCount", "documents"}
    assert body["id"] == str(fake.knowledge_base("kb_docs").id)
    assert body["status"] == "pending"
    assert body["documentCount"] == 120 and len(body["documents"]) == 120
    assert set(body["documents"][0]) == {"id", "status", "fileName", "bytes", "mimeType"}
    assert body["documents"][5]["fileName"] == "doc5.txt"


def test_get_document_and_404s(fake, client):
    (doc,) = upload(client, ("a.txt", b"hello")).json()
    got = client.get(f"/api/v1/knowledge-documents/{doc['id']}")
    assert got.status_code == 200 and got.json() == doc
    assert client.get(f"/api/v1/knowledge-documents/{uuid.uuid4()}").status_code == 404
    malformed = client.get("/api/v1/knowledge-documents/not-a-uuid")
    assert malformed.status_code == 404 and "error" in malformed.json()


def test_delete_is_204_then_404_and_counts_follow(fake, client):
    docs = upload(client, ("a.txt", b"x" * 5000), ("b.txt", b"y" * 3000)).json()
    fake.finish()
    assert fake.knowledge_base("kb_docs").chunk_count == 8
    response = client.delete(f"/api/v1/knowledge-documents/{docs[0]['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert "content-length" not in response.headers
    kb = client.get("/api/v1/knowledge-bases/kb_docs").json()
    assert (kb["documentCount"], kb["chunkCount"]) == (1, 3)
    assert fake.document(docs[0]["id"]) is None
    again = client.delete(f"/api/v1/knowledge-documents/{docs[0]['id']}")
    assert again.status_code == 404 and again.json()["error"]
    assert client.delete("/api/v1/knowledge-documents/nope").status_code == 404


# -- auth, routing, connection handling ------------------------------------------------------

ENDPOINT_CALLS = [
    ("POST", "/api/v1/knowledge-bases/kb_docs/documents"),
    ("GET", "/api/v1/knowledge-bases/kb_docs"),
    ("GET", f"/api/v1/knowledge-documents/{uuid.UUID(int=1)}"),
    ("DELETE", f"/api/v1/knowledge-documents/{uuid.UUID(int=1)}"),
    ("GET", "/api/v1/no-such-thing"),
]


@pytest.mark.parametrize("method,path", ENDPOINT_CALLS)
@pytest.mark.parametrize("auth", [None, "Bearer wrong", f"Basic {KEY}", "Bearer"])
def test_missing_or_wrong_key_is_401_everywhere(fake, method, path, auth):
    headers = {"Authorization": auth} if auth else {}
    with httpx.Client(base_url=fake.url) as c:
        response = c.request(
            method,
            path,
            headers=headers,
            files={"files[0]": ("a.txt", b"x")} if method == "POST" else None,
        )
    assert response.status_code == 401
    assert set(response.json()) == {"error"}
    assert fake.requests[-1].authorized is False
    assert fake.documents() == []


def test_unknown_path_404_and_wrong_method_405(client):
    assert client.get("/api/v1/knowledge-bases").status_code == 404
    assert client.get("/nowhere").status_code == 404
    wrong = client.put("/api/v1/knowledge-bases/kb_docs")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
    assert client.get("/api/v1/knowledge-bases/kb_docs/documents").headers["allow"] == "POST"
    assert (
        client.post(f"/api/v1/knowledge-documents/{uuid.uuid4()}").headers["allow"] == "GET, DELETE"
    )


def test_keep_alive_survives_error_answers_with_bodies(fake):
    host, port = fake.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    body, ctype = multipart_body([('name="files[0]"; filename="a.exe"', "x" * 100_000)])
    requests = [
        (
            "POST",
            "/api/v1/knowledge-bases/kb_docs/documents",
            body,
            {"Authorization": "Bearer bad"},
        ),
        (
            "POST",
            "/api/v1/knowledge-bases/kb_docs/documents",
            body,
            {"Authorization": f"Bearer {KEY}"},
        ),
        (
            "POST",
            "/api/v1/knowledge-bases/kb_nope/documents",
            body,
            {"Authorization": f"Bearer {KEY}"},
        ),
        ("GET", "/api/v1/knowledge-bases/kb_docs", None, {"Authorization": f"Bearer {KEY}"}),
    ]
    statuses, sockets = [], set()
    for method, path, payload, headers in requests:
        conn.request(method, path, body=payload, headers={**headers, "Content-Type": ctype})
        sockets.add(conn.sock.getsockname())  # a new connection has a new local port
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
    conn.close()
    assert statuses == [401, 422, 404, 200]
    assert len(sockets) == 1  # one connection served all four


def test_recorded_requests_never_keep_the_api_key(fake, client):
    upload(client, ("a.txt", b"x"))
    recorded = fake.requests[-1]
    assert "authorization" not in recorded.headers
    assert KEY not in repr(recorded) and KEY not in repr(fake)


def test_request_size_bound_is_413(fake):
    small = FakePromptJuggler(KEY, knowledge_bases=["kb_docs"], max_request_bytes=10_000).start()
    try:
        with httpx.Client(base_url=small.url, headers={"Authorization": f"Bearer {KEY}"}) as c:
            declared = upload(c, ("a.txt", b"x" * 20_000))
            assert declared.status_code == 413
            chunked = c.post(
                "/api/v1/knowledge-bases/kb_docs/documents",
                content=iter([b"x" * 6000, b"y" * 6000]),
                headers={"Content-Type": "multipart/form-data; boundary=b"},
            )
            assert chunked.status_code == 413
        assert small.documents() == []
    finally:
        small.stop()


# -- chunked transfer encoding and streaming -------------------------------------------------


def streamed_multipart(
    file_name: str, total: int, piece: bytes, boundary: str = "streamBoundary42"
) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files[0]"; '
        f'filename="{file_name}"\r\nContent-Type: text/plain\r\n\r\n'
    ).encode()
    sent = 0
    while sent < total:
        chunk = piece[: total - sent]
        sent += len(chunk)
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def test_chunked_upload_from_httpx(fake, client):
    piece = bytes(range(256)) * 40
    response = client.post(
        "/api/v1/knowledge-bases/kb_docs/documents",
        content=streamed_multipart("big.csv", 300_000, piece),
        headers={"Content-Type": "multipart/form-data; boundary=streamBoundary42"},
    )
    assert response.status_code == 200, response.text
    assert fake.requests[-1].headers["transfer-encoding"] == "chunked"
    doc = fake.documents()[0]
    expected = b"".join(streamed_multipart("big.csv", 300_000, piece))
    start = expected.index(b"\r\n\r\n") + 4
    content = expected[start : expected.rindex(b"\r\n--streamBoundary42--")]
    assert (doc.bytes, doc.sha256) == (300_000, hashlib.sha256(content).hexdigest())


def test_raw_chunked_with_extensions_and_trailers(fake):
    body, ctype = multipart_body([('name="files[0]"; filename="r.txt"', "raw chunked body")])
    encoded = b""
    for i in range(0, len(body), 7):
        piece = body[i : i + 7]
        encoded += f"{len(piece):X};ext=1\r\n".encode() + piece + b"\r\n"
    encoded += b"0\r\nX-Trailer: yes\r\n\r\n"
    host, port = fake.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            (
                "POST /api/v1/knowledge-bases/kb_docs/documents HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {KEY}\r\nContent-Type: {ctype}\r\n"
                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            ).encode()
            + encoded
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert fake.documents()[0].content == b"raw chunked body"


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_50_mb_upload_streams_in_flat_memory(fake, client, framing):
    size = 50 * 1024 * 1024
    piece = os.urandom(256 * 1024)
    headers = {"Content-Type": "multipart/form-data; boundary=streamBoundary42"}
    if framing == "content-length":
        length = sum(len(c) for c in streamed_multipart("big.txt", size, b"\0" * (1 << 20)))
        headers["Content-Length"] = str(length)
    expected = hashlib.sha256()
    for i in range(0, size, len(piece)):
        expected.update(piece[: size - i])
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        response = client.post(
            "/api/v1/knowledge-bases/kb_docs/documents",
            content=streamed_multipart("big.txt", size, piece),
            headers=headers,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text
    doc = fake.documents()[0]
    assert doc.bytes == size and doc.sha256 == expected.hexdigest()
    assert doc.content is None  # too big to keep
    # Client and server share this process: both together stay far below the file's size.
    print(f"peak {peak / 1e6:.2f} MB")
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.0f} MB upload"


# -- the multipart parser on its own ---------------------------------------------------------


def parse_all(body: bytes, boundary: str, step: int) -> list[tuple[PartHeaders, bytes]]:
    parts: list[tuple[PartHeaders, bytearray]] = []
    parser = MultipartParser(
        boundary,
        lambda h: parts.append((h, bytearray())),
        lambda d: parts[-1][1].extend(d),
        lambda: None,
    )
    for i in range(0, len(body), step):
        parser.feed(body[i : i + step])
    parser.close()
    return [(h, bytes(b)) for h, b in parts]


def test_parser_handles_preamble_epilogue_padding_and_headerless_parts():
    body = (
        b"preamble to ignore\r\n--b1 \t\r\nContent-Disposition: form-data; name=a\r\n\r\n"
        b"one\r\n--b1\r\n\r\nno headers\r\n--b1--\r\nepilogue"
    )
    for step in (1, 2, 5, len(body)):
        parts = parse_all(body, "b1", step)
        assert [(h.name, c) for h, c in parts] == [("a", b"one"), (None, b"no headers")]


def test_parser_rejects_truncation_and_huge_headers():
    with pytest.raises(MultipartError):
        parse_all(b"--b\r\nContent-Disposition: form-data\r\n\r\nabc", "b", 3)
    with pytest.raises(MultipartError):
        parse_all(b"--b\r\nX: " + b"y" * 20_000 + b"\r\n\r\n--b--", "b", 1000)


def test_header_params():
    assert parse_header_params('form-data; name="f"; filename="a\\\\b \\"c\\".txt"') == (
        "form-data",
        {"name": "f", "filename": 'a\\b "c".txt'},
    )
    assert parse_header_params("form-data; filename*=utf-8'en'%E2%82%AC.txt; name=x")[1] == {
        "filename*": "€.txt",
        "name": "x",
    }


@settings(max_examples=60, deadline=None)
@given(
    contents=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    step=st.integers(min_value=1, max_value=97),
)
def test_parser_round_trips_any_content_split_anywhere(contents, step):
    boundary = "bnd"
    # Content made of delimiter fragments is the hard case for a chunked boundary scan.
    contents = [c.replace(b"\r\n--bnd", b"\r\n--bnX") + b"\r\n--bn" for c in contents]
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="files[{i}]"; filename="f{i}.txt"\r\n\r\n'.encode()
            + c
            + b"\r\n"
            for i, c in enumerate(contents)
        )
        + f"--{boundary}--".encode()
    )
    parts = parse_all(body, boundary, step)
    assert [c for _h, c in parts] == contents
    assert [h.filename for h, _c in parts] == [f"f{i}.txt" for i in range(len(contents))]


# -- processing ------------------------------------------------------------------------------


def test_seal_and_finish_drive_statuses_and_counts(fake, client):
    docs = upload(client, ("a.txt", b"x" * 4321), ("b.txt", b"y" * 10)).json()
    fake.seal(docs[0]["id"])
    assert fake.document(docs[0]["id"]).status == "sealed"
    assert fake.document(docs[1]["id"]).status == "pending"
    assert fake.knowledge_base("kb_docs").status == "pending"
    fake.finish(docs[0]["id"])
    kb = client.get("/api/v1/knowledge-bases/kb_docs").json()
    assert kb["status"] == "pending"  # b.txt is still in progress
    fake.finish()
    got = [client.get(f"/api/v1/knowledge-documents/{d['id']}").json() for d in docs]
    assert [(g["status"], g["chunkCount"]) for g in got] == [("ready", 4), ("ready", 1)]
    kb = client.get("/api/v1/knowledge-bases/kb_docs").json()
    assert (kb["status"], kb["documentCount"], kb["chunkCount"]) == ("ready", 2, 5)


def test_failing_files_and_knowledge_base_status_rules(fake, client):
    fake.fail_files("bad.pdf")
    upload(client, ("bad.pdf", b"%PDF"), ("good.md", b"# ok"))
    fake.finish()
    by_name = {d.file_name: d for d in fake.documents()}
    assert (by_name["bad.pdf"].status, by_name["bad.pdf"].chunk_count) == ("failed", 0)
    assert by_name["good.md"].status == "ready"
    assert fake.knowledge_base("kb_docs").status == "ready"  # mixed: still searchable
    fake.create_knowledge_base("kb_broken")
    fake.add_document("kb_broken", "bad.pdf")
    fake.finish()
    assert fake.knowledge_base("kb_broken").status == "failed"  # every document failed
    assert fake.knowledge_base(fake.knowledge_base("kb_broken").id).slug == "kb_broken"


def test_finish_overrides_and_unknown_statuses(fake, client):
    (doc,) = upload(client, ("a.txt", b"x")).json()
    fake.finish(doc["id"], status="archived", chunk_count=42)
    got = client.get(f"/api/v1/knowledge-documents/{doc['id']}").json()
    assert (got["status"], got["chunkCount"]) == ("archived", 42)
    assert fake.knowledge_base("kb_docs").status == "pending"  # unknown = still in progress
    fake.set_knowledge_base_status("kb_docs", "reindexing")
    assert client.get("/api/v1/knowledge-bases/kb_docs").json()["status"] == "reindexing"
    with pytest.raises(KeyError):
        fake.finish(uuid.uuid4())


def test_automatic_processing_seals_then_finishes(receiver):
    with (
        FakePromptJuggler(
            KEY,
            knowledge_bases=["kb_docs"],
            processing_delay=0.4,
            webhook_url=receiver.url,
            webhook_secret=SECRET,
        ) as fake,
        httpx.Client(base_url=fake.url, headers={"Authorization": f"Bearer {KEY}"}) as c,
    ):
        (doc,) = upload(c, ("a.txt", b"z" * 2000)).json()
        seen = set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            status = c.get(f"/api/v1/knowledge-documents/{doc['id']}").json()["status"]
            seen.add(status)
            if status == "ready":
                break
            time.sleep(0.02)
        assert seen >= {"pending", "sealed", "ready"}
        fake.wait_for_processing()
        received = receiver.wait(2)
        assert [json.loads(r.body) for r in received] == [
            {"id": doc["id"], "status": "ready", "chunkCount": 2},
            {
                "id": str(fake.knowledge_base("kb_docs").id),
                "status": "ready",
                "documentCount": 1,
                "chunkCount": 2,
            },
        ]


# -- webhooks --------------------------------------------------------------------------------


def test_webhooks_are_signed_shaped_and_ordered(fake, client, receiver):
    fake.set_webhook(receiver.url, SECRET)
    docs = upload(client, ("a.txt", b"x" * 1500), ("b.txt", b"y")).json()
    fake.finish(docs[0]["id"])
    assert receiver.wait(1) and len(receiver.received) == 1  # b.txt pending: no KB event yet
    fake.finish()
    received = receiver.wait(3)
    assert all(r.verified for r in received)
    assert all(r.path == "/hooks/promptjuggler/" for r in received)
    kb_id = str(fake.knowledge_base("kb_docs").id)
    assert receiver.bodies() == [
        {"id": docs[0]["id"], "status": "ready", "chunkCount": 1},
        {"id": docs[1]["id"], "status": "ready", "chunkCount": 1},
        {"id": kb_id, "status": "ready", "documentCount": 2, "chunkCount": 2},
    ]
    # Bytes on the wire are compact JSON, exactly what was signed and recorded.
    assert (
        received[0].body == b'{"id":"%s","status":"ready","chunkCount":1}' % docs[0]["id"].encode()
    )
    deliveries = fake.webhook_deliveries
    assert [d.event for d in deliveries] == [
        "knowledgedocument.finished",
        "knowledgedocument.finished",
        "knowledgebase.finished",
    ]
    assert all(d.status_code == 200 and d.ok for d in deliveries)
    assert [d.body for d in deliveries] == [r.body for r in received]


def test_no_webhook_url_means_no_deliveries(fake, client):
    upload(client, ("a.txt", b"x"))
    fake.finish()
    assert fake.webhook_deliveries == []
    with pytest.raises(ValueError):
        fake.set_webhook("http://127.0.0.1:1/", None)


def test_failing_receivers_are_recorded_not_raised(fake, client):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    fake.set_webhook(f"http://127.0.0.1:{port}/hook", SECRET)
    upload(client, ("a.txt", b"x"))
    fake.finish()
    (doc_delivery, kb_delivery) = fake.webhook_deliveries
    assert doc_delivery.status_code is None and "Connect" in doc_delivery.error
    assert kb_delivery.error
    failing = WebhookReceiver(status=500)
    try:
        fake.set_webhook(failing.url, SECRET)
        fake.finish(fake.documents()[0].id)
        assert fake.webhook_deliveries[-1].status_code == 500
    finally:
        failing.close()


def test_send_webhook_signs_any_body(fake, receiver):
    fake.set_webhook(receiver.url, SECRET)
    assert fake.send_webhook({"id": str(uuid.uuid4()), "status": "ready", "chunkCount": 1}) == 200
    assert fake.send_webhook(b"not json", timestamp=int(time.time()) - 3600) == 200
    assert fake.send_webhook(b"{}", secret="whsec_wrong") == 200
    first, stale, wrong = receiver.wait(3)
    assert first.verified and not stale.verified and not wrong.verified
    assert signature.verify(stale.body, stale.header, [SECRET], now=time.time() - 3600)
    assert sign_webhook(b"{}", SECRET, 1700000000) == signature.sign(b"{}", SECRET, 1700000000)
    with pytest.raises(WebhookDeliveryError):
        fake.send_webhook(b"{}", url="http://127.0.0.1:1/")


def test_webhook_duplicates(fake, client, receiver):
    fake.set_webhook(receiver.url, SECRET)
    fake.set_webhook_fault(duplicate=2)
    upload(client, ("a.txt", b"x"))
    fake.finish()
    bodies = [r.body for r in receiver.wait(6)]
    assert len(set(bodies)) == 2 and len(bodies) == 6
    assert [d.duplicate for d in fake.webhook_deliveries] == [False, True, True] * 2


def test_webhook_delay_returns_first_then_delivers(fake, client, receiver):
    fake.set_webhook(receiver.url, SECRET)
    fake.set_webhook_fault(delay=0.8)
    upload(client, ("a.txt", b"x"))
    started = time.monotonic()
    fake.finish()
    assert time.monotonic() - started < 0.5
    assert receiver.received == []
    fake.wait_for_webhooks(timeout=5)
    assert len(receiver.wait(2)) == 2 and time.monotonic() - started >= 0.8
    assert all(r.verified for r in receiver.received)  # signed when sent, not when planned


def test_webhook_reorder_changes_the_batch_order(fake, client, receiver):
    fake.set_webhook(receiver.url, SECRET)
    fake.set_webhook_fault(reorder=True, seed=3)
    upload(client, ("a.txt", b"x"), ("b.txt", b"y"))
    fake.finish()
    bodies = [json.loads(r.body) for r in receiver.wait(3)]
    natural = [d.id for d in fake.documents()] + [fake.knowledge_base("kb_docs").id]
    assert sorted(str(i) for i in natural) == sorted(b["id"] for b in bodies)
    assert [b["id"] for b in bodies] != [str(i) for i in natural]


def test_webhook_drop_and_times(fake, client, receiver):
    fake.set_webhook(receiver.url, SECRET)
    fake.set_webhook_fault(drop=1.0, times=1)
    upload(client, ("a.txt", b"x"))
    fake.finish()
    received = receiver.wait(1)
    assert [json.loads(r.body).get("documentCount") for r in received] == [1]  # doc event lost
    assert [d.dropped for d in fake.webhook_deliveries] == [True, False]
    fake.finish(fake.documents()[0].id)  # the fault was used up: delivered again normally
    assert len(receiver.wait(3)) == 3


def test_seeded_webhook_drops_are_reproducible(receiver):
    def pattern() -> list[bool]:
        with FakePromptJuggler(
            knowledge_bases=["kb"], webhook_url=receiver.url, webhook_secret=SECRET
        ) as f:
            for i in range(20):
                f.add_document("kb", f"{i}.txt")
            f.set_webhook_fault(drop=0.5, seed=11)
            f.finish()
            return [d.dropped for d in f.webhook_deliveries]

    first = pattern()
    assert first == pattern()
    assert 3 <= sum(first) <= 18


# -- request faults --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint,call",
    [
        ("upload", lambda c, d: upload(c, ("n.txt", b"x"))),
        ("get_knowledge_base", lambda c, d: c.get("/api/v1/knowledge-bases/kb_docs")),
        ("get_document", lambda c, d: c.get(f"/api/v1/knowledge-documents/{d}")),
        ("delete", lambda c, d: c.delete(f"/api/v1/knowledge-documents/{d}")),
    ],
)
def test_status_fault_with_retry_after_for_next_n_requests(fake, client, endpoint, call):
    doc = fake.add_document("kb_docs", "seed.txt", b"x")
    fake.set_fault(endpoint, status=503, retry_after=2, times=2)
    for _ in range(2):
        response = call(client, doc.id)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"
        assert response.json() == {"error": "Service Unavailable"}
    assert [d.file_name for d in fake.documents()] == ["seed.txt"]  # no effect
    assert call(client, doc.id).status_code in (200, 204)
    assert [r.faulted for r in fake.requests] == ["status", "status", None]


def test_status_fault_other_endpoints_unaffected_and_clear(fake, client):
    fake.set_fault("upload", status=429, retry_after="Wed, 21 Oct 2037 07:28:00 GMT")
    assert client.get("/api/v1/knowledge-bases/kb_docs").status_code == 200
    limited = upload(client, ("a.txt", b"x"))
    assert limited.status_code == 429 and limited.headers["retry-after"].startswith("Wed")
    assert fake.requests[-1].file_names == ("a.txt",)  # parsed, recorded, not stored
    fake.clear_faults()
    assert upload(client, ("a.txt", b"x")).status_code == 200
    fake.set_fault("*", status=500, times=1)
    assert client.get("/api/v1/knowledge-bases/kb_docs").status_code == 500
    assert client.get("/api/v1/knowledge-bases/kb_docs").status_code == 200


def test_status_fault_after_effect_stores_the_upload(fake, client):
    fake.set_fault("upload", status=502, after_effect=True, times=1)
    assert upload(client, ("a.txt", b"x")).status_code == 502
    assert [d.file_name for d in fake.documents()] == ["a.txt"]


def test_latency_fault_delays_a_real_answer(fake, client):
    fake.set_fault("get_knowledge_base", latency=0.3, times=1)
    started = time.monotonic()
    response = client.get("/api/v1/knowledge-bases/kb_docs")
    assert response.status_code == 200 and time.monotonic() - started >= 0.3
    assert fake.requests[-1].faulted == "latency"


@pytest.mark.parametrize("after_effect", [False, True])
def test_read_timeout_fault_outcome_unknown(fake, after_effect):
    fake.set_fault("upload", read_timeout=1.0, after_effect=after_effect, times=1)
    with httpx.Client(
        base_url=fake.url,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=httpx.Timeout(5, read=0.3),
    ) as c:
        with pytest.raises(httpx.ReadTimeout):
            upload(c, ("a.txt", b"x"))
        assert [d.file_name for d in fake.documents()] == (["a.txt"] if after_effect else [])
        recorded = fake.requests[-1]
        assert (recorded.status_code, recorded.faulted) == (None, "read_timeout")
        assert c.get("/api/v1/knowledge-bases/kb_docs").status_code == 200


def test_read_timeout_then_close_when_the_client_waits_longer(fake, client):
    fake.set_fault("get_knowledge_base", read_timeout=0.2, times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/api/v1/knowledge-bases/kb_docs")


@pytest.mark.parametrize("after_effect", [False, True])
def test_reset_fault_sends_rst(fake, after_effect):
    doc = fake.add_document("kb_docs", "a.txt", b"x")
    fake.set_fault("delete", reset=True, after_effect=after_effect, times=1)
    host, port = fake.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            f"DELETE /api/v1/knowledge-documents/{doc.id} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {KEY}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        with pytest.raises(ConnectionResetError):  # an RST, not an orderly FIN (recv -> b"")
            sock.recv(1024)
    assert (fake.document(doc.id) is None) is after_effect
    assert fake.requests[-1].faulted == "reset"


def test_reset_fault_seen_by_httpx_on_upload(fake, client):
    fake.set_fault("upload", reset=True, times=1)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        upload(client, ("a.txt", b"x" * 200_000))
    assert fake.documents() == []
    assert upload(client, ("a.txt", b"x")).status_code == 200


def test_fraction_faults_are_seeded_and_reproducible(fake, client):
    def run() -> list[bool]:
        fake.clear_faults()
        fake.set_fault("get_knowledge_base", status=503, fraction=0.3, seed=5)
        return [client.get("/api/v1/knowledge-bases/kb_docs").status_code == 503 for _ in range(40)]

    first = run()
    assert first == run()
    assert 4 <= sum(first) <= 24


def test_rules_apply_in_order_and_validate(fake, client):
    fake.set_fault("get_knowledge_base", status=429, times=1)
    fake.set_fault("get_knowledge_base", status=500, times=1)
    codes = [client.get("/api/v1/knowledge-bases/kb_docs").status_code for _ in range(3)]
    assert codes == [429, 500, 200]
    assert fake.request_count("get_knowledge_base") == 3 and fake.request_count("upload") == 0
    for bad in (
        {"endpoint": "search"},
        {"status": 200},
        {},
        {"status": 500, "reset": True},
        {"status": 500, "times": 0},
        {"status": 500, "fraction": 1.5},
    ):
        with pytest.raises(ValueError):
            fake.set_fault(**bad)


# -- concurrency, lifecycle, snapshots -------------------------------------------------------


def test_parallel_uploads_and_reads_from_threads(fake):
    def worker(n: int) -> list[str]:
        ids = []
        with httpx.Client(
            base_url=fake.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=20
        ) as c:
            for i in range(8):
                response = upload(
                    c, (f"w{n}-{i}-a.txt", b"a" * 1000), (f"w{n}-{i}-b.txt", b"b" * 2000)
                )
                assert response.status_code == 200
                ids += [d["id"] for d in response.json()]
                assert c.get("/api/v1/knowledge-bases/kb_docs").status_code == 200
        return ids

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(8)))
    all_ids = [i for ids in results for i in ids]
    assert len(all_ids) == len(set(all_ids)) == 128
    assert fake.request_count("upload") == 64
    assert fake.knowledge_base("kb_docs").document_count == 128
    fake.finish()
    assert fake.knowledge_base("kb_docs").chunk_count == 64 * 3


def test_snapshots_reset_and_lifecycle(fake, client):
    doc = fake.add_document("kb_docs", "orphan.txt", b"x" * 3000, status="ready")
    assert doc.chunk_count == 3
    listed = client.get("/api/v1/knowledge-bases/kb_docs").json()["documents"]
    assert [d["fileName"] for d in listed] == ["orphan.txt"]
    doc.status = "failed"  # a copy: the emulator is unaffected
    assert fake.document(doc.id).status == "ready"
    kb_id = fake.knowledge_base("kb_docs").id
    fake.set_fault("*", status=500)
    fake.reset()
    assert fake.documents() == [] and fake.requests == []
    assert fake.knowledge_base("kb_docs").id == kb_id  # knowledge bases stay
    assert client.get("/api/v1/knowledge-bases/kb_docs").status_code == 200  # faults gone
    with pytest.raises(ValueError):
        fake.create_knowledge_base("kb_docs")
    with pytest.raises(KeyError):
        fake.knowledge_base("kb_unknown")
    url = fake.url
    fake.stop()
    fake.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/api/v1/knowledge-bases/kb_docs", timeout=2)
    assert repr(fake) == "<FakePromptJuggler stopped>"


def test_stop_does_not_wait_for_idle_keep_alive_connections(fake, client):
    assert client.get("/api/v1/knowledge-bases/kb_docs").status_code == 200
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2


# -- the pytest plugin -----------------------------------------------------------------------


def test_fixture_points_settings_at_the_emulator(fake_promptjuggler, settings):
    from promptjuggler_django.conf import pj_settings

    assert fake_promptjuggler.url == pj_settings.BASE_URL
    assert pj_settings.API_KEY == fake_promptjuggler.api_key == "pj_test_key"
    assert settings.PROMPTJUGGLER["WEBHOOK_SECRETS"] == [
        "whsec_test_primary",
        "whsec_test_secondary",
    ]
    assert fake_promptjuggler.knowledge_base("kb_test").document_count == 0
    response = httpx.get(
        f"{pj_settings.BASE_URL}/api/v1/knowledge-bases/kb_test",
        headers={"Authorization": f"Bearer {pj_settings.API_KEY}"},
    )
    assert response.status_code == 200


def test_fixture_signs_webhooks_with_the_first_configured_secret(fake_promptjuggler):
    receiver = WebhookReceiver(secret="whsec_test_primary")
    try:
        fake_promptjuggler.set_webhook(receiver.url)  # the secret comes from settings
        fake_promptjuggler.add_document("kb_test", "a.txt", b"x")
        fake_promptjuggler.finish()
        assert [r.verified for r in receiver.wait(2)] == [True, True]
    finally:
        receiver.close()


@pytest.mark.django_db(transaction=True)
def test_documented_live_server_recipe_reaches_the_webhook_view(fake_promptjuggler, live_server):
    from django.urls import reverse

    from promptjuggler_django.models import WebhookDelivery

    fake_promptjuggler.set_webhook(live_server.url + reverse("promptjuggler_django:webhook"))
    fake_promptjuggler.add_document("kb_test", "orphan.txt", b"x" * 2000)
    fake_promptjuggler.finish()
    assert [d.status_code for d in fake_promptjuggler.webhook_deliveries] == [200, 200]
    assert WebhookDelivery.objects.count() == 2


def test_signature_fixture_signs_with_the_first_secret(promptjuggler_signature):
    body = b'{"id":"x","status":"ready","chunkCount":1}'
    header = promptjuggler_signature(body)
    verified = signature.verify(body, header, ["whsec_test_primary"])
    assert verified is not None
    assert promptjuggler_signature.headers(body, 1700000000) == {
        "HTTP_PROMPTJUGGLER_SIGNATURE": signature.sign(body, "whsec_test_primary", 1700000000)
    }
    assert "whsec" not in repr(promptjuggler_signature)


def test_plugin_works_without_pytest_django(tmp_path):
    (tmp_path / "test_plain.py").write_text(
        textwrap.dedent(
            """
            import httpx

            def test_emulator(fake_promptjuggler):
                fake_promptjuggler.create_knowledge_base("kb_plain")
                r = httpx.get(fake_promptjuggler.url + "/api/v1/knowledge-bases/kb_plain",
                              headers={"Authorization": "Bearer pj_test_key"})
                assert r.status_code == 200
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:django",
            "-p",
            "no:cacheprovider",
            "-c",
            os.devnull,
            str(tmp_path / "test_plain.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


# -- the management command ------------------------------------------------------------------


@dataclass
class CommandRun:
    """``manage.py promptjuggler_emulator`` in a child process (see :func:`emulator_command`)."""

    url: str = ""
    #: The lines it printed on start, up to "Ctrl-C to stop".
    banner: list[str] = field(default_factory=list)
    #: After the block: what it printed after the banner, and how it ended.
    out: str = ""
    err: str = ""
    returncode: int | None = None


@contextlib.contextmanager
def emulator_command(*args: str, pythonpath: Iterable[Path] = ()) -> Iterator[CommandRun]:
    """Run the command with ``args`` (settings: ``tests.settings`` unless ``--settings`` is
    given) until the block ends, then stop it with Ctrl-C."""
    paths = [*map(str, pythonpath), str(ROOT)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    env.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "promptjuggler_emulator", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = CommandRun()
    try:
        line = process.stdout.readline()
        assert "running at http://127.0.0.1:" in line, line + process.stderr.read()
        run.url = line.strip().rsplit(" ", 1)[-1]
        run.banner.append(line)
        while "Ctrl-C to stop" not in run.banner[-1]:
            run.banner.append(process.stdout.readline())
        yield run
    finally:
        process.send_signal(signal.SIGINT)
        run.out, run.err = process.communicate(timeout=10)
        run.returncode = process.returncode


def test_management_command_runs_without_a_database(tmp_path):
    (tmp_path / "nodb_settings.py").write_text(
        "from tests.settings import *  # noqa\n"
        "DATABASES = {'default': {'ENGINE': 'django.db.backends.postgresql',\n"
        "    'HOST': '127.0.0.1', 'PORT': '1', 'NAME': 'unreachable'}}\n"
    )
    receiver = WebhookReceiver(secret="whsec_test_primary")
    try:
        with emulator_command(
            "--settings=nodb_settings",
            "--port",
            "0",
            "--processing-delay",
            "0.1",
            "--knowledge-base",
            "kb_cli",
            "--knowledge-base",
            "kb_two",
            "--webhook-url",
            receiver.url,
            "--fail-file",
            "bad.txt",
            pythonpath=[tmp_path],
        ) as command:
            with httpx.Client(
                base_url=command.url, headers={"Authorization": "Bearer pj_test_key"}
            ) as c:
                assert c.get("/api/v1/knowledge-bases/kb_two").status_code == 200
                assert c.get("/api/v1/knowledge-bases/kb_test").status_code == 404  # flags win
                docs = upload(c, ("good.txt", b"x"), ("bad.txt", b"y"), slug="kb_cli").json()
            received = receiver.wait(3)
            assert all(r.verified for r in received)  # signed with WEBHOOK_SECRETS[0]
            statuses = {b["id"]: b["status"] for b in receiver.bodies()}
            assert [statuses[d["id"]] for d in docs] == ["ready", "failed"]
    finally:
        receiver.close()
    assert command.returncode == 0, command.err
    assert "stopped" in command.out
    printed = "".join(command.banner) + command.out + command.err
    assert "pj_test_key" not in printed and "whsec_test" not in printed
