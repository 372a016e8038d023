"""Changelist parts that cost the same at a million rows as at a thousand.

Django's defaults count the whole table twice per page (the paginator and the "N total" beside
the search box), compute filter choices with ``SELECT DISTINCT`` over the table, and the date
hierarchy adds one ``DISTINCT date_trunc`` per level. The pieces here replace them: a paginator
that counts at most :data:`COUNT_LIMIT` rows and estimates beyond, and filters whose choices are
known up front or read from the small side of a relation, at most :data:`MAX_RELATED_CHOICES`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Exists, OuterRef, QuerySet
from django.utils.translation import gettext_lazy as _

#: Rows counted exactly; past this the count is the database's estimate (PostgreSQL) or this.
COUNT_LIMIT = 10_000

#: Most choices a related-object filter lists.
MAX_RELATED_CHOICES = 100


class EstimatedCountPaginator(Paginator):  # type: ignore[type-arg]
    """Counts exactly up to :data:`COUNT_LIMIT` rows (``COUNT`` over a ``LIMIT``ed subquery).

    Past that, :attr:`count` is the query planner's row estimate on PostgreSQL (never below the
    limit) and the limit on other databases; :attr:`estimated` says so, and the pagination
    template shows "about" or "more than".
    """

    estimated = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        bounded: int = queryset.order_by()[: COUNT_LIMIT + 1].count()
        if bounded <= COUNT_LIMIT:
            return bounded
        self.estimated = True
        return max(COUNT_LIMIT + 1, _planner_estimate(queryset) or 0)

    @property
    def is_lower_bound(self) -> bool:
        """The count is only "more than": no estimate was available."""
        return self.estimated and self.count == COUNT_LIMIT + 1


def _planner_estimate(queryset: QuerySet[Any]) -> int | None:
    """PostgreSQL's estimate of the rows ``queryset`` returns (``EXPLAIN``, nothing runs)."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class ListedChoicesFilter(admin.FieldListFilter):
    """Filter on ``<field>__exact`` with choices listed up front, not read from the table.

    Subclasses (see :func:`listed_choices`) give ``listed``; a ``None`` value is the
    ``__isnull`` choice.
    """

    listed: Callable[[], Sequence[tuple[Any, str]]]

    def __init__(
        self, field: Any, request: Any, params: Any, model: Any, model_admin: Any, field_path: str
    ) -> None:
        self.lookup_kwarg = f"{field_path}__exact"
        self.lookup_kwarg_isnull = f"{field_path}__isnull"
        self.lookup_val = params.get(self.lookup_kwarg)
        isnull = params.get(self.lookup_kwarg_isnull)
        self.lookup_val_isnull = isnull[-1] if isinstance(isnull, list) else isnull
        super().__init__(field, request, params, model, model_admin, field_path)

    def expected_parameters(self) -> list[str | None]:
        return [self.lookup_kwarg, self.lookup_kwarg_isnull]

    def choices(self, changelist: Any) -> Iterator[Any]:
        remove = [self.lookup_kwarg, self.lookup_kwarg_isnull]
        yield {
            "selected": self.lookup_val is None and not self.lookup_val_isnull,
            "query_string": changelist.get_query_string(remove=remove),
            "display": _("All"),
        }
        for value, title in self.listed():
            if value is None:
                yield {
                    "selected": bool(self.lookup_val_isnull),
                    "query_string": changelist.get_query_string(
                        {self.lookup_kwarg_isnull: "True"}, [self.lookup_kwarg]
                    ),
                    "display": title,
                }
                continue
            yield {
                "selected": self.lookup_val is not None and str(value) in self.lookup_val,
                "query_string": changelist.get_query_string(
                    {self.lookup_kwarg: value}, [self.lookup_kwarg_isnull]
                ),
                "display": title,
            }


def listed_choices(
    listed: Callable[[], Sequence[tuple[Any, str]]],
) -> type[ListedChoicesFilter]:
    """A :class:`ListedChoicesFilter` whose choices ``listed()`` gives (read at each page)."""
    return type("ListedChoices", (ListedChoicesFilter,), {"listed": staticmethod(listed)})


class RelatedWithRowsFilter(admin.RelatedFieldListFilter):
    """Like ``RelatedOnlyFieldListFilter`` (only objects that have rows here), read from the
    related table with one ``EXISTS`` probe per object instead of a ``DISTINCT`` over this
    one, and at most :data:`MAX_RELATED_CHOICES` of them."""

    def field_choices(self, field: Any, request: Any, model_admin: Any) -> Any:
        related = field.remote_field.model._default_manager
        rows = model_admin.model._default_manager.filter(**{field.attname: OuterRef("pk")})
        queryset = related.filter(Exists(rows))
        ordering = self.field_admin_ordering(field, request, model_admin) or ("pk",)
        return [(obj.pk, str(obj)) for obj in queryset.order_by(*ordering)[:MAX_RELATED_CHOICES]]
