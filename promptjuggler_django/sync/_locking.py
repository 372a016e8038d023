"""Row locks that hold the same rows on PostgreSQL, MariaDB/MySQL and SQLite.

Workers share the outboxes (due documents, tombstones) by locking the rows they take, and
pass over rows another worker holds (``SKIP LOCKED``), so several of them drain one backlog
side by side. What a locking read holds differs between databases:

- **PostgreSQL** locks the rows a ``SELECT … ORDER BY … LIMIT n FOR UPDATE SKIP LOCKED``
  returns, and no others.
- **InnoDB** (MariaDB, MySQL) locks every row the read *examines*. When the optimizer answers
  the ``ORDER BY`` with a sort instead of an index in that order (its choice when only a few
  rows are due in a large table), it reads, and so locks, every due row before it keeps the
  first ``n``: one worker then holds the whole backlog and the others find nothing to do.
  There :func:`first_unlocked` reads the candidates' keys without locks first and then locks
  those rows by primary key, which examines only them.
- **SQLite** has no row locks: writers are serialised, and the conditional update that follows
  every read decides which worker got a row.
"""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.db.models import QuerySet, prefetch_related_objects


def locked_rows(qs: QuerySet[Any], using: str, *, skip_locked: bool) -> QuerySet[Any]:
    """``qs`` locked for the current transaction where the database has row locks.

    With ``skip_locked``, rows another transaction holds are left out where the database can
    (PostgreSQL 9.5+, MariaDB 10.6+, MySQL 8.0+). Only ``qs``'s own table is locked where the
    database can name it (``FOR UPDATE OF``: PostgreSQL, MySQL 8); MariaDB also locks the rows
    of tables ``qs`` joins.
    """
    features = connections[using].features
    if not features.has_select_for_update:
        return qs  # SQLite: writes are serialised; the conditional update decides
    kwargs: dict[str, Any] = {}
    if skip_locked and features.has_select_for_update_skip_locked:
        kwargs["skip_locked"] = True
    if features.has_select_for_update_of:
        kwargs["of"] = ("self",)
    return qs.select_for_update(**kwargs)


def first_unlocked(qs: QuerySet[Any], using: str, limit: int) -> list[Any]:
    """Up to ``limit`` rows of ``qs``, in its order, locked until the transaction ends.

    Rows another transaction holds are passed over, and only the rows returned are locked, on
    every database (see the module's docstring). Call it inside ``transaction.atomic()``, and
    make the write that follows conditional on ``qs``'s filters where the database has no
    row locks (SQLite).
    """
    if connections[using].vendor != "mysql":
        return list(locked_rows(qs, using, skip_locked=True)[:limit])
    # InnoDB: lock by primary key what a plain read found first. Without a join, so that only
    # these rows are locked (MariaDB has no FOR UPDATE OF); related rows are read after.
    related = _select_related_paths(qs.query.select_related)
    plain = qs.select_related(None)
    passed_over: list[Any] = []
    while True:
        candidates = plain.exclude(pk__in=passed_over) if passed_over else plain
        keys = list(candidates.values_list("pk", flat=True)[:limit])
        if not keys:
            return []
        # The filters again: a candidate claimed and committed meanwhile no longer matches.
        rows = list(locked_rows(plain.filter(pk__in=keys), using, skip_locked=True))
        if rows:
            break
        # Every candidate is held by another transaction (MariaDB 10.5 without SKIP LOCKED waits
        # for it instead) or was just taken: read on past them.
        passed_over.extend(keys)
    if related:
        prefetch_related_objects(rows, *related)
    return rows


def _select_related_paths(select_related: bool | dict[str, Any], prefix: str = "") -> list[str]:
    """The ``select_related()`` paths of a query, as ``prefetch_related`` lookups."""
    if not isinstance(select_related, dict):
        return []  # False, or True (every non-null relation): not used in this app
    paths: list[str] = []
    for name, nested in select_related.items():
        path = f"{prefix}{name}"
        paths.extend(_select_related_paths(nested, f"{path}__") or [path])
    return paths
