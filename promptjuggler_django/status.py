"""Forward-only status rules shared by webhooks and polling.

PromptJuggler's document statuses move ``pending`` → ``sealed`` → ``ready`` | ``failed``. Events
arrive duplicated and out of order, so a status is applied only when it moves the row forward, or
when it is at the same rank and carries a newer observation time (e.g. a chunk count that grew).
Unknown status strings (PromptJuggler may add some) are stored, never fatal: they rank like
``sealed`` (in progress) so they can neither undo a terminal state nor be skipped for good.
"""

from __future__ import annotations

from datetime import datetime

from .models import DOCUMENT_STATUS_RANK, TERMINAL_DOCUMENT_STATUSES, KnowledgeDocument

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
