"""A knowledge base's listed documents, spooled to disk while the listing is compared.

Refresh and reconcile compare every listed document with the rows. Holding a million listed
documents as objects would cost about a gigabyte, so the listing goes, as it arrives, into a
private temporary SQLite database on disk (Python's own ``sqlite3``, whatever database the
project uses; the file is deleted when the listing is closed) and is read back in chunks:
by id for the rows of a chunk, by file name for adoption, in listing order for orphans.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from uuid import UUID

from ..client import RemoteDocument

#: Documents per write to the spool and per read from it.
CHUNK = 1000
#: Parameters per ``IN (…)``: below SQLite's smallest limit (999).
_IN_LIMIT = 900

#: Every statement is built from these constants and ``?`` marks; values are always bound.
_COLUMNS = "id, status, file_name, bytes, chunk_count, mime_type"


class Listing:
    """The documents of one listing: ``add`` while it arrives, then look them up.

    A :class:`~promptjuggler_django.client.DocumentSink` for
    :meth:`~promptjuggler_django.client.PromptJugglerClient.list_knowledge_base`. A document
    listed twice is kept once (the later entry), as a dict by id would.
    """

    def __init__(self) -> None:
        # An empty name: a temporary database on disk, private to this connection and
        # deleted when it closes. Only its page cache (2 MB by default) is in memory.
        self._db = sqlite3.connect("")
        self._db.execute(
            "CREATE TABLE doc (seq INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, status TEXT,"
            " file_name TEXT, bytes INTEGER, chunk_count INTEGER, mime_type TEXT)"
        )
        self._db.execute("CREATE INDEX doc_name ON doc (file_name)")
        self._pending: list[tuple[object, ...]] = []

    # -- filling -----------------------------------------------------------------------------

    def add(self, document: RemoteDocument) -> None:
        d = document
        self._pending.append(
            (d.id.bytes, d.status, d.file_name, d.bytes, d.chunk_count, d.mime_type)
        )
        if len(self._pending) >= CHUNK:
            self._flush()

    def clear(self) -> None:
        self._pending = []
        self._db.execute("DELETE FROM doc")

    def _flush(self) -> None:
        if self._pending:
            self._db.executemany(
                f"INSERT OR REPLACE INTO doc ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: S608
                self._pending,
            )
            self._pending = []

    # -- reading -----------------------------------------------------------------------------

    def __len__(self) -> int:
        self._flush()
        (count,) = self._db.execute("SELECT COUNT(*) FROM doc").fetchone()
        return int(count)

    def by_id(self, ids: Iterable[UUID | None]) -> dict[UUID, RemoteDocument]:
        """The listed documents among ``ids`` (ids not listed are absent)."""
        self._flush()
        wanted = [i.bytes for i in ids if i is not None]
        found: dict[UUID, RemoteDocument] = {}
        for start in range(0, len(wanted), _IN_LIMIT):
            part = wanted[start : start + _IN_LIMIT]
            marks = ",".join("?" * len(part))
            query = f"SELECT {_COLUMNS} FROM doc WHERE id IN ({marks})"  # noqa: S608
            for row in self._db.execute(query, part):
                document = _document(row)
                found[document.id] = document
        return found

    def named(self, names: Iterable[str]) -> list[RemoteDocument]:
        """The listed documents with one of these file names, in listing order."""
        self._flush()
        wanted = sorted(set(names))
        rows: list[tuple[int, RemoteDocument]] = []
        for start in range(0, len(wanted), _IN_LIMIT):
            part = wanted[start : start + _IN_LIMIT]
            marks = ",".join("?" * len(part))
            query = f"SELECT seq, {_COLUMNS} FROM doc WHERE file_name IN ({marks})"  # noqa: S608
            rows.extend((row[0], _document(row[1:])) for row in self._db.execute(query, part))
        return [document for _, document in sorted(rows, key=lambda r: r[0])]

    def chunks(self, size: int = CHUNK) -> Iterator[list[RemoteDocument]]:
        """Every listed document, in listing order, ``size`` at a time."""
        self._flush()
        last = 0
        while True:
            rows = self._db.execute(
                f"SELECT seq, {_COLUMNS} FROM doc WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
                (last, size),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [_document(row[1:]) for row in rows]

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Listing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _document(row: Sequence[object]) -> RemoteDocument:
    raw_id, status, file_name, size, chunk_count, mime_type = row
    assert isinstance(raw_id, bytes)
    return RemoteDocument(
        id=UUID(bytes=raw_id),
        status=str(status),
        file_name=str(file_name),
        bytes=size if isinstance(size, int) else None,
        chunk_count=chunk_count if isinstance(chunk_count, int) else None,
        mime_type=mime_type if isinstance(mime_type, str) else None,
    )
