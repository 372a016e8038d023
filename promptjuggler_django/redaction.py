"""Keeping secrets out of text: every form in which an error message can carry one.

An exception raised by a library quotes a value the way that library prints it: httpx shows a
refused header as a bytes repr (``b'Bearer pj_live_…\\n'``), a proxy may echo a request
percent-encoded, a JSON body escapes quotes and newlines. Replacing only the verbatim secret
leaves all of those readable, so :func:`redact` replaces each form :func:`secret_forms` lists.

This module is at the bottom of the package: the client, the settings and the webhook view all
use it, and it imports nothing of the app.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["REDACTED", "has_control_character", "redact", "secret_forms"]

#: What a secret is replaced with.
REDACTED = "[redacted]"


def secret_forms(secret: str) -> list[str]:
    """The texts in which ``secret`` can appear in a message, longest first.

    Verbatim and without surrounding whitespace; escaped as Python prints a ``str`` and a
    ``bytes`` (UTF-8); percent-encoded (``quote`` with and without ``/`` kept, ``quote_plus``);
    JSON-escaped, ASCII and not.
    """
    forms: set[str] = set()
    for value in {secret, secret.strip()}:
        if not value:
            continue
        forms.update(
            (
                value,
                repr(value)[1:-1],
                repr(value.encode("utf-8"))[2:-1],
                value.encode("unicode_escape").decode("ascii"),
                quote(value, safe=""),
                quote(value),
                quote_plus(value),
                json.dumps(value)[1:-1],
                json.dumps(value, ensure_ascii=False)[1:-1],
            )
        )
    forms.discard("")
    return sorted(forms, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every form of every secret replaced by :data:`REDACTED`."""
    forms = sorted(
        {form for secret in secrets if secret for form in secret_forms(secret)},
        key=len,
        reverse=True,
    )
    for form in forms:
        text = text.replace(form, REDACTED)
    return text


def has_control_character(value: str) -> bool:
    """Whether ``value`` holds a control character (a newline, NUL, ESC, DEL, …).

    No HTTP header may carry one, and none belongs in a key or a signing secret.
    """
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value)
