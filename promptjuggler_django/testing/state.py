"""The emulator's in-memory PromptJuggler account: knowledge bases, documents, processing.

Everything here runs under one re-entrant lock owned by :class:`Store`; callers get copies
(:class:`FakeDocument`, :class:`FakeKnowledgeBase`) so a test can never race the server by
holding a live object. Webhook events are *returned* by the state changes, never sent from
inside the lock: a receiver that calls back into the emulator must not deadlock.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: Document statuses after which PromptJuggler does no more work on a document.
TERMINAL_STATUSES = frozenset({"ready", "failed"})

#: The MIME type PromptJuggler reports for each supported extension (``mimeType`` in listings).
MIME_TYPES: dict[str, str] = {
    ".txt": "text/plain",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".md": "text/markdown",
    ".html": "text/html",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}

DOCUMENT_EVENT = "knowledgedocument.finished"
KNOWLEDGE_BASE_EVENT = "knowledgebase.finished"


def default_chunk_count(size: int) -> int:
    """Chunks a ``ready`` document gets unless a test says otherwise: about one per 1000 bytes."""
    return max(1, size // 1000)


@dataclass
class FakeDocument:
    """A document as the emulator stores it (a snapshot copy when handed to tests)."""

    id: uuid.UUID
    knowledge_base_slug: str
    file_name: str
    bytes: int
    mime_type: str
    status: str
    chunk_count: int
    sha256: str
    #: The file's bytes, kept only when small (see ``FakePromptJuggler(keep_content_bytes=…)``).
    content: builtins.bytes | None = field(default=None, repr=False)
    #: The part's Content-Type as the client declared it (``None`` when the part had none).
    declared_content_type: str | None = None
    #: The multipart field name the file came in (``files[0]``…), ``None`` for added documents.
    part_name: str | None = None
    #: ``time.time()`` when the upload was stored.
    uploaded_at: float = 0.0
    #: The knowledge base's UUID (what webhooks carry).
    knowledge_base_id: uuid.UUID | None = None

    def as_response(self) -> dict[str, Any]:
        """``KnowledgeDocumentResponse`` (upload answer and ``GET /knowledge-documents/{id}``)."""
        return {
            "id": str(self.id),
            "status": self.status,
            "fileName": self.file_name,
            "bytes": self.bytes,
            "chunkCount": self.chunk_count,
        }

    def as_summary(self) -> dict[str, Any]:
        """``KnowledgeDocumentSummary`` (inside a knowledge base; no ``chunkCount``)."""
        return {
            "id": str(self.id),
            "status": self.status,
            "fileName": self.file_name,
            "bytes": self.bytes,
            "mimeType": self.mime_type,
        }


@dataclass
class FakeKnowledgeBase:
    """A knowledge base with its derived status and counts (always a snapshot)."""

    id: uuid.UUID
    slug: str
    status: str
    document_count: int
    chunk_count: int
    #: Former slugs that still resolve (PromptJuggler keeps them after a rename).
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class WebhookEvent:
    """One webhook to deliver: the event name (for records only, it is not sent) and the body."""

    name: str
    object_id: uuid.UUID
    body: dict[str, Any]

    def encode(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode("utf-8")


@dataclass
class _KnowledgeBaseRecord:
    id: uuid.UUID
    slug: str
    aliases: list[str]
    status_override: str | None = None


@dataclass(frozen=True)
class IncomingFile:
    """A fully received file part, ready to become a document."""

    file_name: str
    size: int
    sha256: str
    content: bytes | None
    declared_content_type: str | None
    part_name: str | None


class Store:
    """Knowledge bases and documents, with PromptJuggler's derived statuses and counts."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._kbs: dict[uuid.UUID, _KnowledgeBaseRecord] = {}
        self._handles: dict[str, uuid.UUID] = {}  # slug or alias -> id
        self._documents: dict[uuid.UUID, FakeDocument] = {}  # upload order

    # -- knowledge bases ---------------------------------------------------------------------

    def create_knowledge_base(
        self, slug: str, *, id: uuid.UUID | None = None, aliases: Iterable[str] = ()
    ) -> FakeKnowledgeBase:
        handles = [slug, *aliases]
        with self.lock:
            for handle in handles:
                if not handle or "/" in handle:
                    raise ValueError(f"invalid knowledge-base slug {handle!r}")
                if handle in self._handles:
                    raise ValueError(f"knowledge base {handle!r} already exists")
            kb_id = id or uuid.uuid4()
            if kb_id in self._kbs:
                raise ValueError(f"a knowledge base with id {kb_id} already exists")
            self._kbs[kb_id] = _KnowledgeBaseRecord(kb_id, slug, list(aliases))
            for handle in handles:
                self._handles[handle] = kb_id
            return self._snapshot(self._kbs[kb_id])

    def rename_knowledge_base(self, slug: str, new_slug: str) -> FakeKnowledgeBase:
        """Give a knowledge base a new slug; the old one keeps working as an alias."""
        with self.lock:
            kb = self._require_kb(slug)
            if new_slug in self._handles and self._handles[new_slug] != kb.id:
                raise ValueError(f"knowledge base {new_slug!r} already exists")
            if kb.slug not in kb.aliases:
                kb.aliases.append(kb.slug)
            if new_slug in kb.aliases:
                kb.aliases.remove(new_slug)
            kb.slug = new_slug
            self._handles[new_slug] = kb.id
            for doc in self._docs_of(kb.id):
                doc.knowledge_base_slug = new_slug
            return self._snapshot(kb)

    def set_knowledge_base_status(self, slug_or_id: str | uuid.UUID, status: str | None) -> None:
        """Force a knowledge base's status (``None`` returns to the derived one)."""
        with self.lock:
            self._require_kb(slug_or_id).status_override = status

    def resolve(self, handle: str) -> uuid.UUID | None:
        """The id of the knowledge base a slug or alias names, or ``None``."""
        with self.lock:
            return self._handles.get(handle)

    def knowledge_base(self, slug_or_id: str | uuid.UUID) -> FakeKnowledgeBase:
        with self.lock:
            return self._snapshot(self._require_kb(slug_or_id))

    def knowledge_bases(self) -> list[FakeKnowledgeBase]:
        with self.lock:
            return [self._snapshot(kb) for kb in self._kbs.values()]

    def knowledge_base_response(self, kb_id: uuid.UUID) -> dict[str, Any]:
        """``KnowledgeBaseResponse``: every document, not paginated."""
        with self.lock:
            snap = self._snapshot(self._kbs[kb_id])
            return {
                "id": str(snap.id),
                "status": snap.status,
                "documentCount": snap.document_count,
                "chunkCount": snap.chunk_count,
                "documents": [d.as_summary() for d in self._docs_of(kb_id)],
            }

    # -- documents ---------------------------------------------------------------------------

    def add_documents(self, kb_id: uuid.UUID, files: Iterable[IncomingFile]) -> list[FakeDocument]:
        """Store an upload's files as ``pending`` documents; returns snapshot copies."""
        now = time.time()
        created: list[FakeDocument] = []
        with self.lock:
            kb = self._kbs.get(kb_id)
            if kb is None:  # deleted between routing and commit cannot happen, but be exact
                raise KeyError(kb_id)
            for incoming in files:
                ext = file_extension(incoming.file_name)
                doc = FakeDocument(
                    id=uuid.uuid4(),
                    knowledge_base_slug=kb.slug,
                    file_name=incoming.file_name,
                    bytes=incoming.size,
                    mime_type=MIME_TYPES.get(ext, "application/octet-stream"),
                    status="pending",
                    chunk_count=0,
                    sha256=incoming.sha256,
                    content=incoming.content,
                    declared_content_type=incoming.declared_content_type,
                    part_name=incoming.part_name,
                    uploaded_at=now,
                    knowledge_base_id=kb.id,
                )
                self._documents[doc.id] = doc
                created.append(dataclasses.replace(doc))
        return created

    def add_document(self, slug: str, file: IncomingFile, status: str) -> FakeDocument:
        with self.lock:
            kb = self._require_kb(slug)
            (doc,) = self.add_documents(kb.id, [file])
            live = self._documents[doc.id]
            live.part_name = None
            live.status = status
            if status == "ready":
                live.chunk_count = default_chunk_count(live.bytes)
            return dataclasses.replace(live)

    def document(self, document_id: uuid.UUID | str) -> FakeDocument | None:
        doc_id = _as_uuid(document_id)
        with self.lock:
            doc = self._documents.get(doc_id) if doc_id else None
            return dataclasses.replace(doc) if doc else None

    def documents(self, slug: str | None = None) -> list[FakeDocument]:
        with self.lock:
            if slug is None:
                docs: Iterable[FakeDocument] = self._documents.values()
            else:
                docs = self._docs_of(self._require_kb(slug).id)
            return [dataclasses.replace(d) for d in docs]

    def searchable_documents(self, slug_or_id: str | uuid.UUID) -> tuple[str, list[FakeDocument]]:
        """A knowledge base's current slug and copies of its ``ready`` documents whose bytes
        were kept, in upload order: what a knowledge-search prompt answers from. The handle
        resolves like every other (slug, former slug or id); ``KeyError`` if unknown."""
        with self.lock:
            kb = self._require_kb(slug_or_id)
            return kb.slug, [
                dataclasses.replace(d)
                for d in self._docs_of(kb.id)
                if d.status == "ready" and d.content is not None
            ]

    def delete_document(self, document_id: uuid.UUID) -> bool:
        with self.lock:
            return self._documents.pop(document_id, None) is not None

    def non_terminal_ids(self) -> list[uuid.UUID]:
        with self.lock:
            return [d.id for d in self._documents.values() if d.status not in TERMINAL_STATUSES]

    # -- processing --------------------------------------------------------------------------

    def seal(self, document_ids: Iterable[uuid.UUID] | None = None) -> list[uuid.UUID]:
        """``pending`` → ``sealed`` (no webhook exists for this step)."""
        with self.lock:
            sealed = []
            for doc in self._select(document_ids):
                if doc.status == "pending":
                    doc.status = "sealed"
                    sealed.append(doc.id)
            return sealed

    def finish(
        self,
        document_ids: Iterable[uuid.UUID] | None,
        *,
        status: str | None,
        chunk_count: int | None,
        fail_file_names: Iterable[str],
        only_unfinished: bool,
    ) -> list[WebhookEvent]:
        """Finish documents; returns the webhook events to send, documents first.

        ``only_unfinished`` skips documents already ``ready``/``failed``; with it off (a test
        naming a document), a terminal document is finished again and its event re-sent,
        which is how tests replay a stale or repeated event.
        """
        failing = set(fail_file_names)
        events: list[WebhookEvent] = []
        touched: dict[uuid.UUID, None] = {}
        with self.lock:
            for doc in self._select(document_ids):
                if only_unfinished and doc.status in TERMINAL_STATUSES:
                    continue
                final = status or ("failed" if doc.file_name in failing else "ready")
                if chunk_count is not None:
                    doc.chunk_count = chunk_count
                else:
                    doc.chunk_count = default_chunk_count(doc.bytes) if final == "ready" else 0
                doc.status = final
                events.append(
                    WebhookEvent(
                        DOCUMENT_EVENT,
                        doc.id,
                        {"id": str(doc.id), "status": final, "chunkCount": doc.chunk_count},
                    )
                )
                assert doc.knowledge_base_id is not None
                touched[doc.knowledge_base_id] = None
            for kb_id in touched:
                docs = self._docs_of(kb_id)
                if all(d.status in TERMINAL_STATUSES for d in docs):
                    snap = self._snapshot(self._kbs[kb_id])
                    body = {
                        "id": str(snap.id),
                        "status": snap.status,
                        "documentCount": snap.document_count,
                        "chunkCount": snap.chunk_count,
                    }
                    events.append(WebhookEvent(KNOWLEDGE_BASE_EVENT, snap.id, body))
        return events

    def reset(self) -> None:
        """Forget every document; knowledge bases stay (they are the account's configuration)."""
        with self.lock:
            self._documents.clear()
            for kb in self._kbs.values():
                kb.status_override = None

    # -- internals ---------------------------------------------------------------------------

    def _select(self, document_ids: Iterable[uuid.UUID] | None) -> list[FakeDocument]:
        if document_ids is None:
            return list(self._documents.values())
        selected = []
        for doc_id in document_ids:
            doc = self._documents.get(doc_id)
            if doc is not None:
                selected.append(doc)
        return selected

    def _docs_of(self, kb_id: uuid.UUID) -> list[FakeDocument]:
        return [d for d in self._documents.values() if d.knowledge_base_id == kb_id]

    def _require_kb(self, slug_or_id: str | uuid.UUID) -> _KnowledgeBaseRecord:
        kb_id: uuid.UUID | None
        if isinstance(slug_or_id, uuid.UUID):
            kb_id = slug_or_id
        else:
            kb_id = self._handles.get(slug_or_id) or _as_uuid(slug_or_id)
        kb = self._kbs.get(kb_id) if kb_id else None
        if kb is None:
            raise KeyError(f"no knowledge base {slug_or_id!r} in the emulator")
        return kb

    def _snapshot(self, kb: _KnowledgeBaseRecord) -> FakeKnowledgeBase:
        docs = self._docs_of(kb.id)
        return FakeKnowledgeBase(
            id=kb.id,
            slug=kb.slug,
            status=kb.status_override or derived_knowledge_base_status([d.status for d in docs]),
            document_count=len(docs),
            chunk_count=sum(d.chunk_count for d in docs),
            aliases=tuple(kb.aliases),
        )


def derived_knowledge_base_status(statuses: list[str]) -> str:
    """``pending`` while any document is in progress (unknown strings count as in progress);
    ``failed`` when there are documents and every one failed; otherwise ``ready`` (an empty
    knowledge base is ``ready``: there is nothing left to process)."""
    if any(s not in TERMINAL_STATUSES for s in statuses):
        return "pending"
    if statuses and all(s == "failed" for s in statuses):
        return "failed"
    return "ready"


def file_extension(file_name: str) -> str:
    dot = file_name.rfind(".")
    return file_name[dot:].lower() if dot >= 0 else ""


def _as_uuid(value: uuid.UUID | str) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
