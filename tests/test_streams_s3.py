"""Streaming stored files, S3 through django-storages included (moto's server on loopback)."""

from __future__ import annotations

import hashlib
import importlib.util
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import InMemoryStorage

from promptjuggler_django import sync
from promptjuggler_django.models import KnowledgeDocument, SyncState
from promptjuggler_django.sync._streams import (
    LazyStoredFile,
    S3BodyReader,
    open_stored_file,
    stored_size,
)
from tests.sync_support import *  # noqa: F403  (fixtures)

boto3 = pytest.importorskip("boto3")
S3Storage = pytest.importorskip("storages.backends.s3").S3Storage

CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def moto_url() -> Any:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_url: str) -> S3Storage:
    bucket = f"pj-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return S3Storage(bucket_name=bucket, endpoint_url=moto_url, location="media", **CREDENTIALS)


@pytest.fixture
def no_buffered_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if anything uses S3Storage.open(), which downloads the whole object first."""

    def refuse(self: Any, name: str, mode: str = "rb") -> Any:
        raise AssertionError("S3Storage.open() buffers the whole object")

    monkeypatch.setattr(S3Storage, "_open", refuse)


def test_s3_objects_are_read_from_the_get_body(s3: S3Storage, no_buffered_open: None) -> None:
    data = bytes(range(256)) * 12_000  # ~3 MB
    name = s3.save("docs/big.bin", ContentFile(data))
    reader = open_stored_file(s3, name)
    assert isinstance(reader, S3BodyReader)
    from botocore.response import StreamingBody

    assert isinstance(reader._body, StreamingBody)
    assert reader.size == len(data)
    digest, reads = hashlib.sha256(), 0
    while chunk := reader.read(65536):
        assert len(chunk) <= 65536
        digest.update(chunk)
        reads += 1
    reader.close()
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert reads >= len(data) // 65536
    assert stored_size(s3, name) == len(data)


def test_a_missing_s3_object_is_file_not_found(s3: S3Storage) -> None:
    with pytest.raises(FileNotFoundError):
        open_stored_file(s3, "nope.txt")
    lazy = LazyStoredFile(s3, "nope.txt", 10)
    with pytest.raises(FileNotFoundError):
        lazy.read(10)
    assert lazy.error == "missing"


def test_gzipped_s3_objects_are_read_decompressed(moto_url: str, no_buffered_open: None) -> None:
    storage = S3Storage(
        bucket_name=f"pj-{uuid.uuid4().hex[:12]}",
        endpoint_url=moto_url,
        gzip=True,
        gzip_content_types=("text/plain",),
        **CREDENTIALS,
    )
    storage.connection.meta.client.create_bucket(Bucket=storage.bucket_name)
    text = b"compressible text\n" * 5000
    name = storage.save("notes.txt", ContentFile(text))
    assert storage.size(name) < len(text)  # stored compressed
    assert stored_size(storage, name) is None  # so the push sends it chunked
    with open_stored_file(storage, name) as reader:
        assert reader.read() == text


def test_lazy_files_open_at_the_first_read_and_check_their_size() -> None:
    storage = InMemoryStorage()
    name = storage.save("x.txt", ContentFile(b"12345"))
    lazy = LazyStoredFile(storage, name, 5)
    assert lazy._inner is None
    assert lazy.read(3) == b"123"
    assert lazy.read(10) == b"45" and lazy.read(10) == b""
    assert lazy.error is None and lazy._inner is None  # closed at EOF
    short = LazyStoredFile(storage, name, 9)
    while short.read(4):
        pass
    assert short.error == "size_mismatch"


def test_a_storage_can_provide_its_own_stream() -> None:
    class Custom(InMemoryStorage):
        def open_stream(self, name: str) -> Any:
            import io

            return io.BytesIO(b"custom:" + name.encode())

    assert open_stored_file(Custom(), "a").read() == b"custom:a"


@pytest.mark.django_db
def test_pushing_a_document_stored_on_s3(
    pj: Any, kb: Any, s3: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(KnowledgeDocument._meta.get_field("file"), "storage", s3)
    content = b"A page of text that lives in S3.\n" * 40_000  # ~1.3 MB
    doc = KnowledgeDocument.objects.create(
        knowledge_base=kb, file=ContentFile(content, name="handbook.txt")
    )
    assert doc.file.name.startswith("promptjuggler/")
    monkeypatch.setattr(S3Storage, "_open", lambda *a, **k: pytest.fail("buffered open used"))
    report = sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert report.synced == 1 and doc.sync_state == SyncState.SYNCED
    remote = pj.document(doc.remote_id)
    assert remote.file_name == "handbook.txt"
    assert remote.sha256 == hashlib.sha256(content).hexdigest()
    assert remote.bytes == len(content)


def _benchmark() -> Any:
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "push_memory_s3.py"
    spec = importlib.util.spec_from_file_location("push_memory_s3", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_200_mb_s3_document_is_pushed_in_under_100_mb() -> None:
    """A worker process (Django, boto3, httpx loaded: ~85 MB before the push) stays under
    100 MB peak RSS while streaming a 200 MB object from S3 to PromptJuggler."""
    result = _benchmark().measure(200, include_sdk=False)
    app = result["app"]
    assert app["synced"] == 1 and app["content_ok"]
    assert app["peak_rss_mb"] < 100, app
    assert app["peak_rss_mb"] - app["rss_before_push_mb"] < 20, app
