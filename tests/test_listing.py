"""A knowledge base's listing, parsed as it arrives and spooled to disk (flat memory).

``client.list_knowledge_base`` reads the ``GET`` incrementally and ``sync._listing.Listing``
keeps the documents on disk while refresh and reconcile compare them in chunks; the figures
at 10k to 500k documents are in ``benchmarks/reconcile_memory.py``.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from promptjuggler_django import client as client_module
from promptjuggler_django import sync
from promptjuggler_django.client import (
    InvalidResponse,
    PromptJugglerClient,
    RemoteDocument,
)
from promptjuggler_django.client._listing import parse_listing
from promptjuggler_django.client._shapes import ShapeError, parse_json, parse_knowledge_base
from promptjuggler_django.models import SyncState
from promptjuggler_django.sync._listing import Listing
from tests.sync_support import *  # noqa: F403  (fixtures: pj, kb, …)
from tests.sync_support import make_doc


class Sink:
    def __init__(self) -> None:
        self.documents: list[RemoteDocument] = []
        self.clears = 0

    def add(self, document: RemoteDocument) -> None:
        self.documents.append(document)

    def clear(self) -> None:
        self.documents = []
        self.clears += 1


def doc(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=i + 1)),
        "status": "ready",
        "fileName": f"f{i}.txt",
        **extra,
    }


BODIES = [
    {"id": str(uuid.UUID(int=99)), "status": "ready", "documents": [doc(0), doc(1)]},
    # Fields after the documents, nested objects, unknown keys and nulls.
    {
        "documents": [doc(0, meta={"id": "not this", "documents": [1]}, bytes=None)],
        "extra": {"status": "not this either"},
        "chunkCount": 7,
        "documentCount": 3,
        "status": "pending",
        "id": str(uuid.UUID(int=98)),
    },
    {"id": str(uuid.UUID(int=97)), "status": "", "documents": None},
    {"id": str(uuid.UUID(int=96)), "status": "ready"},
]


@pytest.mark.parametrize("body", BODIES)
def test_the_streamed_parse_matches_the_whole_body_parse(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    whole = parse_knowledge_base(parse_json(raw))
    for step in (1, 7, len(raw)):  # chunks of every size, split anywhere
        sink = Sink()
        streamed = parse_listing((raw[i : i + step] for i in range(0, len(raw), step)), sink)
        assert tuple(sink.documents) == whole.documents
        assert streamed.id == whole.id and streamed.status == whole.status
        assert (streamed.document_count, streamed.chunk_count) == (
            whole.document_count,
            whole.chunk_count,
        )
        assert streamed.documents == ()


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"<html>", "not JSON"),
        (b'{"id": "x", "documents": [', "not JSON"),  # cut off
        (b"[]", "must be a JSON object"),
        (b'{"id": "%s", "documents": {}}' % str(uuid.UUID(int=1)).encode(), "JSON array"),
        (b'{"id": "%s", "documents": [1]}' % str(uuid.UUID(int=1)).encode(), "JSON object"),
        (b'{"id": "nope", "documents": []}', "id"),
        (b'{"id": "%s", "documents": [{"id": "bad"}]}' % str(uuid.UUID(int=1)).encode(), "id"),
    ],
)
def test_a_body_of_the_wrong_shape_is_refused_like_the_whole_body_parse(
    raw: bytes, why: str
) -> None:
    with pytest.raises(ShapeError, match=why):
        parse_listing([raw], Sink())


def test_the_client_lists_like_get_knowledge_base(pj: Any, kb: Any) -> None:
    for i in range(5):
        pj.add_document(kb.slug, f"doc-{i}.txt", b"x" * i)
    sink = Sink()
    with PromptJugglerClient.from_settings() as api:
        whole = api.get_knowledge_base(kb.slug)
        listed = api.list_knowledge_base(kb.slug, sink)
    assert tuple(sink.documents) == whole.documents and len(sink.documents) == 5
    assert (listed.id, listed.status, listed.document_count) == (
        whole.id,
        whole.status,
        whole.document_count,
    )
    assert sink.clears == 1


def test_a_listing_over_the_body_cap_is_read_whole(pj: Any, kb: Any, monkeypatch: Any) -> None:
    for i in range(40):
        pj.add_document(kb.slug, f"document-number-{i:03}.txt", b"x")
    monkeypatch.setattr(client_module, "RESPONSE_BODY_LIMIT", 2048)
    sink = Sink()
    with PromptJugglerClient.from_settings() as api:
        with pytest.raises(InvalidResponse):  # the whole-body read is cut at the cap
            api.get_knowledge_base(kb.slug)
        api.list_knowledge_base(kb.slug, sink)
    assert len(sink.documents) == 40


def test_a_listing_cut_off_by_a_broken_connection_is_read_again_from_the_start() -> None:
    body = json.dumps({"id": str(uuid.UUID(int=9)), "documents": [doc(i) for i in range(50)]})
    raw = body.encode()
    answers: list[int] = []

    class Flaky(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answers.append(1)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            # The first answer breaks off after half the documents were sent.
            self.wfile.write(raw if len(answers) > 1 else raw[: len(raw) // 2])
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    sink = Sink()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        with PromptJugglerClient(api_key="pj_test_key", base_url=url, backoff=0) as api:
            api.list_knowledge_base("kb_flaky", sink)
    finally:
        server.shutdown()
        server.server_close()
    assert len(answers) == 2  # read again after the break
    assert [d.file_name for d in sink.documents] == [f"f{i}.txt" for i in range(50)]
    assert sink.clears == 2


def test_the_spool_finds_by_id_and_name_and_reads_back_in_order() -> None:
    documents = [
        RemoteDocument(uuid.UUID(int=i + 1), "ready", f"f{i % 3}.txt", i) for i in range(2500)
    ]
    with Listing() as listed:
        for d in documents:
            listed.add(d)
        assert len(listed) == 2500
        wanted = [documents[5].id, documents[2400].id, uuid.UUID(int=10**9), None]
        assert listed.by_id(wanted) == {
            documents[5].id: documents[5],
            documents[2400].id: documents[2400],
        }
        assert listed.named(["f1.txt"]) == [d for d in documents if d.file_name == "f1.txt"]
        chunks = list(listed.chunks(1000))
        assert [len(c) for c in chunks] == [1000, 1000, 500]
        assert [d for c in chunks for d in c] == documents
        # Listed twice: the later entry counts, once.
        again = RemoteDocument(documents[0].id, "failed", "f0.txt", 0)
        listed.add(again)
        assert len(listed) == 2500 and listed.by_id([again.id]) == {again.id: again}
        listed.clear()
        assert len(listed) == 0 and list(listed.chunks()) == []


@pytest.mark.django_db
def test_refresh_compares_a_listing_over_the_body_cap(pj: Any, kb: Any, monkeypatch: Any) -> None:
    documents = [make_doc(kb, f"document-number-{i:03}.txt", b"text") for i in range(30)]
    sync.push_documents([d.pk for d in documents])
    for d in documents[:10]:
        d.refresh_from_db()
        pj.finish(d.remote_id)
    pj.add_document(kb.slug, "nobody-knows.txt", b"?")
    monkeypatch.setattr(client_module, "RESPONSE_BODY_LIMIT", 2048)
    report = sync.refresh_knowledge_base(kb)
    assert report.error == ""
    assert report.status_changes == 10
    assert [d.file_name for d in report.orphans] == ["nobody-knows.txt"]
    assert all(d.sync_state == SyncState.SYNCED for d in kb.documents.all())
