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


DOC_PAGES = sorted([*CONFIGURATION.parent.rglob("*.md"), CONFIGURATION.parent.parent / "README.md"])
CODE_BLOCK = re.compile(r"^( *)```(?:python|bash|console)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda page: page.name)
def test_environment_variables_are_read_one_way(page: Path) -> None:
    """``os.environ`` everywhere: a helper such as ``env(...)`` is undefined in a new project."""
    code = "\n".join(m.group(2) for m in CODE_BLOCK.finditer(page.read_text(encoding="utf-8")))
    assert not re.search(r"(?<![\w.])env\(", code), f"{page.name} reads a variable with env()"


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda page: page.name)
def test_no_page_installs_from_the_index(page: Path) -> None:
    """The package is not on the index: ``pip install promptjuggler-django`` would fail."""
    code = "\n".join(m.group(2) for m in CODE_BLOCK.finditer(page.read_text(encoding="utf-8")))
    by_name = re.findall(r"pip install [\"']?promptjuggler-django\b", code)
    assert by_name == [], f"{page.name} installs the package by its index name"
