"""Every change of a row's state, one named function each: the only writers of the state fields.

A document's local push state (``sync_state``) and its mirror of PromptJuggler's status
(``remote_status``, ``chunk_count``, ``status_changed_at``) are written only through the functions
here; so is a knowledge base's mirrored ``status``. Each returns the field values of its change as
a dict, so the one definition serves both ways the engines write: ``QuerySet.update(**values)``
for set-based steps (claims, reconcile) and :func:`assign` on instances that are then saved in a
batch (the store step, the save receivers). A test keeps the rest of the package from assigning
those fields. The diagram in ``docs/sync.md`` names these functions::

    queue_for_push ──► queued ──claim──► uploading ──mark_synced──► synced
                         ▲                   │ schedule_retry ──► retrying ──(due)──► claim
                         │                   │ mark_failed ──► failed
                         │                   │ mark_needs_review ──► needs_review
                         └──── requeue ◄─────┘ (a refused batch, reconcile found no copy)
                         └──── hold ◄────────┘ (the knowledge base is blocked: no attempt spent)

    knowledge base ──block_knowledge_base──► blocked ──unblock_knowledge_base──► (not blocked)

    synced ──apply_remote_status──► remote_status pending → sealed → ready | failed (forward only)

Which change applies (the forward-only rules, lease tokens, file versions) is decided by the
callers; this module only says what each change writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models

from .client import RemoteDocument
from .limits import MAX_STATUS_LENGTH
from .models import KnowledgeBase, KnowledgeDocument, SyncState

#: The longest error text kept on a row.
ERROR_LENGTH = 2000

#: The column length of ``remote_status`` and ``KnowledgeBase.status``.
STATUS_LENGTH = MAX_STATUS_LENGTH

Values = dict[str, Any]


def assign(instance: models.Model, values: Values) -> list[str]:
    """Set ``values`` on ``instance``; the field names, for ``save(update_fields=…)``."""
    for name, value in values.items():
        setattr(instance, name, value)
    return list(values)


def _error(text: str) -> str:
    return text[:ERROR_LENGTH]


# -- the local push state --------------------------------------------------------------------


def queue_for_push(now: datetime, *, error: str = "") -> Values:
    """Queue a document to be pushed from scratch: its remote copy is gone or being replaced.

    Resets everything a push learned (the remote id and status, the attempts). Used when a file
    is replaced or moved, when a document is pushed again, and when PromptJuggler no longer has
    it. The caller tombstones the old remote copy first.
    """
    return {
        "sync_state": SyncState.QUEUED,
        "attempts": 0,
        "last_error": _error(error),
        "next_attempt_at": None,
        "remote_id": None,
        "remote_status": "",
        "chunk_count": None,
        "status_changed_at": None,
        "pushed_at": None,
        "updated_at": now,
    }


def requeue(now: datetime, *, error: str = "") -> Values:
    """Put a document without a remote copy back in the queue, keeping its attempt count.

    A batch refused as a whole for another file's sake, or an unknown upload outcome for which
    reconcile found no remote copy.
    """
    return {
        "sync_state": SyncState.QUEUED,
        "last_error": _error(error),
        "next_attempt_at": None,
        "updated_at": now,
    }


def hold(until: datetime, error: str, now: datetime) -> Values:
    """Keep a document queued until ``until``: its knowledge base is blocked, not the file.

    The caller gives the attempt back: a refusal of the whole knowledge base (a bad key, an
    unknown slug) says nothing about this document.
    """
    return {
        "sync_state": SyncState.QUEUED,
        "last_error": _error(error),
        "next_attempt_at": until,
        "updated_at": now,
    }


def claim(token: datetime, now: datetime) -> Values:
    """Lease a due document for one upload until ``token`` (the lease's end and its identity).

    The caller counts the attempt (``attempts + 1``) in the same update.
    """
    return {"sync_state": SyncState.UPLOADING, "next_attempt_at": token, "updated_at": now}


def mark_synced(remote: RemoteDocument, now: datetime) -> Values:
    """Store the remote copy PromptJuggler created (the upload answer, or one found by reconcile).

    No observation time: the upload answer is the weakest news there is, so any webhook (even
    one logged before this answer was stored) or poll may move the status forward.
    """
    return {
        "sync_state": SyncState.SYNCED,
        "last_error": "",
        "next_attempt_at": None,
        "remote_id": remote.id,
        "remote_status": remote.status[:STATUS_LENGTH],
        "chunk_count": remote.chunk_count,
        "status_changed_at": None,
        "pushed_at": now,
        "updated_at": now,
    }


def schedule_retry(error: str, when: datetime, now: datetime) -> Values:
    """Wait until ``when`` before the next attempt (a 429, a 5xx, a request not sent)."""
    return {
        "sync_state": SyncState.RETRYING,
        "last_error": _error(error),
        "next_attempt_at": when,
        "updated_at": now,
    }


def mark_failed(error: str, now: datetime) -> Values:
    """Give up on a document: PromptJuggler refused the file, or the attempts ran out."""
    return {
        "sync_state": SyncState.FAILED,
        "last_error": _error(error),
        "next_attempt_at": None,
        "updated_at": now,
    }


def mark_needs_review(error: str, now: datetime) -> Values:
    """The upload's outcome is unknown (a timeout after sending, an expired lease).

    Reconcile resolves it: it adopts the matching remote copy or queues the document again.
    """
    return {
        "sync_state": SyncState.NEEDS_REVIEW,
        "last_error": _error(error),
        "next_attempt_at": None,
        "updated_at": now,
    }


# -- mirrors of PromptJuggler's statuses -----------------------------------------------------


def apply_remote_status(
    document: KnowledgeDocument, status: str, chunk_count: int | None, observed_at: datetime
) -> Values:
    """Move the mirrored status forward (the rules in :mod:`promptjuggler_django.status` decided).

    A ``chunk_count`` of ``None`` (a poll: listings carry no count) keeps the known count; a
    status change without a count leaves the count unknown rather than claiming a stale one.
    """
    if chunk_count is None and status == document.remote_status:
        chunk_count = document.chunk_count  # the same status again, without a count
    return {
        "remote_status": status[:STATUS_LENGTH],
        "chunk_count": chunk_count,
        "status_changed_at": observed_at,
    }


def apply_knowledge_base_status(
    knowledge_base: KnowledgeBase,
    status: str,
    document_count: int | None,
    chunk_count: int | None,
    observed_at: datetime,
) -> Values:
    """Store a knowledge base's status and counts as observed at ``observed_at``."""
    return {
        "status": status[:STATUS_LENGTH],
        "document_count": (
            knowledge_base.document_count if document_count is None else document_count
        ),
        "chunk_count": knowledge_base.chunk_count if chunk_count is None else chunk_count,
        "status_changed_at": observed_at,
    }


# -- a knowledge base refused as a whole -----------------------------------------------------


def block_knowledge_base(reason: str, attempts: int, until: datetime, now: datetime) -> Values:
    """PromptJuggler refuses the knowledge base as a whole; try again at ``until``.

    ``attempts`` counts the refusals in a row (the backoff grows with them); ``blocked_at``
    keeps the first one's time, so the caller passes it on while the block lasts.
    """
    return {
        "blocked_reason": _error(reason),
        "blocked_attempts": attempts,
        "blocked_until": until,
        "blocked_at": now,
    }


def unblock_knowledge_base() -> Values:
    """PromptJuggler accepted the knowledge base again (an upload or a ``GET`` succeeded)."""
    return {
        "blocked_reason": "",
        "blocked_attempts": 0,
        "blocked_until": None,
        "blocked_at": None,
    }
