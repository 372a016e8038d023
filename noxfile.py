"""The version matrix and the checks, one nox session each.

``nox -l`` lists them. ``nox -s tests`` runs the whole matrix (Python 3.11 with Django 5.2,
Python 3.13 with Django 6.0 and 6.1, each on SQLite, PostgreSQL and MariaDB); ``nox -t checks``
runs lint, mypy and the documentation build. A missing interpreter fails the run instead of
skipping it. The Django 6 cells also install the ``celery`` extra (django-tasks-celery), for the
Celery scale-out test; it needs RabbitMQ at 127.0.0.1:5672 and runs on PostgreSQL.

PostgreSQL sessions expect a server at 127.0.0.1:5432 that trusts the ``postgres`` user, MariaDB
sessions one at 127.0.0.1:3306 with a passwordless ``root`` (and ``pkg-config`` and
``libmariadb-dev`` installed, to build ``mysqlclient``); each session uses its own test
database, so sessions may run side by side.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import nox

nox.options.error_on_missing_interpreters = True
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "mypy", "docs"]

#: (Python, Django) pairs. Django 6 needs Python 3.12 or later and ships ``django.tasks``.
MATRIX: list[tuple[str, str]] = [("3.11", "5.2"), ("3.13", "6.0"), ("3.13", "6.1")]
DATABASES = ("sqlite", "postgres", "mariadb")

#: The interpreter the single-version sessions (lint, mypy, docs) use.
TOOLS_PYTHON = "3.11"


def _expose_pyenv_interpreters() -> None:
    """Let ``python3.X`` resolve for every matrix Python that pyenv has installed.

    pyenv's shims only run the versions that ``PYENV_VERSION`` selects (and a shim that started
    nox sets it to its own version); the others exist but answer "command not found", which nox
    would report as a broken interpreter rather than use. Versions already selected stay first.
    """
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    if not (root / "versions").is_dir():
        return
    installed = sorted(
        (p.name for p in (root / "versions").iterdir() if re.fullmatch(r"\d+\.\d+\.\d+", p.name)),
        key=lambda v: tuple(int(n) for n in v.split(".")),
    )
    selected = [v for v in os.environ.get("PYENV_VERSION", "").split(":") if v]
    for minor in sorted({python for python, _ in MATRIX} | {TOOLS_PYTHON}):
        if any(v == minor or v.startswith(f"{minor}.") for v in selected):
            continue
        candidates = [v for v in installed if v.startswith(f"{minor}.")]
        if candidates:
            selected.append(candidates[-1])
    if selected:
        os.environ["PYENV_VERSION"] = ":".join(selected)


_expose_pyenv_interpreters()


def _extra(name: str) -> list[str]:
    """The requirements of one of the package's extras, as pyproject.toml lists them."""
    pyproject = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))
    return list(pyproject["project"]["optional-dependencies"][name])


def _test_params() -> list[nox.param]:
    return [
        nox.param(python, django, db, id=f"py{python}-django{django}-{db}")
        for python, django in MATRIX
        for db in DATABASES
    ]


@nox.session(tags=["tests"])
@nox.parametrize(("python", "django", "db"), _test_params())
def tests(session: nox.Session, django: str, db: str) -> None:
    """The test suite on one Python, Django and database combination."""
    extras = "test,mariadb" if db == "mariadb" else "test"
    session.install("-e", f".[{extras}]", f"django=={django}.*")
    if django != "5.2":  # django-tasks-celery needs Django 6 (and Python 3.12+)
        session.install(*_extra("celery"), f"django=={django}.*")
    env = {"PJ_TEST_DB": db}
    # One test database per session, so sessions never drop each other's database.
    test_name = f"test_pj_py{session.python}_dj{django}".replace(".", "")
    if db == "postgres":
        env["PJ_PG_TEST_NAME"] = test_name
    elif db == "mariadb":
        env["PJ_MARIADB_TEST_NAME"] = test_name
    session.run("python", "-m", "django", "--version")
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", *session.posargs, env=env)


@nox.session(python=TOOLS_PYTHON, tags=["checks"])
def lint(session: nox.Session) -> None:
    """Ruff lint and format check over the whole repository."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=TOOLS_PYTHON, tags=["checks"])
def mypy(session: nox.Session) -> None:
    """mypy in strict mode, with the Django and DRF plugins, over the package."""
    session.install("-e", ".[dev]", "django==5.2.*")
    # No incremental cache: with the Django plugin a stale cache can report errors that a
    # clean run does not (and hide ones it does); a clean run takes seconds.
    session.run("mypy", "--no-incremental", "promptjuggler_django", *session.posargs)


@nox.session(python=TOOLS_PYTHON, tags=["checks"])
def docs(session: nox.Session) -> None:
    """Build the documentation site; any warning (a broken link, a missing page) fails."""
    # The API reference is read from the source (griffe), so the package need not be installed:
    # only the requirements of its `docs` extra.
    session.install(*_extra("docs"))
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        f"{session.create_tmp()}/site",
        env={"NO_MKDOCS_2_WARNING": "1"},
    )
