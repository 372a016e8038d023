"""The sizes every layer agrees on: what the columns hold, and so what a value may be.

The models size their columns with these; the client's reading of PromptJuggler's answers and
the webhook's reading of an event judge values by the same numbers. A count outside
``0..MAX_COUNT`` or a status longer than ``MAX_STATUS_LENGTH`` (or with a control character)
cannot be what PromptJuggler meant, and is refused as garbage instead of reaching the database.
"""

from __future__ import annotations

from typing import TypeGuard

#: The largest count stored (``PositiveIntegerField``'s portable range).
MAX_COUNT = 2**31 - 1
#: The width of every column holding one of PromptJuggler's status strings.
MAX_STATUS_LENGTH = 32
#: The width of the webhook log's object id (a UUID, or a run id as sent).
MAX_ID_LENGTH = 64


def is_count(value: object) -> TypeGuard[int]:
    """An ``int`` (not a bool) in ``0..MAX_COUNT``."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def fits(value: str, max_length: int) -> bool:
    """Printable and at most ``max_length`` long.

    Printable excludes NUL (which PostgreSQL refuses in text) and lone surrogates (which a JSON
    ``\\ud800`` escape produces and no database encoding accepts).
    """
    return len(value) <= max_length and value.isprintable()
