"""A knowledge base's document listing, parsed as it arrives.

``GET /knowledge-bases/<slug>`` answers one JSON object holding every document of the knowledge
base (the API does not paginate), some 200 bytes each: a knowledge base of a million documents
answers about 200 MB. :func:`parse_listing` reads such a body incrementally with ijson and hands
each document to a :class:`DocumentSink` as soon as it is complete, so memory stays flat
whatever the size. The rules of each document are those of
:func:`~promptjuggler_django.client._shapes.parse_document`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import ijson

from ._shapes import (
    RemoteDocument,
    RemoteKnowledgeBase,
    ShapeError,
    knowledge_base_from,
    parse_document,
)


class DocumentSink(Protocol):
    """Where :meth:`~promptjuggler_django.client.PromptJugglerClient.list_knowledge_base` puts
    the listed documents.

    ``clear()`` is called before each attempt: a listing cut off by a failed connection is read
    again from the start, and what the broken one delivered must not count twice.
    """

    def add(self, document: RemoteDocument) -> None: ...

    def clear(self) -> None: ...


_ITEM = "documents.item"
_SCALARS = frozenset({"null", "boolean", "integer", "double", "number", "string"})
#: The knowledge base's own fields read from the top level of the body.
_FIELDS = frozenset({"id", "status", "documentCount", "chunkCount"})


class _Reader:
    """A file-like ``read()`` over an iterator of byte chunks (what ijson consumes)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)

    def read(self, size: int = -1) -> bytes:
        # ijson asks for a buffer's worth and accepts less; b"" means the end. It first reads
        # 0 bytes to learn whether the stream gives bytes or text: that must consume nothing.
        if size == 0:
            return b""
        return next((chunk for chunk in self._chunks if chunk), b"")


def parse_listing(chunks: Iterable[bytes], sink: DocumentSink) -> RemoteKnowledgeBase:
    """Parse a ``KnowledgeBaseResponse`` from ``chunks``, each document into ``sink``.

    Returns the knowledge base without its documents (``documents`` is empty; its
    ``document_count`` falls back to how many were listed). Raises :class:`ShapeError` for a
    body that is not JSON or not of the documented shape, as the whole-body parser does.
    """
    top: dict[str, Any] = {}
    listed = 0
    try:
        events = ijson.parse(_Reader(chunks), use_float=True)
        first = next(events, None)
        if first is None or first[:2] != ("", "start_map"):
            raise ShapeError("a knowledge base must be a JSON object")
        builder: Any = None
        for prefix, event, value in events:
            if builder is not None:
                builder.event(event, value)
                if prefix == _ITEM and event == "end_map":
                    sink.add(parse_document(builder.value))
                    listed += 1
                    builder = None
            elif prefix == _ITEM:
                if event != "start_map":  # a number, a string, a list where a document goes
                    raise ShapeError("a document must be a JSON object")
                builder = ijson.ObjectBuilder()
                builder.event(event, value)
            elif prefix == "documents" and event not in ("start_array", "end_array", "null"):
                raise ShapeError("documents must be a JSON array")
            elif prefix in _FIELDS and event in _SCALARS:
                top[prefix] = value
    except ijson.JSONError:
        raise ShapeError("the body is not JSON") from None
    return knowledge_base_from(top, listed)
