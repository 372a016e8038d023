"""Costs that must not grow with the tables: push, polling, admin changelists and prune at scale.

Run from the repository root:

    python3 benchmarks/scale.py                                   # quick: 1k/10k docs, 10k/100k log
    python3 benchmarks/scale.py --full                            # 10k/100k docs, 10k/1M log
    PJ_TEST_DB=postgres python3 benchmarks/scale.py               # PostgreSQL at 127.0.0.1
    python3 benchmarks/scale.py --docs 1000 20000 --log 10000 500000 --rounds 3

The project is the test suite's (``tests.settings``: SQLite in memory, or PostgreSQL with
``PJ_TEST_DB=postgres``, in a database of its own, ``PJ_PG_TEST_NAME``, default
``bench_scale``). The emulator runs in its own process. Every figure is compared with the same
figure at the smallest size, measured in the same run, and printed with PASS or FAIL against
the goal of issue 11:

1. **push**: docs/s of ``push_due`` over the whole backlog at the largest size >= 0.9 x the
   smallest; the claim's and the store's database time per batch, first and last tenth of the
   batches; the claim query's plan (``EXPLAIN``).
4. **polling**: ``promptjuggler_sync`` when every document's status changed remotely (no
   webhook came) within 5 x the steady state (nothing changed), and its statements per 1,000
   documents.
6. **admin**: each changelist's page (the test client, an admin user) at the largest size
   within 2 x its time at the smallest. Both use the log sizes (``--log``): documents and
   deliveries are inserted by set-based statements (``_tables.py``), with no files behind the
   documents (the changelist reads rows only).
7. **prune**: 1,000-row batches over the largest log, the last tenth no slower than 1.5 x the
   first, with the app's keyset batches; the earlier offset-free scan from the lowest id is
   timed beside it as the baseline.

Figures are medians of ``--rounds`` rounds (3); push rounds alternate the sizes.

The other goals have scripts of their own, each with its baseline measured in its own run; this
script runs them in turn (``--skip limit``, ``webhooks`` or ``reconcile`` leaves one out), prints
their figures, and counts their verdicts with its own:

2. **push against the limit** (``push_limit.py``): the app against a bare httpx client sending
   the same batches, and against the official SDK sending 100 files per call;
3. **webhook intake** (``webhook_throughput.py --log-rows``): the endpoint against the floor
   view, over HTTP and in process, then again over a log of 100,000 rows (1,000,000 with
   ``--full``);
5. **reconcile memory** (``reconcile_memory.py``): peak RSS from 10,000 to 100,000 listed
   documents (500,000 with ``--full``).

Ends with every goal's verdict; exits non-zero when one is not met.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from _tables import analyze, grow_documents, grow_log, vacuum

ROOT = Path(__file__).resolve().parent.parent
SLUG = "kb_scale"
API_KEY = "pj_bench_key"
RESULTS: list[tuple[str, bool]] = []

_EMULATOR = """
import sys
from promptjuggler_django.testing import FakePromptJuggler
fake = FakePromptJuggler(sys.argv[1], knowledge_bases=[sys.argv[2]]).start()
print(fake.url, flush=True)
for line in sys.stdin:  # one command a line, answered with "ok"
    {"finish": fake.finish, "reset": fake.reset}[line.strip()]()
    print("ok", flush=True)
fake.stop()
"""


class Emulator:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _EMULATOR, API_KEY, SLUG],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def command(self, name: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ok"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def setup_django(api_url: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    os.environ.setdefault("PJ_PG_TEST_NAME", "bench_scale")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "API_KEY": API_KEY, "BASE_URL": api_url}
    settings.TASKS = {"default": {"BACKEND": _tasks_module() + ".backends.dummy.DummyBackend"}}
    settings.DEBUG = False
    setup_test_environment()
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)


def _tasks_module() -> str:
    import django

    return "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"


def verdict(name: str, ok: bool) -> str:
    RESULTS.append((name, ok))
    return "PASS" if ok else "FAIL"


def median(values: list[float]) -> float:
    return statistics.median(values)


@contextmanager
def statement_times(sink: list[tuple[str, float]]) -> Iterator[None]:
    """Record (sql, seconds) of every statement run on the default connection."""
    from django.db import connection

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            sink.append((sql, time.perf_counter() - started))

    with connection.execute_wrapper(wrapper):
        yield


def count_statements(run: Callable[[], Any]) -> tuple[Any, int, float]:
    sink: list[tuple[str, float]] = []
    started = time.perf_counter()
    with statement_times(sink):
        result = run()
    return result, len(sink), time.perf_counter() - started


# -- documents: push, polling, the document changelist ---------------------------------------


def create_documents(kb: Any, n: int) -> None:
    from django.core.files.base import ContentFile

    from promptjuggler_django.models import KnowledgeDocument, document_storage

    storage = document_storage()
    rows = []
    for i in range(n):
        content = b"Document %07d: a short note.\n" % i
        name = storage.save(f"scale/{n}/doc{i:07}.txt", ContentFile(content))
        rows.append(
            KnowledgeDocument(
                knowledge_base=kb,
                file=name,
                file_name=name.rsplit("/", 1)[-1],
                file_size=len(content),
                content_type="text/plain",
            )
        )
    KnowledgeDocument.objects.bulk_create(rows, batch_size=2000)


def requeue(kb: Any) -> None:
    """Every document of ``kb`` back to queued, as if never pushed (no signals, no tombstones)."""
    from promptjuggler_django.models import KnowledgeDocument, SyncState

    KnowledgeDocument.objects.filter(knowledge_base=kb).update(
        sync_state=SyncState.QUEUED,
        remote_id=None,
        remote_status="",
        chunk_count=None,
        attempts=0,
        next_attempt_at=None,
        pushed_at=None,
        status_changed_at=None,
        last_error="",
    )


def push_once(kb: Any, emulator: Emulator, n: int) -> dict[str, Any]:
    from promptjuggler_django import sync
    from promptjuggler_django.sync import _push

    emulator.command("reset")
    requeue(kb)
    analyze()
    claims: list[float] = []
    sends: list[float] = []
    stores: list[float] = []
    claim_batch, store_outcomes, send = _push._claim_batch, _push.store_outcomes, _push._send

    def timed_send(*args: Any, **kwargs: Any) -> Any:  # on the push's sending thread
        started = time.perf_counter()
        try:
            return send(*args, **kwargs)
        finally:
            sends.append(time.perf_counter() - started)

    def timed_claim(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return claim_batch(*args, **kwargs)
        finally:
            claims.append(time.perf_counter() - started)

    def timed_store(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return store_outcomes(*args, **kwargs)
        finally:
            stores.append(time.perf_counter() - started)

    _push._claim_batch, _push.store_outcomes = timed_claim, timed_store  # type: ignore[assignment]
    _push._send = timed_send  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        report = sync.push_due(knowledge_base_ids=[kb.pk])
        elapsed = time.perf_counter() - started
    finally:
        _push._claim_batch, _push.store_outcomes = claim_batch, store_outcomes  # type: ignore
        _push._send = send  # type: ignore[assignment]
    assert report.synced == n, report
    tenth = max(1, len(stores) // 10)
    return {
        "rate": n / elapsed,
        "claim_first": median(claims[:tenth]),
        "claim_last": median(claims[-tenth - 1 : -1]),
        "store_first": median(stores[:tenth]),
        "store_last": median(stores[-tenth:]),
        "store_all": median(stores),
        "claim_all": median(claims[:-1]),
        "send_first": median(sends[:tenth]),
        "send_last": median(sends[-tenth:]),
    }


def claim_plan(kb: Any) -> str:
    """The plan of the claim's statement, with a due backlog."""
    from django.db import connection
    from django.utils import timezone

    from promptjuggler_django.models import KnowledgeDocument

    requeue(kb)
    analyze()
    qs = KnowledgeDocument.objects.due(timezone.now()).order_by("knowledge_base_id", "pk")
    if connection.features.has_select_for_update_skip_locked:
        qs = qs.select_for_update(skip_locked=True)
    from django.db import transaction

    with transaction.atomic():
        return qs[:100].explain()


def polling_round(kb: Any, emulator: Emulator) -> tuple[float, int, float, int]:
    """(seconds, statements) of promptjuggler_sync with every status changed, then steady."""
    import io

    from django.core.management import call_command

    from promptjuggler_django.models import KnowledgeDocument

    KnowledgeDocument.objects.filter(knowledge_base=kb).update(
        remote_status="pending", chunk_count=None, status_changed_at=None
    )

    def run() -> None:
        call_command(
            "promptjuggler_sync",
            "--knowledge-base",
            SLUG,
            "--no-progress",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )

    _, changed_n, changed_s = count_statements(run)
    assert not KnowledgeDocument.objects.filter(knowledge_base=kb, remote_status="pending").exists()
    _, steady_n, steady_s = count_statements(run)
    return changed_s, changed_n, steady_s, steady_n


def time_page(client: Any, url: str, rounds: int) -> tuple[float, int]:
    """Median seconds of a GET (after one warm-up) and its statements."""
    client.get(url)
    times = []
    statements = 0
    for _ in range(rounds):
        response, statements, seconds = count_statements(lambda: client.get(url))
        assert response.status_code == 200, response.status_code
        times.append(seconds)
    return median(times), statements


def documents_case(sizes: list[int], rounds: int, emulator: Emulator, client: Any) -> None:

    from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument

    kbs = {}
    for n in sizes:
        kbs[n] = KnowledgeBase.objects.create(slug=SLUG if n == sizes[0] else f"{SLUG}_{n}")
    # One knowledge base (the emulator's) at a time: rename in turn.
    results: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    for n in sizes:
        create_documents(kbs[n], n)
    print("\n== push (goal 1): push_due over a backlog of N queued documents ==")
    _activate(kbs, base := sizes[0])
    push_once(kbs[base], emulator, base)  # warm-up, unmeasured
    for r in range(rounds):
        order = sizes if r % 2 == 0 else list(reversed(sizes))
        for n in order:
            _activate(kbs, n)
            results[n].append(push_once(kbs[n], emulator, n))
    rates = {n: median([x["rate"] for x in results[n]]) for n in sizes}
    for n in sizes:

        def m(key: str, n: int = n) -> float:
            return median([x[key] for x in results[n]]) * 1000

        print(
            f"  N={n:>7,}: {rates[n]:8.0f} docs/s  claim {m('claim_first'):6.2f} -> "
            f"{m('claim_last'):6.2f} ms/batch (first -> last tenth), store "
            f"{m('store_first'):6.2f} -> {m('store_last'):6.2f}, send (files, request, answer) "
            f"{m('send_first'):6.2f} -> {m('send_last'):6.2f} ms/batch"
        )
    top = sizes[-1]
    ratio = rates[top] / rates[base]
    ok = verdict("push linear", ratio >= 0.9)
    print(f"  docs/s at {top:,} / at {base:,}: {ratio:.2f} (goal >= 0.9) {ok}")
    store_ratio = median([x["store_all"] for x in results[top]]) / median(
        [x["store_all"] for x in results[base]]
    )
    print(
        f"  store ms/batch at {top:,} / at {base:,}: {store_ratio:.2f} (goal <= 1.2) "
        f"{verdict('store per batch flat', store_ratio <= 1.2)}"
    )
    print(f"\n  claim plan at {top:,} queued:")
    _activate(kbs, top)
    for line in claim_plan(kbs[top]).splitlines():
        print("    " + line)
    KnowledgeDocument.objects.filter(knowledge_base=kbs[top]).update(sync_state="synced")
    print("\n== polling fallback (goal 4): promptjuggler_sync, all N statuses changed vs none ==")
    for n in sizes:
        _activate(kbs, n)
        emulator.command("reset")
        requeue(kbs[n])
        from promptjuggler_django import sync

        assert sync.push_due(knowledge_base_ids=[kbs[n].pk]).synced == n
        emulator.command("finish")
        rows = [polling_round(kbs[n], emulator) for _ in range(rounds)]
        changed_s, changed_q = median([x[0] for x in rows]), median([x[1] for x in rows])
        steady_s, steady_q = median([x[2] for x in rows]), median([x[3] for x in rows])
        ratio = changed_s / steady_s
        print(
            f"  N={n:>7,}: changed {changed_s:7.3f} s ({changed_q:.0f} statements, "
            f"{changed_q / n * 1000:.0f} per 1,000), steady {steady_s:7.3f} s ({steady_q:.0f}); "
            f"ratio {ratio:.2f} (goal <= 5) {verdict(f'polling N={n}', ratio <= 5)}"
        )
    _only(kbs, None)


def changelist_case(sizes: list[int], rounds: int, client: Any) -> None:
    """The document changelist over a table of each size (rows only, set-based inserts)."""
    from django.db import connection
    from django.urls import reverse

    from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument

    with connection.cursor() as cursor:  # a table of this case's rows only (no receivers)
        cursor.execute(f'DELETE FROM "{KnowledgeDocument._meta.db_table}"')
    kb = KnowledgeBase.objects.create(slug=f"{SLUG}_changelist")
    changelist = reverse("admin:promptjuggler_django_knowledgedocument_changelist")
    print("\n== admin (goal 6): the knowledge document changelist ==")
    times = {}
    for n in sizes:
        grow_documents(kb.pk, n)
        times[n], statements = time_page(client, changelist, rounds)
        print(f"  {n:>9,} rows: {times[n] * 1000:7.1f} ms ({statements} statements)")
    base, top = sizes[0], sizes[-1]
    ratio = times[top] / times[base]
    ok = verdict("document changelist", ratio <= 2)
    print(f"  at {top:,} / at {base:,}: {ratio:.2f} (goal <= 2) {ok}")


_stash: dict[int, list[int]] = {}


def _activate(kbs: dict[int, Any], n: int) -> None:
    """Give knowledge base ``n`` the emulator's slug (the emulator knows one knowledge base)."""
    from promptjuggler_django.models import KnowledgeBase

    for size, kb in kbs.items():
        if size != n and kb.slug == SLUG:
            kb.slug, kb.remote_id = f"{SLUG}_{size}", None
            KnowledgeBase.objects.filter(pk=kb.pk).update(slug=kb.slug, remote_id=None)
    kb = kbs[n]
    if kb.slug != SLUG:
        kb.slug = SLUG
        KnowledgeBase.objects.filter(pk=kb.pk).update(slug=SLUG)


def _only(kbs: dict[int, Any], n: int | None) -> None:
    """Keep only size ``n``'s documents in the documents table (the others wait aside)."""
    from django.db import connection

    from promptjuggler_django.models import KnowledgeDocument

    table = KnowledgeDocument._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f'CREATE TABLE IF NOT EXISTS "{table}_aside" AS SELECT * FROM "{table}" WHERE 1=0'
        )
        cursor.execute(f'INSERT INTO "{table}_aside" SELECT * FROM "{table}"')
        cursor.execute(f'DELETE FROM "{table}"')
        if n is None:
            cursor.execute(f'INSERT INTO "{table}" SELECT * FROM "{table}_aside"')
        else:
            cursor.execute(
                f'INSERT INTO "{table}" SELECT * FROM "{table}_aside" WHERE knowledge_base_id = %s',
                [kbs[n].pk],
            )
            cursor.execute(f'DELETE FROM "{table}_aside" WHERE knowledge_base_id = %s', [kbs[n].pk])
        if n is None:
            cursor.execute(f'DELETE FROM "{table}_aside"')


# -- the delivery log: changelist and prune ----------------------------------------------------


def prune_batches(cutoff: Any, *, keyset: bool, batch_size: int = 1000) -> list[float]:
    """Seconds per batch (its SELECT and its DELETE) of a prune over the whole log."""
    from promptjuggler_django.models import WebhookDelivery
    from promptjuggler_django.webhooks import prune_deliveries

    sink: list[tuple[str, float]] = []
    with statement_times(sink):
        if keyset:
            prune_deliveries(cutoff, batch_size=batch_size)
        else:  # the earlier loop: every batch reads from the lowest remaining id
            old = WebhookDelivery.objects.filter(received_at__lt=cutoff).order_by("pk")
            while ids := list(old.values_list("pk", flat=True)[:batch_size]):
                WebhookDelivery.objects.filter(pk__in=ids).delete()
    batches = []
    pending = 0.0
    for sql, seconds in sink:
        pending += seconds
        if sql.startswith("DELETE"):
            batches.append(pending)
            pending = 0.0
    return batches


def log_case(sizes: list[int], rounds: int, client: Any) -> None:
    from django.urls import reverse
    from django.utils import timezone

    from promptjuggler_django.models import WebhookDelivery

    changelist = reverse("admin:promptjuggler_django_webhookdelivery_changelist")
    print("\n== admin (goal 6): the webhook delivery changelist ==")
    times = {}
    for n in sizes:
        grow_log(n, age_days=60)
        times[n], statements = time_page(client, changelist, rounds)
        print(f"  {n:>9,} rows: {times[n] * 1000:7.1f} ms ({statements} statements)")
    base, top = sizes[0], sizes[-1]
    ratio = times[top] / times[base]
    ok = verdict("delivery changelist", ratio <= 2)
    print(f"  at {top:,} / at {base:,}: {ratio:.2f} (goal <= 2) {ok}")
    print(f"\n== prune (goal 7): 1,000-row batches over {top:,} deliveries ==")
    cutoff = timezone.now() - timedelta(days=30)
    for keyset in (False, True):
        grow_log(top, age_days=60)
        # The run before left a million dead rows: both runs start from a vacuumed table.
        vacuum(WebhookDelivery)
        started = time.perf_counter()
        batches = prune_batches(cutoff, keyset=keyset)
        elapsed = time.perf_counter() - started
        tenth = max(1, len(batches) // 10)
        first, last = median(batches[:tenth]), median(batches[-tenth - 1 : -1] or batches[-1:])
        ratio = last / first
        label = "keyset (the app)" if keyset else "from the lowest id (before)"
        line = (
            f"  {label:<28} {elapsed:6.1f} s, {len(batches)} batches, {first * 1000:6.2f} -> "
            f"{last * 1000:6.2f} ms/batch (first -> last tenth), ratio {ratio:.2f}"
        )
        if keyset:
            line += f" (goal <= 1.5) {verdict('prune per batch', ratio <= 1.5)}"
        print(line)


# -- the goals measured by the other scripts ---------------------------------------------------

#: Goal, script and its arguments (quick run, ``--full`` run) per companion benchmark: each
#: measures its goal against its own baseline, prints PASS or FAIL, and exits non-zero on FAIL.
COMPANIONS: dict[str, tuple[str, str, list[str], list[str]]] = {
    "limit": (
        "2. push against the wire's limit and the batched SDK",
        "push_limit.py",
        ["-n", "1000", "--rounds", "2"],
        ["-n", "2000", "--rounds", "3"],
    ),
    "webhooks": (
        "3. webhook intake against the floor view, and over a long log",
        "webhook_throughput.py",
        ["--rounds", "5", "--log-rows", "100000"],
        ["--rounds", "7", "--log-rows", "1000000"],
    ),
    "reconcile": (
        "5. reconcile memory from 10k to the largest listing",
        "reconcile_memory.py",
        ["--sizes", "10000", "100000"],
        ["--sizes", "10000", "100000", "500000"],
    ),
}


def run_companion(name: str, *, full: bool) -> None:
    """Run a companion script in its own process, print its figures, and record its verdict.

    The push and reconcile scripts take the database from ``--database`` (given the scale
    run's), the webhook script from ``PJ_TEST_DB`` as this one does.
    """
    goal, script, quick_args, full_args = COMPANIONS[name]
    arguments = full_args if full else quick_args
    if name in ("limit", "reconcile"):
        database = "postgres" if os.environ.get("PJ_TEST_DB") == "postgres" else "sqlite"
        arguments = [*arguments, "--database", database]
    print(f"\n== goal {goal} ({script} {' '.join(arguments)}) ==")
    # Each script names its own PostgreSQL database: not this run's.
    env = {k: v for k, v in os.environ.items() if k != "PJ_PG_TEST_NAME"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *arguments],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in (done.stdout + done.stderr).splitlines():
        print(f"  {line}")
    RESULTS.append((f"goal {goal.split('.')[0]} ({script})", done.returncode == 0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", help="document backlog sizes")
    parser.add_argument("--log", type=int, nargs="+", help="delivery log sizes")
    parser.add_argument("--full", action="store_true", help="10k/100k docs, 10k/1M log")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--skip",
        choices=["docs", "changelist", "log", *COMPANIONS],
        action="append",
        default=[],
        help="leave out a case (repeatable)",
    )
    args = parser.parse_args()
    docs = sorted(args.docs or ([10_000, 100_000] if args.full else [1_000, 10_000]))
    log = sorted(args.log or ([10_000, 1_000_000] if args.full else [10_000, 100_000]))
    emulator = Emulator()
    try:
        setup_django(emulator.url)
        from django.contrib.auth.models import User
        from django.db import connection
        from django.test import Client

        print(f"database: {connection.vendor}; documents {docs}; log {log}; {args.rounds} rounds")
        admin = User.objects.create_superuser("bench", "bench@example.com", "x")
        client = Client()
        client.force_login(admin)
        if "docs" not in args.skip:
            documents_case(docs, args.rounds, emulator, client)
        if "changelist" not in args.skip:
            changelist_case(log, args.rounds, client)
        if "log" not in args.skip:
            log_case(log, args.rounds, client)
        connection.creation.destroy_test_db(verbosity=0)
    finally:
        emulator.close()
    for name in COMPANIONS:
        if name not in args.skip:
            run_companion(name, full=args.full)
    failed = [name for name, ok in RESULTS if not ok]
    print("\n" + ("all goals met" if not failed else "not met: " + ", ".join(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
