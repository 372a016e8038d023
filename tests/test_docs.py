"""The configuration reference documents every setting, with the default the code uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from promptjuggler_django.conf import SETTINGS

CONFIGURATION = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
HEADING = re.compile(r"^### `([A-Z0-9_]+)`\s*$", re.MULTILINE)
DEFAULT = re.compile(r"^\*\*Default:\*\* `([^`]*)`", re.MULTILINE)


def documented_sections() -> dict[str, str]:
    """Each ``### `KEY` `` section of the page, keyed by setting name."""
    text = CONFIGURATION.read_text(encoding="utf-8")
    headings = list(HEADING.finditer(text))
    sections: dict[str, str] = {}
    for heading, following in zip(headings, [*headings[1:], None], strict=True):
        end = following.start() if following else len(text)
        section = text[heading.end() : end]
        section = section.split("\n## ", 1)[0]  # stop at the next group heading
        assert heading.group(1) not in sections, f"{heading.group(1)} is documented twice"
        sections[heading.group(1)] = section
    return sections


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_every_setting_is_documented_with_its_default(key: str) -> None:
    sections = documented_sections()
    assert key in sections, f"docs/configuration.md has no '### `{key}`' section"
    defaults = DEFAULT.findall(sections[key])
    assert defaults == [repr(SETTINGS[key].default)], (
        f"docs/configuration.md gives {key} the default {defaults}, "
        f"the code uses {SETTINGS[key].default!r}"
    )


def test_no_documented_setting_is_unknown() -> None:
    unknown = sorted(set(documented_sections()) - set(SETTINGS))
    assert unknown == [], (
        f"docs/configuration.md documents settings the app does not have: {unknown}"
    )
