"""Large tables built in a few set-based statements: the delivery log, documents."""

from __future__ import annotations


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def vacuum(model: type) -> None:
    """Reclaim a table's dead rows now (PostgreSQL), so that autovacuum does not start on them
    in the middle of the next measurement. ``VACUUM`` on SQLite would rebuild the whole file."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f'VACUUM ANALYZE "{model._meta.db_table}"')


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


def _series(vendor: str) -> str:
    """A ``FROM`` clause giving ``g.i`` from the first parameter to the second, exclusive."""
    if vendor == "postgresql":
        return "FROM generate_series(%s, %s - 1) AS g(i)"
    return (
        "FROM (WITH RECURSIVE s(i) AS (SELECT %s UNION ALL SELECT i + 1 FROM s "
        "WHERE i + 1 < %s) SELECT i FROM s) AS g"
    )


def grow_documents(knowledge_base_id: int, total: int) -> None:
    """Add synced documents to a knowledge base until it holds ``total`` (no files behind them:
    for the changelist, which reads rows only). One statement per 100,000 rows."""
    from django.db import connection

    from promptjuggler_django.models import KnowledgeDocument

    table = KnowledgeDocument._meta.db_table
    have = KnowledgeDocument.objects.filter(knowledge_base_id=knowledge_base_id).count()
    if connection.vendor == "postgresql":
        now = "now() - g.i * interval '1 second'"
        remote_id = "md5(g.i::text || %s)::uuid"
    else:
        now = "strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', '-' || g.i || ' seconds')"
        remote_id = "printf('%%032x', g.i * 1000 + %s)"
    columns = (
        "knowledge_base_id, file, file_name, file_size, content_type, file_version, remote_id, "
        "remote_status, chunk_count, status_changed_at, sync_state, attempts, last_error, "
        "next_attempt_at, pushed_at, created_at, updated_at, owner_id"
    )
    values = (
        f"%s, 'bulk/' || g.i || '.txt', 'doc-' || g.i || '.txt', 1000, 'text/plain', 0, "
        f"{remote_id}, 'ready', 3, NULL, 'synced', 1, '', NULL, {now}, {now}, {now}, NULL"
    )
    step = 100_000
    with connection.cursor() as cursor:
        for start in range(have, total, step):
            stop = min(total, start + step)
            sql = f'INSERT INTO "{table}" ({columns}) SELECT {values} {_series(connection.vendor)}'
            cursor.execute(sql, [knowledge_base_id, knowledge_base_id, start, stop])
    analyze()
