"""A long webhook delivery log, built in a few statements: shared by the benchmarks."""

from __future__ import annotations


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def grow_log(total: int, *, age_days: float) -> None:
    """Add rows to the delivery log until it holds ``total`` (one statement per 100,000)."""
    from django.db import connection

    from promptjuggler_django.models import WebhookDelivery

    table = WebhookDelivery._meta.db_table
    have = WebhookDelivery.objects.count()
    step = 100_000
    with connection.cursor() as cursor:
        for start in range(have, total, step):
            stop = min(total, start + step)
            if connection.vendor == "postgresql":
                series = "generate_series(%s, %s - 1) AS g(i)"
                received = "now() - make_interval(days => %s) - g.i * interval '1 millisecond'"
                key = "md5(g.i::text) || md5((g.i + 1)::text)"
                secret = "g.i %% 2"
                select_from = f"FROM {series}"
            else:
                select_from = (
                    "FROM (WITH RECURSIVE s(i) AS (SELECT %s UNION ALL SELECT i + 1 FROM s "
                    "WHERE i + 1 < %s) SELECT i FROM s) AS g"
                )
                received = (
                    "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-' || %s || ' days', "
                    "'-' || (g.i / 1000.0) || ' seconds')"
                )
                key = "printf('%%064d', g.i)"
                secret = "g.i %% 2"
            columns = (
                "received_at, event_type, object_id, status, signature_timestamp, secret_index, "
                "dedupe_key, body, body_truncated, headers, outcome, detail, duplicate_count, "
                "replay_count, processed_at"
            )
            values = (
                f"{received}, 'knowledgedocument.finished', 'doc-' || g.i, 'ready', NULL, "
                f"{secret}, {key}, '', false, '{{}}', 'applied', '', 0, 0, NULL"
            )
            sql = f'INSERT INTO "{table}" ({columns}) SELECT {values} {select_from}'
            cursor.execute(sql, [age_days, start, stop])
    analyze()
