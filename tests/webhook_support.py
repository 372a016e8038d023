"""Helpers shared by the webhook tests: a fixed clock, signed posts, local rows."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from promptjuggler_django import signature
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, SyncState
from promptjuggler_django.webhooks import WebhookView

PRIMARY = "whsec_test_primary"
SECONDARY = "whsec_test_secondary"
#: The fixed "now" of the webhook view in these tests (2027-01-15).
NOW = 1_800_000_000
TOLERANCE = 300

#: Every webhook URL name, with the kind of body it takes.
URL_KINDS: dict[str, str] = {
    "webhook": "document",
    "webhook-document": "document",
    "webhook-knowledge-base": "knowledge_base",
    "webhook-prompt-run": "run",
    "webhook-workflow-run": "run",
}
URL_NAMES = list(URL_KINDS)


def url(name: str = "webhook") -> str:
    return reverse(f"promptjuggler_django:{name}")


def at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> int:
    """Make the webhook view's "now" :data:`NOW`."""
    monkeypatch.setattr(WebhookView, "current_time", lambda self: float(NOW))
    return NOW


def encode(payload: Any) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


def document_body(remote_id: Any, status: str = "ready", chunks: int | None = 3) -> dict[str, Any]:
    return {"id": str(remote_id), "status": status, "chunkCount": chunks}


def knowledge_base_body(
    remote_id: Any, status: str = "ready", documents: int = 2, chunks: int = 9
) -> dict[str, Any]:
    return {
        "id": str(remote_id),
        "status": status,
        "documentCount": documents,
        "chunkCount": chunks,
    }


def run_body(run_id: Any = None, status: str = "completed") -> dict[str, Any]:
    return {"id": str(run_id or uuid.uuid4()), "status": status}


def body_for(kind: str, remote_id: Any = None) -> dict[str, Any]:
    """A well-formed body of ``kind`` (a URL_KINDS value)."""
    remote_id = remote_id or uuid.uuid4()
    return {
        "document": document_body,
        "knowledge_base": knowledge_base_body,
        "run": run_body,
    }[kind](remote_id)


def post(
    client: Client,
    target: str,
    payload: Any,
    *,
    secret: str = PRIMARY,
    timestamp: int = NOW,
    header: str | None = None,
    sign_body: bytes | None = None,
    **extra: Any,
) -> Any:
    """POST ``payload`` signed with ``secret`` at ``timestamp`` (or with a given ``header``).

    ``sign_body`` signs other bytes than those sent (a tampered body).
    """
    body = encode(payload)
    if header is None:
        header = signature.sign(body if sign_body is None else sign_body, secret, timestamp)
    return client.post(
        target,
        body,
        content_type="application/json",
        headers={signature.HEADER: header},
        **extra,
    )


class Received:
    """Collects the keyword arguments of every send of a signal."""

    def __init__(self, signal) -> None:
        self.calls: list[dict] = []
        self.signal = signal
        signal.connect(self.receive, dispatch_uid=id(self))

    def receive(self, sender, **kwargs) -> None:
        self.calls.append({"sender": sender, **kwargs})

    def close(self) -> None:
        self.signal.disconnect(dispatch_uid=id(self))


def make_knowledge_base(slug: str = "kb_test", remote_id: Any = None) -> KnowledgeBase:
    return KnowledgeBase.objects.create(slug=slug, remote_id=remote_id)


def make_documents(
    knowledge_base: KnowledgeBase, count: int, *, remote_status: str = "pending"
) -> list[KnowledgeDocument]:
    """Synced documents with remote ids, created without the app's receivers (no push)."""
    documents = [
        KnowledgeDocument(
            knowledge_base=knowledge_base,
            file=f"docs/file-{i}.txt",
            file_name=f"file-{i}.txt",
            remote_id=uuid.uuid4(),
            remote_status=remote_status,
            sync_state=SyncState.SYNCED,
        )
        for i in range(count)
    ]
    KnowledgeDocument.objects.bulk_create(documents)
    return list(
        KnowledgeDocument.objects.filter(remote_id__in=[d.remote_id for d in documents]).order_by(
            "pk"
        )
    )


def make_document(remote_status: str = "pending") -> KnowledgeDocument:
    kb = KnowledgeBase.objects.first() or make_knowledge_base()
    return make_documents(kb, 1, remote_status=remote_status)[0]
