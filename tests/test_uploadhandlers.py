"""A file larger than ``MAX_UPLOAD_SIZE`` is stopped while it arrives, not after it reached disk.

The upload page, the admin upload and the REST API put
:class:`~promptjuggler_django.uploadhandlers.UploadSizeLimitHandler` in front of Django's own
upload handlers. A recording handler placed first in ``FILE_UPLOAD_HANDLERS`` (so right behind
the limit) sees every byte that gets past it: never more than the limit. The whole request is
refused with the size message, nothing is stored, no temporary file is left, and a body far
larger than the limit, streamed to a live server, leaves memory flat.
"""

from __future__ import annotations

import re
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument
from promptjuggler_django.uploadhandlers import UploadSizeLimitHandler

PAGE = reverse("promptjuggler_django:document_upload")
ADMIN_UPLOAD = reverse("admin:promptjuggler_django_knowledgedocument_upload")
REST = reverse("promptjuggler_django_rest:document-list")

LIMIT = 256 * 1024
TOO_LARGE = "“big.txt” is too large (more than 256.0\xa0KB). The limit is 256.0\xa0KB per file."


class RecordingHandler(FileUploadHandler):
    """Counts, per file, the bytes that reach Django's own handlers (and passes them on)."""

    received: dict[str, int] = {}

    def new_file(self, field_name: str, file_name: str, *args: Any, **kwargs: Any) -> None:
        super().new_file(field_name, file_name, *args, **kwargs)
        RecordingHandler.received[file_name] = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        RecordingHandler.received[self.file_name] += len(raw_data)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


@pytest.fixture
def temp_dir(settings, tmp_path):
    """Every upload goes through a temporary file in ``temp_dir``, the limit is ``LIMIT``."""
    directory = tmp_path / "uploads"
    directory.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(directory)
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    settings.FILE_UPLOAD_HANDLERS = [
        f"{__name__}.RecordingHandler",
        "django.core.files.uploadhandler.MemoryFileUploadHandler",
        "django.core.files.uploadhandler.TemporaryFileUploadHandler",
    ]
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "MAX_UPLOAD_SIZE": LIMIT}
    RecordingHandler.received = {}
    return directory


def files(big: int = 4 * LIMIT) -> list[SimpleUploadedFile]:
    return [
        SimpleUploadedFile("small.txt", b"fits", "text/plain"),
        SimpleUploadedFile("big.txt", b"x" * big, "text/plain"),
        SimpleUploadedFile("after.txt", b"never read", "text/plain"),
    ]


def assert_refused_and_nothing_kept(temp_dir) -> None:
    assert not KnowledgeDocument.objects.exists()
    assert list(temp_dir.iterdir()) == []
    # The limit stopped the big file before Django's handlers saw more than the limit, and the
    # parts after it were never handed to any handler.
    assert RecordingHandler.received.get("small.txt") == 4
    assert RecordingHandler.received["big.txt"] <= LIMIT
    assert "after.txt" not in RecordingHandler.received


@pytest.fixture
def ann(django_user_model):
    return django_user_model.objects.create_user("ann", password="pw")


@pytest.fixture
def knowledge_base() -> KnowledgeBase:
    return KnowledgeBase.objects.create(slug="kb_test")


@pytest.mark.django_db
def test_the_upload_page_stops_a_file_over_the_limit(client, ann, knowledge_base, temp_dir):
    client.force_login(ann)
    response = client.post(PAGE, {"files": files()})
    assert_refused_and_nothing_kept(temp_dir)
    assert response.status_code == 200
    assert response.context["form"].errors["files"] == [TOO_LARGE]


@pytest.mark.django_db
def test_the_admin_upload_stops_a_file_over_the_limit(admin_client, knowledge_base, temp_dir):
    response = admin_client.post(
        ADMIN_UPLOAD, {"knowledge_base": knowledge_base.pk, "files": files()}
    )
    assert_refused_and_nothing_kept(temp_dir)
    assert response.status_code == 200
    assert response.context["form"].errors == {"files": [TOO_LARGE]}


@pytest.mark.django_db
def test_the_rest_api_stops_a_file_over_the_limit(ann, knowledge_base, temp_dir):
    api = APIClient()
    api.force_authenticate(ann)
    response = api.post(REST, {"files": files()}, format="multipart")
    assert_refused_and_nothing_kept(temp_dir)
    assert response.status_code == 400
    assert response.json() == {"files": [TOO_LARGE]}


@pytest.mark.django_db
@pytest.mark.parametrize("url", [PAGE, ADMIN_UPLOAD])
def test_a_file_exactly_at_the_limit_is_taken(url, admin_user, knowledge_base, temp_dir):
    client = Client()
    client.force_login(admin_user)
    exact = SimpleUploadedFile("exact.txt", b"x" * LIMIT, "text/plain")
    response = client.post(url, {"knowledge_base": knowledge_base.pk, "files": [exact]})
    assert response.status_code == 302, response.content.decode()[:2000]
    assert KnowledgeDocument.objects.get().file_size == LIMIT
    assert RecordingHandler.received == {"exact.txt": LIMIT}


@pytest.mark.django_db
@pytest.mark.parametrize("url", [PAGE, ADMIN_UPLOAD])
def test_the_pages_still_check_csrf(url, admin_user, knowledge_base, temp_dir):
    """The pages put the limit in place before the CSRF check reads the body, then check it."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    small = [SimpleUploadedFile("a.txt", b"alpha", "text/plain")]
    refused = client.post(url, {"knowledge_base": knowledge_base.pk, "files": small})
    assert refused.status_code == 403
    token = client.get(url).context["csrf_token"]
    small = [SimpleUploadedFile("a.txt", b"alpha", "text/plain")]
    taken = client.post(
        url, {"csrfmiddlewaretoken": token, "knowledge_base": knowledge_base.pk, "files": small}
    )
    assert taken.status_code == 302
    assert KnowledgeDocument.objects.count() == 1


def test_the_handler_is_put_in_front_once(rf):
    request = rf.post("/")
    for _ in range(2):
        UploadSizeLimitHandler.install(request)
    handlers = request.upload_handlers
    assert isinstance(handlers[0], UploadSizeLimitHandler)
    assert sum(isinstance(h, UploadSizeLimitHandler) for h in handlers) == 1


def test_a_limit_that_comes_too_late_says_so(rf, caplog):
    request = rf.post("/promptjuggler/documents/upload/", {"note": "read by a middleware"})
    assert request.POST["note"] == "read by a middleware"
    with caplog.at_level("WARNING", logger="promptjuggler_django.uploads"):
        assert UploadSizeLimitHandler.install(request) is False
    assert not any(isinstance(h, UploadSizeLimitHandler) for h in request.upload_handlers)
    assert "came too late for /promptjuggler/documents/upload/" in caplog.text


# --- a live server: a body far larger than the limit, streamed --------------------------------

STREAMED = 64 * 1024 * 1024
CHUNK = b"y" * (64 * 1024)


def multipart(boundary: str, fields: dict[str, str], file_size: int) -> Iterator[bytes]:
    """A multipart body with ``fields`` first, then one file of ``file_size`` bytes, generated."""
    for name, value in fields.items():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    yield (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="files"; filename="big.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    for _ in range(file_size // len(CHUNK)):
        yield CHUNK
    yield f"\r\n--{boundary}--\r\n".encode()


def body_length(boundary: str, fields: dict[str, str], file_size: int) -> int:
    head = b"".join(c for c in multipart(boundary, fields, 0))
    return len(head) + file_size


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("target", ["page", "rest"])
def test_a_live_server_stops_reading_into_memory_or_disk(
    live_server, django_user_model, target, temp_dir
):
    KnowledgeBase.objects.create(slug="kb_test")
    login = Client()
    login.force_login(django_user_model.objects.create_user("ann", password="pw"))
    session = login.cookies["sessionid"].value
    with httpx.Client(base_url=live_server.url, cookies={"sessionid": session}) as http:
        page = http.get(PAGE)
        assert page.status_code == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        boundary = uuid.uuid4().hex
        fields = {"csrfmiddlewaretoken": token} if target == "page" else {}
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(body_length(boundary, fields, STREAMED)),
            "X-CSRFToken": token,
            "Referer": live_server.url + PAGE,
        }
        tracemalloc.start()
        try:
            response = http.post(
                PAGE if target == "page" else REST,
                content=multipart(boundary, fields, STREAMED),
                headers=headers,
                timeout=60,
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert RecordingHandler.received["big.txt"] <= LIMIT
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes for a {STREAMED}-byte body"
    if target == "page":
        assert response.status_code == 200
        assert TOO_LARGE in response.text
    else:
        assert response.status_code == 400
        assert response.json() == {"files": [TOO_LARGE]}
    assert list(temp_dir.iterdir()) == []
    assert not KnowledgeDocument.objects.exists()
