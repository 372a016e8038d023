"""How a document's state is shown to people: one phase per document, and HTML badges.

A document has two independent states: the local push state (``sync_state``: has the app sent
it?) and PromptJuggler's processing status (``remote_status``: is it searchable yet?). Admins see
both; end users see one :class:`Phase` that folds them together ("Queued", "Processing",
"Ready", …). The admin, the end-user pages, the live-status endpoint and the REST API all take
their labels from here so they never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils.functional import Promise
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from .models import KnowledgeDocument, SyncState

#: CSS modifiers of ``.pj-badge``: neutral (waiting), active (in progress), warning (will retry
#: or needs a look), success (searchable), danger (failed for good).
TONES = ("neutral", "active", "warning", "success", "danger")


@dataclass(frozen=True)
class Phase:
    """What an end user is told about a document."""

    #: A stable machine name (``queued``, ``uploading``, ``retrying``, ``checking``,
    #: ``upload_failed``, ``processing``, ``ready``, ``failed``) used by CSS, JS and the API.
    key: str
    label: str | Promise
    #: One of :data:`TONES`.
    tone: str
    #: True when nothing more will happen without someone acting: the live status stops polling.
    final: bool


_SYNC_PHASES: dict[str, Phase] = {
    SyncState.QUEUED: Phase("queued", _("Queued"), "neutral", False),
    SyncState.UPLOADING: Phase("uploading", _("Uploading"), "active", False),
    SyncState.RETRYING: Phase("retrying", _("Waiting to retry"), "warning", False),
    SyncState.NEEDS_REVIEW: Phase("checking", _("Checking"), "warning", False),
    SyncState.FAILED: Phase("upload_failed", _("Upload failed"), "danger", True),
}

# Once pushed, PromptJuggler's status decides. ``sealed`` is undocumented and new statuses may
# appear: anything that is not ready or failed is shown as still processing.
_REMOTE_PHASES: dict[str, Phase] = {
    "ready": Phase("ready", _("Ready"), "success", True),
    "failed": Phase("failed", _("Processing failed"), "danger", True),
}
_PROCESSING = Phase("processing", _("Processing"), "active", False)

_REMOTE_TONES: dict[str, str] = {
    "pending": "neutral",
    "sealed": "active",
    "ready": "success",
    "failed": "danger",
}

_SYNC_TONES: dict[str, str] = {
    SyncState.QUEUED: "neutral",
    SyncState.UPLOADING: "active",
    SyncState.SYNCED: "success",
    SyncState.RETRYING: "warning",
    SyncState.NEEDS_REVIEW: "warning",
    SyncState.FAILED: "danger",
}


def document_phase(document: KnowledgeDocument) -> Phase:
    """The single end-user phase of ``document``."""
    phase = _SYNC_PHASES.get(document.sync_state)
    if phase is not None:
        return phase
    return _REMOTE_PHASES.get(document.remote_status, _PROCESSING)


def phase_payload(document: KnowledgeDocument) -> dict[str, Any]:
    """The JSON shape of a document's status, shared by the live-status endpoint and the API."""
    phase = document_phase(document)
    return {
        "id": document.pk,
        "phase": phase.key,
        "label": str(phase.label),
        "tone": phase.tone,
        "final": phase.final,
        "sync_state": document.sync_state,
        "remote_status": document.remote_status,
        "chunk_count": document.chunk_count,
    }


def badge(label: Any, tone: str, **data: str) -> SafeString:
    """A ``<span class="pj-badge pj-badge--TONE">`` with optional ``data-pj-*`` attributes."""
    attrs = "".join(
        format_html(' data-pj-{}="{}"', name.replace("_", "-"), value)
        for name, value in data.items()
    )
    return format_html(
        '<span class="pj-badge pj-badge--{}"{}>{}</span>', tone, SafeString(attrs), label
    )


def phase_badge(document: KnowledgeDocument) -> SafeString:
    """The end-user badge, marked up for the live-status script."""
    phase = document_phase(document)
    return badge(phase.label, phase.tone, badge="status", phase=phase.key)


def sync_state_badge(document: KnowledgeDocument) -> SafeString:
    """The admin's badge for the local push state."""
    return badge(
        document.get_sync_state_display(),
        _SYNC_TONES.get(document.sync_state, "neutral"),
        sync_state=document.sync_state,
    )


def remote_status_badge(status: str) -> SafeString:
    """A badge for a PromptJuggler status string, shown verbatim (unknown values included)."""
    if not status:
        return badge("—", "neutral", remote_status="")
    return badge(status, _REMOTE_TONES.get(status, "active"), remote_status=status)
