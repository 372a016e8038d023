"""Costs that must not grow with the tables: statements per changelist page, per prune batch,
per claim batch, per 1,000 polled statuses, per webhook delivery.

The timed figures (a million rows, 100,000 queued documents) are in ``benchmarks/scale.py``;
here the shape of the work is checked on small tables: no statement that reads the whole table
(``DISTINCT`` for filter choices, an unbounded ``COUNT``), and a number of statements per unit
of work that stays the same when the work grows.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from promptjuggler_django import signals
from promptjuggler_django.admin import _scale
from promptjuggler_django.models import (
    KnowledgeBase,
    KnowledgeDocument,
    SyncState,
    WebhookDelivery,
)
from promptjuggler_django.webhooks import prune_deliveries

from .webhook_support import document_body, fixed_clock, post, url  # noqa: F401  (fixture)
from .webhook_support import make_documents as hook_documents

pytestmark = pytest.mark.django_db

DOC_CHANGELIST = reverse("admin:promptjuggler_django_knowledgedocument_changelist")
HOOK_CHANGELIST = reverse("admin:promptjuggler_django_webhookdelivery_changelist")


def qn(name: str) -> str:
    """``name`` quoted as the database quotes it in SQL (backticks on MariaDB/MySQL)."""
    return connection.ops.quote_name(name)


def make_documents(count: int, *, owners: int = 3) -> KnowledgeBase:
    kb = KnowledgeBase.objects.create(slug=f"kb_{uuid.uuid4().hex[:8]}")
    users = [User.objects.create_user(f"owner{i}_{kb.slug}") for i in range(owners)]
    KnowledgeDocument.objects.bulk_create(
        KnowledgeDocument(
            knowledge_base=kb,
            owner=users[i % owners] if users else None,
            file=f"doc{i}.txt",
            file_name=f"doc{i}.txt",
            sync_state=SyncState.SYNCED,
            remote_id=uuid.uuid4(),
            remote_status=("pending", "ready", "failed")[i % 3],
        )
        for i in range(count)
    )
    return kb


def log_deliveries(count: int, *, age_days: float = 0) -> None:
    received = timezone.now() - timedelta(days=age_days)
    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            received_at=received - timedelta(seconds=i),
            event_type=WebhookDelivery.EventType.DOCUMENT_FINISHED,
            object_id=str(uuid.uuid4()),
            status="ready",
            secret_index=i % 2,
            dedupe_key=uuid.uuid4().hex * 2,
            outcome=WebhookDelivery.Outcome.APPLIED,
        )
        for i in range(count)
    )


def table_reads(queries: list[dict[str, str]], table: str) -> list[str]:
    """Statements that read all of ``table``: DISTINCT over it, or a COUNT without a LIMIT."""
    scans = []
    for query in queries:
        sql = query["sql"]
        if f'"{table}"' not in sql:
            continue
        if "DISTINCT" in sql.upper() or ("COUNT(" in sql.upper() and "LIMIT" not in sql.upper()):
            scans.append(sql)
    return scans


# -- admin changelists ------------------------------------------------------------------------


@pytest.mark.parametrize("filters", [{}, {"sync_state__exact": "synced"}])
def test_document_changelist_reads_no_whole_table(admin_client: Client, filters) -> None:
    make_documents(30)
    with CaptureQueriesContext(connection) as page:
        response = admin_client.get(DOC_CHANGELIST, filters)
    assert response.status_code == 200
    assert table_reads(page.captured_queries, KnowledgeDocument._meta.db_table) == []
    html = response.content.decode()
    # The filters still offer their choices, from the model or from the small side.
    assert "?remote_status__exact=ready" in html
    assert "owner__id__exact=" in html and "owner__isnull=True" in html
    assert len(response.context["cl"].result_list) == 30
    assert "30 knowledge documents" in html


def test_document_filters_still_narrow(admin_client: Client) -> None:
    make_documents(9)
    owner = User.objects.get(username__startswith="owner1_")
    ready = admin_client.get(DOC_CHANGELIST, {"remote_status__exact": "ready"})
    assert {d.remote_status for d in ready.context["cl"].result_list} == {"ready"}
    mine = admin_client.get(DOC_CHANGELIST, {"owner__id__exact": owner.pk})
    assert {d.owner_id for d in mine.context["cl"].result_list} == {owner.pk}
    assert len(mine.context["cl"].result_list) == 3


def test_delivery_changelist_reads_no_whole_table(admin_client: Client, settings) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_SECRETS": ["one", "two"]}
    log_deliveries(30)
    with CaptureQueriesContext(connection) as page:
        response = admin_client.get(HOOK_CHANGELIST)
    assert response.status_code == 200
    assert table_reads(page.captured_queries, WebhookDelivery._meta.db_table) == []
    html = response.content.decode()
    assert "?secret_index__exact=1" in html and "?secret_index__isnull=True" in html
    assert "?received_at__gte=" in html  # the date filter stands in for the hierarchy
    second = admin_client.get(HOOK_CHANGELIST, {"secret_index__exact": "1"})
    assert {d.secret_index for d in second.context["cl"].result_list} == {1}


@pytest.mark.parametrize("rows", [5, 40])
def test_changelist_statements_do_not_grow(admin_client: Client, rows: int) -> None:
    make_documents(rows)
    log_deliveries(rows)
    for changelist, limit in ((DOC_CHANGELIST, 9), (HOOK_CHANGELIST, 6)):
        with CaptureQueriesContext(connection) as page:
            assert admin_client.get(changelist).status_code == 200
        assert len(page.captured_queries) <= limit, changelist


def test_counts_past_the_limit_are_estimated(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_scale, "COUNT_LIMIT", 5)
    log_deliveries(12)
    response = admin_client.get(HOOK_CHANGELIST)
    paginator = response.context["cl"].paginator
    assert paginator.estimated
    html = re.sub(r"\s+", " ", response.content.decode())
    if connection.vendor == "postgresql":
        assert paginator.count >= 6
        assert f"about {paginator.count} webhook deliveries" in html
    else:
        assert paginator.count == 6
        assert "more than 5 webhook deliveries" in html
    # Under the limit the count is exact and says so.
    # A list, not a subquery: MariaDB and MySQL have no LIMIT in an IN subquery.
    first_nine = list(WebhookDelivery.objects.values_list("pk", flat=True)[:9])
    WebhookDelivery.objects.filter(pk__in=first_nine).delete()
    exact = admin_client.get(HOOK_CHANGELIST)
    assert not exact.context["cl"].paginator.estimated
    assert "3 webhook deliveries" in re.sub(r"\s+", " ", exact.content.decode())


# -- prune ------------------------------------------------------------------------------------


def test_prune_batches_walk_the_primary_key() -> None:
    log_deliveries(25, age_days=30)
    log_deliveries(3)
    with CaptureQueriesContext(connection) as queries:
        assert prune_deliveries(timezone.now() - timedelta(days=7), batch_size=10) == 25
    statements = [q["sql"] for q in queries.captured_queries]
    selects = [sql for sql in statements if sql.startswith("SELECT")]
    deletes = [sql for sql in statements if sql.startswith("DELETE")]
    # The highest id to prune, then two statements per batch (and one empty read at the
    # end), whatever the log's size.
    assert (len(selects), len(deletes)) == (1 + 4, 3)
    assert qn("received_at") in selects[0].split("WHERE")[1]
    # Each batch after the first starts past the last one's highest id: it never steps over
    # the index entries the earlier batches left dead. No batch compares the receipt time
    # (PostgreSQL would plan it by looking up the column's end, over the pruned rows).
    for sql in selects[2:]:
        assert re.search(rf"{re.escape(qn('id'))} > \d+", sql), sql
    for sql in selects[1:]:
        assert qn("received_at") not in sql.split("WHERE")[1], sql
    assert WebhookDelivery.objects.count() == 3


def test_prune_keeps_a_newer_delivery_among_older_ids() -> None:
    """Ids and receipt times need not agree: a row received after the cutoff stays, whatever
    its id, and so does everything newer than the cutoff."""
    log_deliveries(5, age_days=30)
    middle = WebhookDelivery.objects.order_by("pk")[2]
    WebhookDelivery.objects.filter(pk=middle.pk).update(received_at=timezone.now())
    log_deliveries(2)
    assert prune_deliveries(timezone.now() - timedelta(days=7), batch_size=2) == 4
    assert WebhookDelivery.objects.count() == 3
    assert WebhookDelivery.objects.filter(pk=middle.pk).exists()
    assert prune_deliveries(timezone.now() - timedelta(days=7)) == 0


# -- polling fallback -------------------------------------------------------------------------


def polled_changes(pj, count: int) -> KnowledgeBase:
    """``count`` synced documents that PromptJuggler finished without a webhook reaching us."""
    kb, _ = KnowledgeBase.objects.get_or_create(slug="kb_test")
    remote = [pj.add_document("kb_test", f"doc{i}.txt", b"x" * 10) for i in range(count)]
    KnowledgeDocument.objects.bulk_create(
        KnowledgeDocument(
            knowledge_base=kb,
            file=f"doc{i}.txt",
            file_name=f"doc{i}.txt",
            file_size=10,
            sync_state=SyncState.SYNCED,
            remote_id=doc.id,
            remote_status="pending",
            pushed_at=timezone.now() - timedelta(minutes=1),
        )
        for i, doc in enumerate(remote)
    )
    pj.finish()  # no webhook URL is configured: only polling can tell
    return kb


@pytest.mark.parametrize("changed", [3, 1500])
def test_polled_statuses_are_applied_in_bulk(
    fake_promptjuggler, django_capture_on_commit_callbacks, changed: int
) -> None:
    from promptjuggler_django import signals, sync
    from promptjuggler_django.client import PromptJugglerClient

    kb = polled_changes(fake_promptjuggler, changed)
    seen: list[tuple[str, str]] = []

    def on_change(sender, old_status: str, new_status: str, **kwargs) -> None:
        seen.append((old_status, new_status))

    signals.document_status_changed.connect(on_change, dispatch_uid="t-bulk-poll")
    try:
        with (
            PromptJugglerClient.from_settings() as client,
            django_capture_on_commit_callbacks(execute=True),
            CaptureQueriesContext(connection) as queries,
        ):
            report = sync.refresh_knowledge_base(kb, client=client)
    finally:
        signals.document_status_changed.disconnect(dispatch_uid="t-bulk-poll")
    assert report.status_changes == changed
    assert set(
        KnowledgeDocument.objects.values_list("remote_status", "chunk_count").distinct()
    ) == {("ready", None)}  # a polled status leaves the chunk count unknown
    assert seen == [("pending", "ready")] * changed
    # A constant number of statements per 1,000 documents (one locked read and the updates of
    # each chunk), beside the few of every refresh; one webhook's two per document before.
    chunks = -(-changed // 1000)
    assert len(queries.captured_queries) <= 8 + 8 * chunks, len(queries.captured_queries)


# -- the push claim -------------------------------------------------------------------------


def queue_documents(kb: KnowledgeBase, count: int, start: int = 0) -> None:
    from django.core.files.base import ContentFile

    # The field's own storage: the one a push reads from, whatever other tests overrode.
    storage = KnowledgeDocument._meta.get_field("file").storage
    contents = [b"text %06d" % i for i in range(start, start + count)]
    names = [storage.save("claim.txt", ContentFile(c)) for c in contents]
    KnowledgeDocument.objects.bulk_create(
        KnowledgeDocument(knowledge_base=kb, file=name, file_name=name, file_size=len(c))
        for name, c in zip(names, contents, strict=True)
    )


def claim_statements(queries: list[dict[str, str]]) -> list[str]:
    """The reads of the due set in claim order. On MariaDB/MySQL these are the candidate reads;
    the locking read by primary key that follows each (a few rows) is left out."""
    table = qn(KnowledgeDocument._meta.db_table)
    selects = [q["sql"] for q in queries if q["sql"].startswith("SELECT")]
    found = [sql for sql in selects if f"FROM {table}" in sql and "ORDER BY" in sql]
    if connection.vendor == "mysql":
        found = [sql for sql in found if "FOR UPDATE" not in sql]
    return found


@pytest.mark.parametrize("batches", [2, 6])
def test_push_statements_per_batch_do_not_grow(fake_promptjuggler, settings, batches) -> None:
    from promptjuggler_django import sync

    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BATCH_MAX_FILES": 10}
    kb = KnowledgeBase.objects.create(slug="kb_test")
    queue_documents(kb, 10 * batches)
    with CaptureQueriesContext(connection) as queries:
        report = sync.push_due(knowledge_base_ids=[kb.pk])
    assert (report.batches, report.attempted) == (batches, 10 * batches)
    synced = KnowledgeDocument.objects.filter(knowledge_base=kb, sync_state=SyncState.SYNCED)
    assert synced.count() == 10 * batches
    # The claim (read, update), the store (one executemany), their savepoints, and once per run
    # the first batch's knowledge-base read, the last claim's two empty reads (past the last
    # row claimed, then from the start) and the read of the earliest waiting retry (to
    # reschedule it): the same every batch, whatever the backlog. MariaDB/MySQL read the claim's
    # candidates before locking them by primary key: one more per batch (sync/_locking.py).
    per_batch = 10 if connection.vendor == "mysql" else 9
    assert len(queries.captured_queries) <= 7 + per_batch * batches, len(queries.captured_queries)


def test_claim_reads_due_rows_in_index_order(fake_promptjuggler) -> None:
    """The claim keeps ``BATCH_MAX_FILES`` rows of the due set in (knowledge base, pk) order: an
    index gives them in that order, so the database never sorts the whole due set."""
    from promptjuggler_django import sync

    kb = KnowledgeBase.objects.create(slug="kb_test")
    claims = []
    # One knowledge base's task, and a run over all of them. Not the latter on MariaDB/MySQL:
    # InnoDB sorts the candidates of a claim over every knowledge base (a plain read of ids,
    # before the locking read by primary key), and it chooses the per-base claim's plan from
    # sampled statistics: this test keeps its data as it was when that plan was settled.
    scopes: list[dict[str, Any]] = [{"knowledge_base_ids": [kb.pk]}]
    if connection.vendor != "mysql":
        scopes.append({})
    for scope in scopes:
        queue_documents(kb, 3)
        with CaptureQueriesContext(connection) as queries:
            sync.push_due(**scope)
        claims.append(claim_statements(queries.captured_queries)[0])
    # A backlog of a few thousand, with statistics, so the planner weighs a sort for real.
    KnowledgeDocument.objects.bulk_create(
        KnowledgeDocument(knowledge_base=kb, file=f"b{i}.txt", file_name=f"b{i}.txt")
        for i in range(3000)
    )
    waiting = KnowledgeDocument.objects.filter(file_name__startswith="b")
    first_waiting = list(waiting.values_list("pk", flat=True)[:2000])  # no LIMIT in IN (MariaDB)
    waiting.filter(pk__gt=0).exclude(pk__in=first_waiting).update(sync_state=SyncState.SYNCED)
    with connection.cursor() as cursor:
        # MariaDB/MySQL: no ANALYZE (ANALYZE TABLE commits the test's transaction); InnoDB's
        # optimizer counts the rows of a range in the index itself.
        if connection.vendor != "mysql":
            cursor.execute("ANALYZE")
        explain = "EXPLAIN" if connection.vendor != "sqlite" else "EXPLAIN QUERY PLAN"
        for claim in claims:
            cursor.execute(f"{explain} {claim}")
            plan = "\n".join(" ".join(str(c) for c in row) for row in cursor.fetchall())
            assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan
            assert "filesort" not in plan, plan
            if connection.vendor == "postgresql":
                assert "pj_doc_claim" in plan, plan


# -- webhook intake ---------------------------------------------------------------------------


def _statements_per_delivery(client: Client, count: int = 20) -> float:
    documents = hook_documents(KnowledgeBase.objects.create(slug="kb_hooks"), count)
    with CaptureQueriesContext(connection) as queries:
        for document in documents:
            answer = post(client, url(), document_body(document.remote_id, "ready"))
            assert answer.json() == {"outcome": "applied"}
    statements = [q for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    return len(statements) / count


@pytest.mark.usefixtures("fixed_clock")
@pytest.mark.parametrize("logged", [0, 3000])
def test_statements_per_delivery_do_not_grow_with_the_log(client: Client, logged: int) -> None:
    """An applied document event nobody listens for: the conditional update and the log
    insert, whether the log is empty or long; on PostgreSQL both in one statement."""
    log_deliveries(logged, age_days=1)
    assert _statements_per_delivery(client) == (1 if connection.vendor == "postgresql" else 2)


@pytest.mark.postgres
@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="only PostgreSQL changes rows in a WITH clause"
)
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fixed_clock")
def test_in_autocommit_a_delivery_is_one_statement_outside_any_transaction(
    client: Client,
) -> None:
    """On PostgreSQL the update and the log insert are one statement, a transaction of its
    own: no ``BEGIN`` and ``COMMIT`` round trips around it (views and tasks run so)."""
    documents = hook_documents(KnowledgeBase.objects.create(slug="kb_hooks"), 3)
    seen = []

    def watch(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append((sql.split()[0], connection.in_atomic_block, connection.get_autocommit()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(watch):
        for document in documents:
            answer = post(client, url(), document_body(document.remote_id, "ready"))
            assert answer.json() == {"outcome": "applied"}
    assert seen == [("WITH", False, True)] * 3
    assert KnowledgeDocument.objects.filter(remote_status="ready").count() == 3
    assert WebhookDelivery.objects.filter(outcome="applied").count() == 3


@pytest.mark.usefixtures("fixed_clock")
def test_a_status_receiver_costs_the_locked_read(
    client: Client, django_capture_on_commit_callbacks
) -> None:
    """With a ``document_status_changed`` receiver the old status must be read: the locked
    read, the update and the log insert."""
    received = []

    def receiver(**kwargs: object) -> None:
        received.append(kwargs["old_status"])

    signals.document_status_changed.connect(receiver, sender=KnowledgeDocument)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert _statements_per_delivery(client) == 3
    finally:
        signals.document_status_changed.disconnect(receiver, sender=KnowledgeDocument)
    assert received == ["pending"] * 20


def test_varied_polled_statuses_are_stored_in_one_bulk_update(
    fake_promptjuggler, monkeypatch: pytest.MonkeyPatch
) -> None:
    from promptjuggler_django import sync
    from promptjuggler_django.sync import _reconcile

    monkeypatch.setattr(_reconcile, "_MAX_STATUS_GROUPS", 0)  # every change counts as varied
    kb = polled_changes(fake_promptjuggler, 5)
    assert sync.refresh_knowledge_base(kb).status_changes == 5
    assert set(KnowledgeDocument.objects.values_list("remote_status", flat=True)) == {"ready"}


def test_each_claim_reads_on_from_the_last_row_claimed(fake_promptjuggler, settings) -> None:
    """A claim starts its index scan after the run's last claimed row (claimed rows' old index
    entries stay until vacuum: a scan from the start would step over all of them), and reads
    from the start only once nothing is left ahead."""
    from promptjuggler_django import sync

    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BATCH_MAX_FILES": 10}
    kb = KnowledgeBase.objects.create(slug="kb_test")
    queue_documents(kb, 30)
    pks = list(KnowledgeDocument.objects.order_by("pk").values_list("pk", flat=True))
    with CaptureQueriesContext(connection) as queries:
        report = sync.push_due(knowledge_base_ids=[kb.pk])
    assert report.attempted == 30
    table = qn(KnowledgeDocument._meta.db_table)
    order = f"ORDER BY {table}.{qn('knowledge_base_id')} ASC"
    claims = [sql for sql in claim_statements(queries.captured_queries) if order in sql]
    assert len(claims) == 3 + 3  # three batches; then ahead in the knowledge base, past it, all
    id_column = f"{table}.{qn('id')} >"
    assert id_column not in claims[0]
    assert f"{id_column} {pks[9]}" in claims[1] and f"{id_column} {pks[19]}" in claims[2]
    assert f"{id_column} {pks[29]}" in claims[3]
    kb_column = f"{qn('knowledge_base_id')} >"
    assert kb_column in claims[4]
    assert id_column not in claims[5] and kb_column not in claims[5]
