"""PromptJuggler's JSON shapes, read leniently (import the classes from ``client``).

The API documents few guarantees and may grow: unknown keys are ignored, unknown status strings
are kept verbatim, missing counts get neutral defaults. What the app cannot work without (an
object where one is expected, a valid ``id``) and what cannot be meant (a negative or impossibly
large count, a status too long for one or with a control character: the rules of
:mod:`promptjuggler_django.limits`, which webhooks follow too) raise :class:`ShapeError`, which
the client reports as :class:`~promptjuggler_django.client.InvalidResponse`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any
from uuid import UUID

from ..limits import MAX_STATUS_LENGTH, fits, is_count


class ShapeError(ValueError):
    """A JSON body does not have the documented shape."""


@dataclass(frozen=True)
class RemoteDocument:
    """A document as PromptJuggler reports it (``KnowledgeDocumentResponse`` or ``…Summary``).

    ``status`` is kept verbatim, unknown values included. ``chunk_count`` is None in a knowledge
    base's document list (the summary has none); ``mime_type`` is None outside of it.
    """

    id: UUID
    status: str
    file_name: str
    bytes: int | None = None
    chunk_count: int | None = None
    mime_type: str | None = None


@dataclass(frozen=True)
class RemoteKnowledgeBase:
    """A knowledge base with all its documents (the API does not paginate them)."""

    id: UUID
    status: str
    document_count: int
    chunk_count: int
    documents: tuple[RemoteDocument, ...] = ()


@dataclass(frozen=True)
class RunCreated:
    """The answer to a create-run POST: the run's id and the thread it belongs to.

    ``thread`` is ``None`` only if PromptJuggler left it out (it documents it as always there).
    """

    id: UUID
    thread: UUID | None = None


@dataclass(frozen=True)
class RemoteRun:
    """A prompt run (``PromptRun``) or a workflow run (``WorkflowRun``) as PromptJuggler reports it.

    ``status`` is kept verbatim (``pending``/``completed``/``failed`` today). Prompt runs fill
    ``output``, ``emitted`` and ``transcript``; workflow runs fill ``outputs`` (node name → text,
    partial until completed) and ``errors`` (non-empty does not mean failed: read ``status``).
    ``error`` is the latest failed attempt's message, kept even when a retry recovered.
    ``token_usage`` keeps the integer counts by their API names (``input``, ``inputCached``,
    ``output``, ``reasoning``, ``total``…); ``cost`` is the total in the account's currency, with
    the whole breakdown in ``cost_breakdown``; both are ``None`` while pending. Mappings are
    read-only.
    """

    id: UUID
    status: str
    created_at: datetime | None = None
    finished_at: datetime | None = None
    output: str | None = None
    emitted: tuple[Any, ...] = ()
    transcript: tuple[Any, ...] = ()
    outputs: Mapping[str, str | None] = field(default_factory=lambda: _EMPTY)
    errors: tuple[str, ...] = ()
    error: str | None = None
    token_usage: Mapping[str, int] | None = None
    cost: float | None = None
    cost_breakdown: Mapping[str, Any] | None = None
    service_tier: str | None = None


_EMPTY: Mapping[str, Any] = MappingProxyType({})


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise ShapeError("the body is not JSON") from None


def parse_document(data: Any) -> RemoteDocument:
    """``KnowledgeDocumentResponse`` (has ``chunkCount``) or ``…Summary`` (has ``mimeType``)."""
    if not isinstance(data, dict):
        raise ShapeError("a document must be a JSON object")
    mime = data.get("mimeType")
    return RemoteDocument(
        id=_uuid(data.get("id")),
        status=_status(data.get("status")),
        file_name=_text(data.get("fileName")),
        bytes=_int(data.get("bytes")),
        chunk_count=_count(data, "chunkCount"),
        mime_type=mime if isinstance(mime, str) else None,
    )


def parse_documents(data: Any) -> list[RemoteDocument]:
    """The upload answer: a JSON array with one document per uploaded file."""
    if not isinstance(data, list):
        raise ShapeError("an upload answer must be a JSON array")
    return [parse_document(item) for item in data]


def parse_knowledge_base(data: Any) -> RemoteKnowledgeBase:
    """``KnowledgeBaseResponse``; it carries no slug, so the caller keeps the one it asked for."""
    if not isinstance(data, dict):
        raise ShapeError("a knowledge base must be a JSON object")
    raw_docs = data.get("documents") or []
    if not isinstance(raw_docs, list):
        raise ShapeError("documents must be a JSON array")
    docs = tuple(parse_document(d) for d in raw_docs)
    return knowledge_base_from(data, len(docs), docs)


def knowledge_base_from(
    data: dict[str, Any], listed: int, documents: tuple[RemoteDocument, ...] = ()
) -> RemoteKnowledgeBase:
    """The knowledge base's own fields of ``data``; ``listed`` documents came with it."""
    document_count = _count(data, "documentCount")
    return RemoteKnowledgeBase(
        id=_uuid(data.get("id")),
        status=_status(data.get("status")),
        document_count=listed if document_count is None else document_count,
        chunk_count=_count(data, "chunkCount") or 0,
        documents=documents,
    )


def parse_run_created(data: Any) -> RunCreated:
    """``{"id": uuid, "thread": uuid}``; a missing or malformed thread is kept as ``None``."""
    if not isinstance(data, dict):
        raise ShapeError("a create-run answer must be a JSON object")
    thread = data.get("thread")
    return RunCreated(id=_uuid(data.get("id")), thread=_optional_uuid(thread))


def parse_run(data: Any) -> RemoteRun:
    """``PromptRun`` or ``WorkflowRun``: only ``id`` and ``status`` are required; every other
    field of an unexpected type reads as absent rather than failing the whole answer."""
    if not isinstance(data, dict):
        raise ShapeError("a run must be a JSON object")
    output = data.get("output")
    error = data.get("error")
    raw_outputs = data.get("outputs")
    outputs = (
        {
            str(k): v if isinstance(v, str) else None if v is None else json.dumps(v)
            for k, v in raw_outputs.items()
        }
        if isinstance(raw_outputs, dict)
        else {}
    )
    errors = data.get("errors")
    usage = data.get("tokenUsage")
    tier = usage.get("serviceTier") if isinstance(usage, dict) else None
    cost = data.get("cost")
    return RemoteRun(
        id=_uuid(data.get("id")),
        status=_status(data.get("status")),
        created_at=_datetime(data.get("createdAt")),
        finished_at=_datetime(data.get("finishedAt")),
        output=output if isinstance(output, str) else None,
        emitted=_items(data.get("emitted")),
        transcript=_items(data.get("transcript")),
        outputs=MappingProxyType(outputs),
        errors=tuple(e if isinstance(e, str) else json.dumps(e) for e in errors)
        if isinstance(errors, list)
        else (),
        error=error if isinstance(error, str) else None,
        token_usage=MappingProxyType({k: v for k, v in usage.items() if is_count(v)})
        if isinstance(usage, dict)
        else None,
        cost=_amount(cost.get("total")) if isinstance(cost, dict) else None,
        cost_breakdown=MappingProxyType(cost) if isinstance(cost, dict) else None,
        service_tier=tier if isinstance(tier, str) else None,
    )


def error_message(text: str) -> str:
    """The API's ``{"error": ...}`` message, else the raw body (callers cap it)."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error"):
        error = data["error"]
        return error if isinstance(error, str) else json.dumps(error)
    return text.strip()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _uuid(value: Any) -> UUID:
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            pass
    raise ShapeError(f"invalid or missing id {value!r}")


def _optional_uuid(value: Any) -> UUID | None:
    try:
        return _uuid(value)
    except ShapeError:
        return None


def _datetime(value: Any) -> datetime | None:
    """An ISO 8601 timestamp (``Z`` or an offset; a naive one is read as UTC), else ``None``."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _items(value: Any) -> tuple[Any, ...]:
    """A list of JSON objects (transcript items, emitted payloads); other entries are dropped."""
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, dict))


def _amount(value: Any) -> float | None:
    """A cost: a finite, non-negative number, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    amount = float(value)
    return amount if math.isfinite(amount) and amount >= 0 else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def _status(value: Any) -> str:
    """A status string, kept verbatim when unknown; one that cannot be a status raises."""
    text = _text(value)
    if not fits(text, MAX_STATUS_LENGTH):
        raise ShapeError(
            f"status {text[:40]!r} is not a status (over {MAX_STATUS_LENGTH} characters "
            "or with a control character)"
        )
    return text


def _count(data: dict[str, Any], key: str) -> int | None:
    """A count, ``None`` when absent or not an integer; a negative or huge one raises."""
    value = _int(data.get(key))
    if value is not None and not is_count(value):
        raise ShapeError(f"{key} {value} is not a count")
    return value


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
