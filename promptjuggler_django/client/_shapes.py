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
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
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
