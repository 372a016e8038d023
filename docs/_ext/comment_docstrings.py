"""A griffe extension that lets the API reference read the package's docstring conventions.

- ``#:`` comments above an attribute become its docstring. The package documents public
  attributes (settings, signals, choices) that way, as Sphinx autodoc reads them; griffe only
  reads string literals placed after an assignment, so without this they would show up bare.
- Sphinx cross-reference roles (``:class:`~pkg.Name```, ``:func:`name```) become code spans,
  and a reST literal-block marker (a line ending in ``::``) becomes a plain colon. mkdocstrings
  renders docstrings as Markdown, where both would show as raw text (the indented block after
  the marker is already a Markdown code block).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

#: ``:role:`target``` or ``:role:`~dotted.target```; the ``~`` keeps only the last component.
_ROLE = re.compile(r":(?:py:)?[a-z]+:`(~?)([^`]+)`")


#: A paragraph's last line ending in ``::`` (reST's "a literal block follows").
_LITERAL_MARKER = re.compile(r"(\S) ?::$", re.MULTILINE)


def _role_to_code(match: re.Match[str]) -> str:
    short, target = match.groups()
    title, bracket, _ = target.partition(" <")
    if bracket:  # :role:`Title <dotted.target>` shows the title
        return f"`{title}`"
    if short:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _to_markdown(text: str) -> str:
    text = _ROLE.sub(_role_to_code, text)
    return _LITERAL_MARKER.sub(r"\1:", text)


def _comment_above(obj: griffe.Object) -> tuple[str, int] | None:
    """The ``#:`` block right above ``obj``'s first line, and the line it starts on."""
    if obj.lineno is None:
        return None
    try:
        lines = obj.module.lines
    except (AttributeError, OSError):  # no source (a compiled or builtin module)
        return None
    collected: list[str] = []
    index = obj.lineno - 2  # the line above the assignment, 0-based
    while index >= 0:
        stripped = lines[index].strip()
        if not stripped.startswith("#:"):
            break
        collected.append(stripped[2:].strip())
        index -= 1
    if not collected:
        return None
    return "\n".join(reversed(collected)), index + 2


class CommentDocstrings(griffe.Extension):
    """Fill attribute docstrings from ``#:`` comments and turn Sphinx roles into code spans."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.is_attribute and obj.docstring is None:
            found = _comment_above(obj)
            if found is not None:
                text, lineno = found
                obj.docstring = griffe.Docstring(text, lineno=lineno, parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = _to_markdown(obj.docstring.value)
