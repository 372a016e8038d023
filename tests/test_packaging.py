"""The package metadata agrees with what the docs promise and what CI tests.

Building and installing the wheel itself is ``.ci/check_package.py`` (too slow for the suite).
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CLASSIFIER = re.compile(r"^Framework :: Django :: (\d+\.\d+)$")


def classified_django_versions() -> set[str]:
    found = (CLASSIFIER.match(c) for c in PYPROJECT["project"]["classifiers"])
    return {match.group(1) for match in found if match}


def matrix_django_versions() -> set[str]:
    """The Django half of ``MATRIX`` in noxfile.py (read, not imported: nox is a dev tool)."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "MATRIX":
            assert node.value is not None
            return {django for _python, django in ast.literal_eval(node.value)}
    raise AssertionError("noxfile.py has no MATRIX")


def test_classifiers_name_every_tested_django_version() -> None:
    assert classified_django_versions() == matrix_django_versions()


#: "Django 5.2 LTS, 6.0 or 6.1": the versions of one list that starts with "Django".
VERSION_LIST = re.compile(r"\bDjango ((?:\d+\.\d+(?: LTS)?(?:, | or | and )?)+)")


def test_every_django_version_the_docs_name_is_classified() -> None:
    for page in (ROOT / "README.md", ROOT / "docs" / "install.md"):
        text = page.read_text(encoding="utf-8")
        lists = VERSION_LIST.findall(text)
        named = {version for listed in lists for version in re.findall(r"\d+\.\d+", listed)}
        assert named, f"{page.name} names no Django version"
        assert named <= classified_django_versions(), f"{page.name} claims {sorted(named)}"


def test_docs_extra_builds_the_documentation_site() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    names = {re.split(r"[\[<>=]", requirement)[0] for requirement in extras["docs"]}
    assert {"mkdocs-material", "mkdocstrings"} <= names
    assert "promptjuggler-django[test,docs]" in extras["dev"]
