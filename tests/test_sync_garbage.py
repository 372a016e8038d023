"""Garbage in a success answer never aborts the engine.

A 2xx whose counts are negative or beyond any column, or whose status string is too long to be a
status, is an invalid answer for that batch or knowledge base: the unknown-outcome rules apply to
an upload, a poll reports the knowledge base as failed, and the other knowledge bases carry on.
The values are judged by the same rules as a webhook's (``promptjuggler_django.limits``).
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command

from promptjuggler_django import sync
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, SyncState
from promptjuggler_django.testing.state import FakeDocument, Store
from tests.sync_support import *  # noqa: F403  (fixtures: pj, kb, …)
from tests.sync_support import make_doc

pytestmark = pytest.mark.django_db

TOO_LONG_STATUS = "processing-" + "x" * 40  # wider than any status column (32)
GARBAGE_COUNTS = [-1, 2**31, 10**20]


def _answer_upload_with(monkeypatch: Any, **overrides: Any) -> None:
    """Make the emulator's upload answers (and document GETs) carry ``overrides``."""
    original = FakeDocument.as_response

    def as_response(self: FakeDocument) -> dict[str, Any]:
        return {**original(self), **overrides}

    monkeypatch.setattr(FakeDocument, "as_response", as_response)


@pytest.mark.parametrize("count", GARBAGE_COUNTS)
def test_an_upload_answer_with_an_impossible_chunk_count_is_an_unknown_outcome(
    pj: Any, kb: KnowledgeBase, monkeypatch: Any, count: int
) -> None:
    doc = make_doc(kb, "a.txt")
    _answer_upload_with(monkeypatch, chunkCount=count)
    report = sync.push_documents([doc.pk])  # does not raise
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.NEEDS_REVIEW
    assert "chunkCount" in doc.last_error
    assert report.attempted == 1


def test_an_upload_answer_with_a_status_too_long_for_a_status_is_an_unknown_outcome(
    pj: Any, kb: KnowledgeBase, monkeypatch: Any
) -> None:
    doc = make_doc(kb, "a.txt")
    _answer_upload_with(monkeypatch, status=TOO_LONG_STATUS)
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.NEEDS_REVIEW
    assert "status" in doc.last_error
    assert doc.remote_status != TOO_LONG_STATUS


def test_one_garbage_upload_answer_does_not_stop_the_other_knowledge_base(
    pj: Any, kb: KnowledgeBase, monkeypatch: Any
) -> None:
    other = KnowledgeBase.objects.create(slug="kb_other")
    pj.create_knowledge_base("kb_other")
    bad, good = make_doc(kb, "bad.txt"), make_doc(other, "good.txt")
    original = FakeDocument.as_response

    def as_response(self: FakeDocument) -> dict[str, Any]:
        data = original(self)
        return {**data, "chunkCount": -7} if self.file_name == "bad.txt" else data

    monkeypatch.setattr(FakeDocument, "as_response", as_response)
    sync.push_due()
    bad.refresh_from_db()
    good.refresh_from_db()
    assert bad.sync_state == SyncState.NEEDS_REVIEW
    assert good.sync_state == SyncState.SYNCED


def _synced(kb: KnowledgeBase, name: str) -> KnowledgeDocument:
    doc = make_doc(kb, name)
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.SYNCED
    return doc


def _garble_knowledge_base(monkeypatch: Any, slug: str, **overrides: Any) -> None:
    original = Store.knowledge_base_response

    def knowledge_base_response(self: Store, kb_id: Any) -> dict[str, Any]:
        data = original(self, kb_id)
        return {**data, **overrides} if self.knowledge_base(kb_id).slug == slug else data

    monkeypatch.setattr(Store, "knowledge_base_response", knowledge_base_response)


@pytest.mark.parametrize(
    "overrides",
    [
        {"documentCount": -1},
        {"chunkCount": 2**31},
        {"status": TOO_LONG_STATUS},
        {"status": "ready\x00"},
    ],
    ids=["negative-documents", "huge-chunks", "long-status", "nul-status"],
)
def test_a_garbage_knowledge_base_answer_fails_that_knowledge_base_only(
    pj: Any, kb: KnowledgeBase, monkeypatch: Any, overrides: dict[str, Any]
) -> None:
    other = KnowledgeBase.objects.create(slug="kb_other")
    pj.create_knowledge_base("kb_other")
    _synced(kb, "a.txt")
    theirs = _synced(other, "b.txt")
    pj.finish(theirs.remote_id)
    before = KnowledgeBase.objects.values_list("status", "document_count", "chunk_count").get(
        pk=kb.pk
    )
    _garble_knowledge_base(monkeypatch, "kb_test", **overrides)
    out = io.StringIO()
    # Does not raise: a GET that failed is made again by the next run (exit status 0).
    call_command("promptjuggler_sync", stdout=out, stderr=io.StringIO())
    assert "kb_test" in out.getvalue() and "unexpected body" in out.getvalue()
    after = KnowledgeBase.objects.values_list("status", "document_count", "chunk_count").get(
        pk=kb.pk
    )
    assert after == before  # nothing of the garbage was stored
    theirs.refresh_from_db()
    assert theirs.remote_status == "ready"  # the other knowledge base carried on


def test_a_listed_document_status_too_long_for_a_status_fails_the_listing(
    pj: Any, kb: KnowledgeBase, monkeypatch: Any
) -> None:
    doc = _synced(kb, "a.txt")
    original = FakeDocument.as_summary

    def as_summary(self: FakeDocument) -> dict[str, Any]:
        return {**original(self), "status": TOO_LONG_STATUS}

    monkeypatch.setattr(FakeDocument, "as_summary", as_summary)
    report = sync.refresh_knowledge_base(kb)
    assert report.error and "status" in report.error
    doc.refresh_from_db()
    assert doc.remote_status != TOO_LONG_STATUS
