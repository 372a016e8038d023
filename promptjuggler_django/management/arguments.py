"""Argument types for the app's management commands: ranges checked before ``handle`` runs.

An out-of-range number used to reach ``timedelta`` or the socket layer and end in a traceback;
these ``type=`` callables refuse it while parsing, so ``call_command`` raises a
:class:`~django.core.management.CommandError` and the command line prints the usage with a
message that says what is allowed.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["bounded_float", "bounded_int", "non_empty", "pair"]


def bounded_int(low: int, high: int, unit: str = "") -> Callable[[str], int]:
    """An ``argparse`` type accepting a whole number from ``low`` to ``high`` (inclusive)."""
    suffix = f" {unit}" if unit else ""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number.") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{value} is out of range: allowed is {low} to {high}{suffix}."
            )
        return value

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


def bounded_float(
    low: float, high: float, unit: str = "", *, open_low: bool = False
) -> Callable[[str], float]:
    """An ``argparse`` type accepting a finite number in ``[low, high]`` (``(low, high]``
    with ``open_low``)."""
    suffix = f" {unit}" if unit else ""
    allowed = f"more than {low:g}" if open_low else f"{low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number.") from None
        too_low = value <= low if open_low else value < low
        if not math.isfinite(value) or too_low or value > high:
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: allowed is {allowed} to {high:g}{suffix}."
            )
        return value

    parse.__name__ = "number"
    return parse


def non_empty(hint: str) -> Callable[[str], str]:
    """An ``argparse`` type refusing an empty (or blank) string, e.g. an unset shell variable.

    ``hint`` completes the message: what to do instead.
    """

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"the value is empty; {hint}")
        return text

    parse.__name__ = "string"
    return parse


def pair(left: str, right: str) -> Callable[[str], tuple[str, str]]:
    """An ``argparse`` type for ``LEFT=RIGHT`` (e.g. ``ask=kb_docs``): both sides non-empty,
    split at the first ``=``; ``left`` and ``right`` name the sides in the message."""

    def parse(text: str) -> tuple[str, str]:
        name, equals, value = text.partition("=")
        if not equals or not name.strip() or not value.strip():
            raise argparse.ArgumentTypeError(f"{text!r} is not {left}={right}.")
        return name.strip(), value.strip()

    parse.__name__ = "pair"
    return parse
