"""Polls and webhooks observed in the same second: the ordering rules of ``status``.

Webhook observation times are whole seconds (the signature's ``t``); polls carry microseconds.
A document status only moves forward (a higher rank always wins); a knowledge base's status is
ordered by time at whole-second precision, the later arrival winning within one second.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from promptjuggler_django import sync
from promptjuggler_django.display import remote_status_badge
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument
from tests.sync_support import *  # noqa: F403  (fixtures: pj, kb, …)
from tests.sync_support import make_doc
from tests.webhook_support import document_body, knowledge_base_body, post, url

pytestmark = pytest.mark.django_db


def _freeze_webhook_clock(monkeypatch: pytest.MonkeyPatch, timestamp: int) -> None:
    from promptjuggler_django.webhooks import WebhookView

    monkeypatch.setattr(WebhookView, "current_time", lambda self: float(timestamp) + 0.5)


def _polled_sealed(pj: Any, kb: KnowledgeBase) -> KnowledgeDocument:
    doc = make_doc(kb, "poll.txt")
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    pj.seal(doc.remote_id)
    assert sync.refresh_documents([doc]) == 1
    doc.refresh_from_db()
    assert doc.remote_status == "sealed"
    assert doc.status_changed_at is not None
    return doc


@pytest.mark.parametrize(
    ("offset", "status", "outcome"),
    [
        (0, "ready", "applied"),  # signed in the second of the poll
        (-30, "ready", "applied"),  # a higher rank wins even when signed before the poll
        (0, "pending", "stale"),  # a lower rank in the same second stays stale
    ],
)
def test_a_document_webhook_after_a_poll(
    pj: Any,
    kb: KnowledgeBase,
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    offset: int,
    status: str,
    outcome: str,
) -> None:
    doc = _polled_sealed(pj, kb)
    signed_at = int(doc.status_changed_at.timestamp()) + offset
    _freeze_webhook_clock(monkeypatch, signed_at)
    answer = post(client, url(), document_body(doc.remote_id, status, 7), timestamp=signed_at)
    assert answer.json() == {"outcome": outcome}
    doc.refresh_from_db()
    expected = (status, 7) if outcome == "applied" else ("sealed", None)
    assert (doc.remote_status, doc.chunk_count) == expected


def test_a_knowledge_base_webhook_in_the_second_of_a_poll_applies(
    pj: Any, kb: KnowledgeBase, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync.refresh_knowledge_base(kb)
    kb.refresh_from_db()
    assert kb.remote_id is not None and kb.status_changed_at is not None
    second = int(kb.status_changed_at.timestamp())
    _freeze_webhook_clock(monkeypatch, second)
    body = knowledge_base_body(kb.remote_id, "ready", documents=3, chunks=11)
    answer = post(client, url(), body, timestamp=second)
    assert answer.json() == {"outcome": "applied"}
    kb.refresh_from_db()
    assert (kb.status, kb.document_count, kb.chunk_count) == ("ready", 3, 11)
    # An observation from an earlier second is still stale.
    older = knowledge_base_body(kb.remote_id, "pending", documents=1, chunks=1)
    answer = post(client, url(), older, timestamp=second - 1)
    assert answer.json() == {"outcome": "stale"}


def test_a_polled_ready_leaves_the_chunk_count_unknown(pj: Any, kb: KnowledgeBase) -> None:
    doc = make_doc(kb, "counted.txt")
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    pj.finish(doc.remote_id, chunk_count=9)  # no webhook URL is set: only a poll learns it
    assert sync.refresh_documents([doc]) == 1
    doc.refresh_from_db()
    assert doc.remote_status == "ready"
    assert doc.chunk_count is None  # the listing carries no count; never a made-up 0
    assert "ready" in str(remote_status_badge(doc.remote_status))


def test_the_admin_shows_an_unknown_chunk_count_as_a_dash(
    pj: Any, kb: KnowledgeBase, admin_client: Client
) -> None:
    from django.urls import reverse

    doc = make_doc(kb, "dash.txt")
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    pj.finish(doc.remote_id, chunk_count=9)
    sync.refresh_documents([doc])
    page = admin_client.get(
        reverse("admin:promptjuggler_django_knowledgedocument_change", args=[doc.pk])
    )
    assert page.status_code == 200
    assert '<div class="readonly">—</div>' in page.content.decode()
    doc.refresh_from_db()
    assert doc.chunk_count is None
