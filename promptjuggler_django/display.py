"""How a document's state is shown to people: one phase per document, and HTML badges.

A document has two independent states: the local push state (``sync_state``: has the app sent
it?) and PromptJuggler's processing status (``remote_status``: is it searchable yet?). Admins see
both; end users see one :class:`Phase` that folds them together ("Queued", "Processing",
"Ready", …). The admin, the end-user pages, the live-status endpoint and the REST API all take
their labels from here so they never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import formats, timezone
from django.utils.functional import Promise
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import capfirst
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


#: The one date format of the end-user pages (uploaded, next try), from the active locale.
DATE_FORMAT = "SHORT_DATETIME_FORMAT"

# "PromptJuggler answered 503: Service Unavailable" → keep "PromptJuggler answered 503".
_ANSWERED = re.compile(r"^(?:Gave up after \d+ attempts\. )?(PromptJuggler answered \d{3})\b")


def format_moment(moment: datetime | None) -> str:
    """``moment`` in the user's time zone: the time alone when it is today, else date and time."""
    if moment is None:
        return ""
    local = timezone.localtime(moment)
    if local.date() == timezone.localdate():
        return formats.time_format(local, "TIME_FORMAT")
    return formats.date_format(local, DATE_FORMAT)


def _reason(error: str) -> str:
    """The short, user-facing cause in ``last_error``: the API's answer, or its first sentence."""
    error = error.strip()
    match = _ANSWERED.match(error)
    if match:
        return match.group(1)
    return error.split("\n", 1)[0][:200].rstrip(". ")


def _is_later(moment: datetime | None) -> bool:
    return moment is not None and moment > timezone.now()


def status_detail(document: KnowledgeDocument) -> str:
    """Why a document waits or failed, and when the next attempt is, in the user's words.

    ``"Waiting to retry — PromptJuggler answered 503, next try at 10:42"``. Empty when the badge
    says it all (processing, ready).
    """
    phase = document_phase(document)
    reason = _reason(document.last_error) if document.last_error else ""
    if phase.key == "retrying":
        when = format_moment(document.next_attempt_at)
        if reason and when:
            text = _("%(phase)s — %(reason)s, next try at %(when)s")
        elif when:
            text = _("%(phase)s — next try at %(when)s")
        else:
            text = _("%(phase)s — %(reason)s") if reason else _("%(phase)s")
        return str(text) % {"phase": phase.label, "reason": reason, "when": when}
    if phase.key == "queued":
        # A queued row with a reason waits for its knowledge base (PromptJuggler refused it as a
        # whole) or was put back after a refused batch; the next try is shown when it is later.
        later = _is_later(document.next_attempt_at)
        when = format_moment(document.next_attempt_at) if later else ""
        if reason and when:
            text = _("Waiting to be sent — %(reason)s, next try at %(when)s")
            return str(text) % {"reason": reason, "when": when}
        if reason:
            return str(_("Waiting to be sent — %(reason)s")) % {"reason": reason}
        return str(_("Waiting to be sent to the knowledge base"))
    if phase.key == "uploading":
        return str(_("Being sent to the knowledge base"))
    if phase.key == "checking":
        return str(_("Checking whether PromptJuggler received it"))
    if phase.key == "upload_failed":
        if reason:
            return str(_("Not sent — %(reason)s")) % {"reason": reason}
        return str(_("Not sent"))
    if phase.key == "failed":
        return str(_("PromptJuggler could not process this file"))
    return ""


def phase_payload(document: KnowledgeDocument) -> dict[str, Any]:
    """The JSON shape of a document's status, shared by the live-status endpoint and the API."""
    phase = document_phase(document)
    return {
        "id": document.pk,
        "name": str(document),
        "phase": phase.key,
        "label": str(phase.label),
        "tone": phase.tone,
        "final": phase.final,
        "sync_state": document.sync_state,
        "remote_status": document.remote_status,
        "chunk_count": document.chunk_count,
        "detail": status_detail(document),
    }


#: ``(value, label)`` pairs, as a model field's ``choices`` gives them.
Choices = Iterable[tuple[Any, Any]]


def badge_label(value: str, choices: Choices | None = None) -> str:
    """The text of every badge: the model's choice label for ``value`` when it has one, else
    ``value`` verbatim with a capital first letter.

    One rule for the admin and the pages, so "Synced" never sits next to "ready". Remote statuses
    have no labels of their own (PromptJuggler's strings are kept verbatim and new ones may
    appear): ``"indexing"`` is shown as "Indexing".
    """
    for choice, label in choices or ():
        if choice == value:
            return str(label)
    return capfirst(value)


def badge(label: Any, tone: str, *, title: str = "", **data: str) -> SafeString:
    """A ``<span class="pj-badge pj-badge--TONE">`` with an optional ``title`` (the raw value a
    label stands for) and ``data-pj-*`` attributes."""
    attrs = format_html(' title="{}"', title) if title else ""
    attrs += "".join(
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
    """The admin's badge for the local push state (raw value in ``data-pj-sync-state``)."""
    state = document.sync_state
    return badge(
        badge_label(state, SyncState.choices),
        _SYNC_TONES.get(state, "neutral"),
        title=state,
        sync_state=state,
    )


def remote_status_badge(status: str, choices: Choices | None = None) -> SafeString:
    """A badge for a PromptJuggler status string: labelled by :func:`badge_label` (``choices``
    when the field has them, as ``KnowledgeBase.status`` does), the verbatim string kept in
    ``data-pj-remote-status`` and the title. Unknown statuses are shown, as still processing."""
    if not status:
        return badge("—", "neutral", remote_status="")
    return badge(
        badge_label(status, choices),
        _REMOTE_TONES.get(status, "active"),
        title=status,
        remote_status=status,
    )
