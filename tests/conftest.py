"""Shared fixtures for the test suite. Area-specific fixtures live beside their tests."""

from __future__ import annotations

import os

import pytest
from django.conf import settings


def _engine() -> str:
    return str(settings.DATABASES["default"]["ENGINE"])


def pytest_sessionstart(session: pytest.Session) -> None:
    """With ``PJ_REQUIRE_MARIADB`` set (CI's MariaDB step) the run must be on a MariaDB or
    MySQL server that answers: stop at once, with the reason, instead of running on SQLite
    (where the row-lock tests skip) or erroring in every test's database setup."""
    if not os.environ.get("PJ_REQUIRE_MARIADB"):
        return
    if not _engine().endswith(".mysql"):
        pytest.exit("PJ_REQUIRE_MARIADB is set but PJ_TEST_DB is not 'mariadb'", returncode=1)
    try:
        import MySQLdb
    except ImportError:
        pytest.exit(
            'PJ_REQUIRE_MARIADB is set but mysqlclient is missing: pip install -e ".[mariadb]"',
            returncode=1,
        )
    db = settings.DATABASES["default"]
    try:
        MySQLdb.connect(
            host=db["HOST"], port=int(db["PORT"]), user=db["USER"], password=db["PASSWORD"]
        ).close()
    except MySQLdb.Error as exc:
        pytest.exit(f"PJ_REQUIRE_MARIADB is set but MariaDB does not answer: {exc}", returncode=1)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("row_locks") and _engine().endswith(".sqlite3"):
        pytest.skip("SQLite serialises writers: run with PJ_TEST_DB=postgres or PJ_TEST_DB=mariadb")


@pytest.fixture
def ann(django_user_model):
    """A signed-up user (password ``pw``)."""
    return django_user_model.objects.create_user("ann", password="pw")


@pytest.fixture
def bob(django_user_model):
    """Another user (password ``pw``), to prove ``ann``'s things stay hers."""
    return django_user_model.objects.create_user("bob", password="pw")
