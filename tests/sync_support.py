"""Fixtures and helpers for the sync engine's tests (imported by tests/test_sync*.py & co)."""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import InMemoryStorage

from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument

#: Where the Tasks API the app uses lives: built into Django 6, the backport on Django 5.2.
TASKS_MODULE = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"

#: The fixtures; test modules take them with ``from tests.sync_support import *``.
__all__ = ["dummy_tasks", "hooked_storage", "kb", "pj"]

#: Fast retries for tests: backoff in milliseconds, a short lease, small batches.
FAST = {
    "PUSH_BACKOFF": 0.01,
    "PUSH_BACKOFF_MAX": 0.05,
    "RETRY_BACKOFF": 0.001,
    "RETRY_BACKOFF_MAX": 0.01,
}


@pytest.fixture
def pj(fake_promptjuggler: Any, settings: Any) -> Any:
    """The emulator, with the app's retry timings shortened."""
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, **FAST}
    return fake_promptjuggler


@pytest.fixture
def kb(db: Any) -> KnowledgeBase:
    return KnowledgeBase.objects.create(slug="kb_test", name="Test")


@pytest.fixture
def dummy_tasks(settings: Any) -> Iterator[list[Any]]:
    """Route the app's tasks to the dummy backend; yields the list of enqueued results."""
    task_backends = importlib.import_module(TASKS_MODULE).task_backends
    settings.TASKS = {"default": {"BACKEND": f"{TASKS_MODULE}.backends.dummy.DummyBackend"}}
    backend = task_backends["default"]
    backend.clear()
    yield backend.results
    backend.clear()


def make_doc(
    kb: KnowledgeBase, name: str = "a.txt", content: bytes = b"hello world", **fields: Any
) -> KnowledgeDocument:
    return KnowledgeDocument.objects.create(
        knowledge_base=kb, file=ContentFile(content, name=name), **fields
    )


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def remote_state(fake: Any, slug: str = "kb_test") -> dict[str, str]:
    """``{file_name: sha256}`` of the emulator's documents (asserting names are unique)."""
    docs = fake.documents(slug)
    names = [d.file_name for d in docs]
    assert len(names) == len(set(names)), f"duplicate remote documents: {sorted(names)}"
    return {d.file_name: d.sha256 for d in docs}


class HookedStorage(InMemoryStorage):
    """In-memory storage whose files run ``on_read`` at their first read (race injection).

    The push reads a file while its upload request is being sent, outside any transaction, so
    the hook runs exactly "while the upload is in flight".
    """

    on_read: Any = None

    def _open(self, name: str, mode: str = "rb") -> Any:
        inner = super()._open(name, mode)
        hook = type(self).on_read
        if hook is None:
            return inner
        type(self).on_read = None  # one shot: the next push reads normally
        return _HookedFile(inner, hook)


class _HookedFile:
    def __init__(self, inner: Any, hook: Any) -> None:
        self._inner = inner
        self._hook = hook

    def read(self, size: int = -1) -> bytes:
        hook, self._hook = self._hook, None
        if hook is not None:
            hook()
        return self._inner.read(size)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._inner.close()


@pytest.fixture
def hooked_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[HookedStorage]]:
    """Documents stored in a :class:`HookedStorage` for the test."""
    storage = HookedStorage()
    field = KnowledgeDocument._meta.get_field("file")
    monkeypatch.setattr(field, "storage", storage)
    HookedStorage.on_read = None
    yield HookedStorage
    HookedStorage.on_read = None
