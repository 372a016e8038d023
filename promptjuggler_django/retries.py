"""When to try again: the backoff shared by every engine that retries remote work.

Pushes, remote deletions and run sends that failed in a way that is safe to repeat wait
``backoff_delay(attempts)`` seconds before the next attempt: exponential from ``PUSH_BACKOFF``,
capped at ``PUSH_BACKOFF_MAX``, jittered so that workers spread apart, and never shorter than
the server's ``Retry-After``.
"""

from __future__ import annotations

import random

from .conf import pj_settings


def backoff_delay(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before attempt ``attempts + 1``: exponential, capped, jittered, ≥ Retry-After."""
    ceiling = min(
        pj_settings.PUSH_BACKOFF_MAX, pj_settings.PUSH_BACKOFF * 2 ** max(0, attempts - 1)
    )
    # Equal jitter: spread workers apart without ever retrying at once.
    delay = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
