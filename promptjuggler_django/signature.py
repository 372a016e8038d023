"""Sign and verify the ``PromptJuggler-Signature`` header over raw request bytes.

The header looks like ``t=<unix seconds>,v1=<hex>``; ``v1`` is HMAC-SHA256 keyed with the whole
webhook secret (UTF-8) over ``b"<t>." + body``. Verification never raises on hostile input: it
returns ``None`` for anything that is not a valid signature. Unlike the official SDKs, it works on
bytes, accepts several ``v1`` values (any may match), several secrets (rotation), spaces around
fields, fields in any order, and ignores schemes it does not know.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass

HEADER = "PromptJuggler-Signature"
#: The same header as Django exposes it in ``request.META``.
META_KEY = "HTTP_PROMPTJUGGLER_SIGNATURE"

#: Headers longer than this are refused outright (a valid one is well under 200 bytes).
MAX_HEADER_LENGTH = 4096
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True)
class VerifiedSignature:
    """What a successful verification learned."""

    timestamp: int
    #: Index of the matching secret in the list that was passed in (for rotation audits).
    secret_index: int

    def __repr__(self) -> str:
        return f"VerifiedSignature(timestamp={self.timestamp}, secret_index={self.secret_index})"


def compute(body: bytes, secret: str, timestamp: int) -> str:
    """The lowercase hex HMAC-SHA256 of ``b"<timestamp>." + body`` keyed with ``secret``."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """Return a ``PromptJuggler-Signature`` header value for ``body``."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={ts},v1={compute(body, secret, ts)}"


def parse_header(header: str) -> tuple[int, list[str]] | None:
    """Split a header into its timestamp and its ``v1`` values, or ``None`` if malformed.

    Only ASCII digits make a timestamp (``"١٢٣".isdigit()`` is true in Python, which is how the
    official SDK crashes on Unicode digits), and only 64 hex characters make a ``v1``.
    """
    if not isinstance(header, str) or len(header) > MAX_HEADER_LENGTH:
        return None
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "t":
            if not value.isascii() or not value.isdigit() or len(value) > 12:
                return None
            if timestamp is not None and int(value) != timestamp:
                return None  # two different timestamps: refuse rather than guess
            timestamp = int(value)
        elif key == "v1":
            if len(value) == 64 and value.isascii() and set(value) <= _HEX:
                signatures.append(value.lower())
        # Unknown schemes (v0, v2, …) are ignored, as the header format allows.
    if timestamp is None or not signatures:
        return None
    return timestamp, signatures


def verify(
    body: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> VerifiedSignature | None:
    """Check ``header`` against ``body`` with every secret; ``None`` unless one matches.

    The timestamp must be within ``tolerance`` seconds of ``now`` either way (inclusive edge).
    Every comparison is constant-time, and every secret is tried even after a match, so timing
    does not reveal which secret or signature matched.
    """
    if header is None or not isinstance(body, bytes | bytearray):
        return None
    parsed = parse_header(header)
    if parsed is None:
        return None
    timestamp, signatures = parsed
    current = time.time() if now is None else now
    # Written so that a NaN tolerance or clock refuses: every comparison with NaN is false.
    if not abs(current - timestamp) <= tolerance:
        return None
    matched: int | None = None
    for index, secret in enumerate(secrets):
        if not secret:
            continue
        expected = compute(bytes(body), secret, timestamp)
        for candidate in signatures:
            if hmac.compare_digest(expected, candidate) and matched is None:
                matched = index
    if matched is None:
        return None
    return VerifiedSignature(timestamp=timestamp, secret_index=matched)
