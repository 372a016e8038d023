"""Reading PromptJuggler webhook bodies as events.

PromptJuggler sends no event name, no event field and no delivery id: an event is told apart by
its body's shape (``documentCount`` → knowledge base; ``chunkCount`` without it → document; only
``id`` and ``status`` → a prompt or workflow run), or by the URL when the user configured one URL
per event. Bodies are only read after their signature verified, so everything here is about
robustness (PromptJuggler may add fields, statuses and events), not about trust.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from .limits import MAX_ID_LENGTH, MAX_STATUS_LENGTH, fits, is_count
from .models import WebhookDelivery

EventType = WebhookDelivery.EventType
Outcome = WebhookDelivery.Outcome

DOCUMENT = "document"
KNOWLEDGE_BASE = "knowledge_base"
RUN = "run"

#: The family of each event type: what its body looks like and which rule applies it.
EVENT_FAMILIES: dict[str, str] = {
    EventType.DOCUMENT_FINISHED: DOCUMENT,
    EventType.KNOWLEDGE_BASE_FINISHED: KNOWLEDGE_BASE,
    EventType.PROMPT_RUN_FINISHED: RUN,
    EventType.WORKFLOW_RUN_FINISHED: RUN,
    EventType.RUN_FINISHED: RUN,
}

#: The event type a body of each family is logged as when told apart by shape. Prompt and
#: workflow runs have the same body, so there they are just ``run.finished``.
SHAPE_EVENT_TYPES: dict[str, str] = {
    DOCUMENT: EventType.DOCUMENT_FINISHED,
    KNOWLEDGE_BASE: EventType.KNOWLEDGE_BASE_FINISHED,
    RUN: EventType.RUN_FINISHED,
}

#: Told apart by shape, a run body must have exactly these keys: with more it could be an event
#: PromptJuggler adds later, and it is logged as unrecognised instead.
RUN_KEYS = frozenset({"id", "status"})


@dataclass(frozen=True)
class Event:
    """A recognised, well-formed event body."""

    #: A WebhookDelivery.EventType value.
    event_type: str
    #: A canonical UUID string for documents and knowledge bases; the id as sent for runs.
    object_id: str
    #: PromptJuggler's status string, verbatim (unknown values are kept).
    status: str
    #: ``None`` when absent or null: the stored count is then left alone.
    chunk_count: int | None = None
    document_count: int | None = None

    @property
    def family(self) -> str:
        return EVENT_FAMILIES[self.event_type]


class RejectedBody(Exception):
    """A verified body that cannot be applied; ``outcome`` is ``invalid`` or ``unrecognised``."""

    def __init__(self, outcome: str, detail: str, event_type: str = EventType.UNKNOWN) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        #: The event type the body was meant as (the URL's, or its shape's), else ``unknown``.
        self.event_type = event_type


def shape(data: dict[str, Any]) -> str | None:
    """The family a JSON object looks like, judged by its keys only; ``None`` for none."""
    # documentCount only appears in knowledge-base events, chunkCount in both.
    if "documentCount" in data:
        return KNOWLEDGE_BASE
    if "chunkCount" in data:
        return DOCUMENT
    if "id" in data and "status" in data:
        return RUN
    return None


def _text(value: Any, max_length: int) -> str | None:
    """``value`` if it is a non-empty string that fits its column (:func:`limits.fits`)."""
    if isinstance(value, str) and value and fits(value, max_length):
        return value
    return None


def _object_id(family: str, value: Any) -> str | None:
    if family == RUN:  # run ids are only relayed: keep them as sent
        return _text(value, MAX_ID_LENGTH)
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH:
        return None
    try:
        return str(UUID(value))
    except ValueError:
        return None


def _count(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not is_count(value):
        raise ValueError(f"{key} is not a count")
    return value


def parse_event(body: bytes, expected: str | None = None) -> Event:
    """Read a verified body as an event, or raise :class:`RejectedBody`.

    ``expected`` is the event type a per-event URL takes; ``None`` tells events apart by shape.
    On a per-event URL a body of another family is ``invalid`` (the URL says what it must be);
    on the shared URL a JSON object of no known shape is ``unrecognised``. Extra keys are
    tolerated wherever the family is known, so fields PromptJuggler adds later do no harm.
    """
    event_type = expected or EventType.UNKNOWN
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RejectedBody(Outcome.INVALID, "body is not UTF-8", event_type) from None
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
        raise RejectedBody(Outcome.INVALID, "body is not JSON", event_type) from None
    if not isinstance(data, dict):
        raise RejectedBody(Outcome.INVALID, "body is not a JSON object", event_type)

    family = shape(data)
    if expected is None:
        if family is None or (family == RUN and data.keys() != RUN_KEYS):
            raise RejectedBody(Outcome.UNRECOGNISED, "body matches no known event")
        event_type = SHAPE_EVENT_TYPES[family]
    elif family != EVENT_FAMILIES[expected]:
        found = family.replace("_", " ") if family else "unknown"
        raise RejectedBody(Outcome.INVALID, f"{found} body on the {expected} URL", event_type)

    status = _text(data.get("status"), MAX_STATUS_LENGTH)
    if status is None:
        raise RejectedBody(Outcome.INVALID, "status is not a short string", event_type)
    object_id = _object_id(family, data.get("id"))
    if object_id is None:
        raise RejectedBody(Outcome.INVALID, "id is not valid", event_type)
    try:
        chunk_count = _count(data, "chunkCount")
        document_count = _count(data, "documentCount")
    except ValueError as exc:
        raise RejectedBody(Outcome.INVALID, str(exc), event_type) from None
    return Event(event_type, object_id, status, chunk_count, document_count)


def stored_event(delivery: WebhookDelivery) -> Event:
    """The event a logged delivery holds (for deferred processing and replay).

    Raises :class:`RejectedBody` like :func:`parse_event`. A body cut short in the log is
    rebuilt from the logged columns without its counts, which then stay as they are.
    """
    event_type = delivery.event_type
    # run.finished and unknown were told apart by shape: read them the same way again.
    per_url = event_type in EVENT_FAMILIES and event_type != EventType.RUN_FINISHED
    if not delivery.body_truncated:
        return parse_event(delivery.body.encode("utf-8"), event_type if per_url else None)
    if event_type in EVENT_FAMILIES and delivery.object_id and delivery.status:
        return Event(event_type, delivery.object_id, delivery.status)
    raise RejectedBody(Outcome.INVALID, "the logged body was truncated", event_type)
