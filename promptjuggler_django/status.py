"""Forward-only status rules shared by webhooks and polling.

PromptJuggler's document statuses move ``pending`` → ``sealed`` → ``ready`` | ``failed``. Events
arrive duplicated and out of order, so a status is applied only when it moves the row forward, or
when it is at the same rank and carries a newer observation time (e.g. a chunk count that grew).
Unknown status strings (PromptJuggler may add some) are stored, never fatal: they rank like
``sealed`` (in progress) so they can neither undo a terminal state nor be skipped for good.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from uuid import UUID

from django.db import transaction

from . import signals
from .models import (
    DOCUMENT_STATUS_RANK,
    TERMINAL_DOCUMENT_STATUSES,
    KnowledgeBase,
    KnowledgeDocument,
    WebhookDelivery,
)

_UNKNOWN_RANK = 1


def rank(status: str) -> int:
    """The forward order of a status; empty (never seen) ranks below everything."""
    if not status:
        return -1
    return DOCUMENT_STATUS_RANK.get(status, _UNKNOWN_RANK)


def is_terminal(status: str) -> bool:
    return status in TERMINAL_DOCUMENT_STATUSES


def document_change(
    document: KnowledgeDocument,
    status: str,
    observed_at: datetime | None,
) -> bool:
    """Whether ``status`` observed at ``observed_at`` should replace the document's status.

    - a lower rank never wins (``ready`` is never undone by a late ``pending``);
    - a terminal status is final: ``ready`` and ``failed`` never replace each other;
    - an observation older than the one already applied never wins;
    - at equal rank a newer observation may refresh counts.
    """
    current = document.remote_status
    if is_terminal(current) and status != current:
        return False
    if rank(status) < rank(current):
        return False
    last = document.status_changed_at
    if last is not None and observed_at is not None and observed_at < last:
        return False
    if status == current and observed_at is not None and last is not None and observed_at == last:
        return False  # the very same observation again
    return True


#: Outcomes of applying a remote observation (they match WebhookDelivery.Outcome values).
APPLIED = "applied"
STALE = "stale"
UNKNOWN_OBJECT = "unknown_object"


def apply_document_status(
    *,
    remote_id: UUID | str,
    status: str,
    chunk_count: int | None,
    observed_at: datetime,
    delivery: WebhookDelivery | None = None,
) -> str:
    """Move the document with ``remote_id`` forward to ``status``; return the outcome.

    Locks the row (``select_for_update``) so concurrent events for one document serialise, and
    sends :data:`~promptjuggler_django.signals.document_status_changed` after commit. Runs in the
    caller's transaction, or its own when there is none. Two queries when applied: the locked
    read and the update.
    """
    with transaction.atomic():
        document = (
            KnowledgeDocument.objects.select_for_update()
            .only("pk", "remote_id", "remote_status", "chunk_count", "status_changed_at")
            .filter(remote_id=remote_id)
            .first()
        )
        if document is None:
            return UNKNOWN_OBJECT
        if not document_change(document, status, observed_at):
            return STALE
        old_status = document.remote_status
        document.remote_status = status
        if chunk_count is not None:
            document.chunk_count = chunk_count
        document.status_changed_at = observed_at
        document.save(update_fields=["remote_status", "chunk_count", "status_changed_at"])
        if old_status != status:
            transaction.on_commit(
                partial(
                    signals.document_status_changed.send,
                    sender=KnowledgeDocument,
                    document=document,
                    old_status=old_status,
                    new_status=status,
                    delivery=delivery,
                )
            )
        return APPLIED


def apply_knowledge_base_status(
    *,
    remote_id: UUID | str,
    status: str,
    document_count: int | None,
    chunk_count: int | None,
    observed_at: datetime,
    delivery: WebhookDelivery | None = None,
) -> str:
    """Update the knowledge base with ``remote_id`` unless this observation is older; the outcome.

    Knowledge-base statuses move back and forth (a new upload makes a ready base pending again),
    so ordering is by observation time only.
    """
    with transaction.atomic():
        kb = (
            KnowledgeBase.objects.select_for_update()
            .only("pk", "remote_id", "status", "document_count", "chunk_count", "status_changed_at")
            .filter(remote_id=remote_id)
            .first()
        )
        if kb is None:
            return UNKNOWN_OBJECT
        if kb.status_changed_at is not None and observed_at <= kb.status_changed_at:
            return STALE
        old_status = kb.status
        kb.status = status
        if document_count is not None:
            kb.document_count = document_count
        if chunk_count is not None:
            kb.chunk_count = chunk_count
        kb.status_changed_at = observed_at
        kb.save(update_fields=["status", "document_count", "chunk_count", "status_changed_at"])
        transaction.on_commit(
            partial(
                signals.knowledge_base_status_changed.send,
                sender=KnowledgeBase,
                knowledge_base=kb,
                old_status=old_status,
                new_status=status,
                delivery=delivery,
            )
        )
        return APPLIED
