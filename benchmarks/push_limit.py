"""How close the push comes to the limit of the wire, against the official SDK at its best.

Run from the repository root:

    python3 benchmarks/push_limit.py                      # PostgreSQL at 127.0.0.1, 2,000 documents
    python3 benchmarks/push_limit.py -n 5000 --rounds 5
    python3 benchmarks/push_limit.py --database sqlite    # a SQLite file instead

Every side pushes the same N documents (about 1 KB each, files on disk in a temporary
directory) in batches of ``BATCH_MAX_FILES`` (100) to the same emulator, which runs in its own
process; the rows exist before any clock starts. Per round, in turns:

* **limit**: a bare httpx client posting the same batches (the files opened from disk as
  multipart parts, the answer parsed), with no database work at all;
* **app**: ``sync.push_due``: claim the rows, stream the files from storage, store the answers;
* **SDK, batched**: the official SDK's ``upload_documents`` with 100 files per call (read into
  memory, as it needs), then the remote ids stored with one ``bulk_update`` per batch;
* **SDK, one file per call**: ``upload_documents`` per file and ``save(update_fields=…)`` per
  row, the way a save-signal handler would use it.

The figures are medians over rounds, the ratios the medians of the rounds' ratios (so other
load on the machine favours no side). Where ``/proc`` exists (Linux), each side's processor time
per batch is printed too, split between this process, the emulator and the PostgreSQL server:
the sides share the machine's cores, so what a side costs in processor time bounds its rate.

Goals: the app at 0.7 of the limit or more, and at twice the batched SDK or more; exits
non-zero when either is missed.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "pj_bench_key"
SLUGS = {"limit": "kb_limit", "app": "kb_app", "batched": "kb_sdk_batched", "loop": "kb_sdk_loop"}
BATCH = 100
GOAL_LIMIT, GOAL_SDK = 0.7, 2.0

_EMULATOR = """
import sys
from promptjuggler_django.testing import FakePromptJuggler
fake = FakePromptJuggler(sys.argv[1], knowledge_bases=sys.argv[2].split(",")).start()
print(fake.url, flush=True)
sys.stdin.read()
fake.stop()
"""


def payload(i: int) -> bytes:
    return (f"Document {i}: a short note about nothing in particular.\n" * 20).encode()


def configure(kind: str, media: str, url: str) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _project import configure as setup

    if kind == "postgres":
        import psycopg

        name = os.environ.get("PJ_PG_TEST_NAME", "bench_push_limit")
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}"')
            c.execute(f'CREATE DATABASE "{name}"')
        database: Any = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "HOST": "127.0.0.1",
            "USER": "postgres",
        }
    else:
        database = f"{media}/bench.sqlite3"
    setup(
        storage={
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": media},
        },
        promptjuggler={"API_KEY": API_KEY, "BASE_URL": url, "BATCH_MAX_FILES": BATCH},
        database=database,
    )


class Round:
    """One round's rows and files for each side, created before the clocks start."""

    def __init__(self, n: int, r: int) -> None:
        from django.core.files.base import ContentFile

        from promptjuggler_django import sync
        from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument

        self.docs: dict[str, list[Any]] = {}
        with sync.suppress_sync():
            for side, slug in SLUGS.items():
                kb, _ = KnowledgeBase.objects.get_or_create(slug=slug)
                self.docs[side] = [
                    KnowledgeDocument.objects.create(
                        knowledge_base=kb,
                        file=ContentFile(payload(i), name=f"{side}-{r:02}-{i:05}.txt"),
                        file_name=f"{side}-{r:02}-{i:05}.txt",
                    )
                    for i in range(n)
                ]


def batches(rows: list[Any]) -> list[list[Any]]:
    return [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]


def limit_side(http: Any, rows: list[Any]) -> None:
    for batch in batches(rows):
        handles = [row.file.storage.open(row.file.name, "rb") for row in batch]
        try:
            files = [
                (f"files[{k}]", (row.file_name, handle, "text/plain"))
                for k, (row, handle) in enumerate(zip(batch, handles, strict=True))
            ]
            answer = http.post(f"/api/v1/knowledge-bases/{SLUGS['limit']}/documents", files=files)
            answer.raise_for_status()
            assert len(answer.json()) == len(batch)
        finally:
            for handle in handles:
                handle.close()


def app_side(client: Any) -> None:
    from promptjuggler_django import sync

    report = sync.push_due(client=client, knowledge_base_ids=[_kb_id("app")])
    assert report.failed == 0 and report.retrying == 0, report


def batched_sdk_side(sdk: Any, rows: list[Any]) -> None:
    from django.utils import timezone

    from promptjuggler_django.models import KnowledgeDocument, SyncState

    for batch in batches(rows):
        contents = []
        for row in batch:
            with row.file.storage.open(row.file.name, "rb") as handle:
                contents.append((row.file_name, handle.read()))
        answer = sdk.upload_documents(SLUGS["batched"], contents)
        now = timezone.now()
        for row, remote in zip(batch, answer, strict=True):
            row.remote_id = uuid.UUID(str(remote.id))
            row.remote_status = str(remote.status)
            row.sync_state = SyncState.SYNCED
            row.pushed_at = now
        KnowledgeDocument.objects.bulk_update(
            batch, ["remote_id", "remote_status", "sync_state", "pushed_at"]
        )


def loop_sdk_side(sdk: Any, rows: list[Any]) -> None:
    from django.utils import timezone

    from promptjuggler_django import sync
    from promptjuggler_django.models import SyncState

    with sync.suppress_sync():
        for row in rows:
            with row.file.storage.open(row.file.name, "rb") as handle:
                (remote,) = sdk.upload_documents(SLUGS["loop"], [(row.file_name, handle.read())])
            row.remote_id = uuid.UUID(str(remote.id))
            row.remote_status = str(remote.status)
            row.sync_state = SyncState.SYNCED
            row.pushed_at = timezone.now()
            row.save(update_fields=["remote_id", "remote_status", "sync_state", "pushed_at"])


class ProcessorTime:
    """Processor seconds spent so far by this process, the emulator and the database server."""

    PARTS = ("this process", "emulator", "PostgreSQL")

    def __init__(self, emulator_pid: int) -> None:
        self.emulator_pid = emulator_pid
        self.available = Path("/proc/self/stat").exists()
        self.ticks = os.sysconf("SC_CLK_TCK") if self.available else 1

    def _seconds(self, pid: int | str) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # the process ended meanwhile
            return 0.0
        return (int(fields[11]) + int(fields[12])) / self.ticks  # user + system

    def _postgres(self) -> float:
        total = 0.0
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    name = (entry / "comm").read_text().strip()
                except OSError:
                    continue
                if name.startswith("postgres"):
                    total += self._seconds(entry.name)
        return total

    def read(self) -> tuple[float, ...]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return (own.ru_utime + own.ru_stime, self._seconds(self.emulator_pid), self._postgres())


_KB_IDS: dict[str, int] = {}


def _kb_id(side: str) -> int:
    from promptjuggler_django.models import KnowledgeBase

    if side not in _KB_IDS:
        _KB_IDS[side] = KnowledgeBase.objects.get(slug=SLUGS[side]).pk
    return _KB_IDS[side]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="documents per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    args = parser.parse_args()

    emulator = subprocess.Popen(
        [sys.executable, "-c", _EMULATOR, API_KEY, ",".join(SLUGS.values())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert emulator.stdout is not None and emulator.stdin is not None
    url = emulator.stdout.readline().strip()
    try:
        with tempfile.TemporaryDirectory() as media:
            configure(args.database, media, url)
            return run(args, url, ProcessorTime(emulator.pid))
    finally:
        emulator.stdin.close()
        emulator.wait(timeout=30)


def run(args: argparse.Namespace, url: str, clock: ProcessorTime) -> int:
    import httpx
    from promptjuggler import PromptJuggler

    from promptjuggler_django.client import PromptJugglerClient

    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"})
    client = PromptJugglerClient.from_settings()
    sdk = PromptJuggler(API_KEY, base_url=url)
    sides = {
        "limit": lambda rows: limit_side(http, rows),
        "app": lambda rows: app_side(client),
        "batched": lambda rows: batched_sdk_side(sdk, rows),
        "loop": lambda rows: loop_sdk_side(sdk, rows),
    }
    warm = Round(BATCH, 99)
    for side, push in sides.items():
        push(warm.docs[side])
    rates: dict[str, list[float]] = {side: [] for side in sides}
    #: Processor milliseconds per batch of each side, by part (``ProcessorTime.PARTS``).
    spent: dict[str, list[tuple[float, ...]]] = {side: [] for side in sides}
    per_batch = 1000 * BATCH / args.n
    for r in range(args.rounds):
        prepared = Round(args.n, r)
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for side in order:
            before = clock.read()
            started = time.perf_counter()
            sides[side](prepared.docs[side])
            rates[side].append(args.n / (time.perf_counter() - started))
            after = clock.read()
            used = (b - a for a, b in zip(before, after, strict=True))
            spent[side].append(tuple(seconds * per_batch for seconds in used))
    http.close()
    client.close()

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True))

    med = {side: statistics.median(values) for side, values in rates.items()}
    print(
        f"database: {args.database}; files on disk; {args.n} documents per side, "
        f"batches of {BATCH}, {args.rounds} rounds"
    )
    labels = {
        "limit": "limit: bare httpx, same batches, no database",
        "app": "app: push_due",
        "batched": "official SDK, 100 files per call + bulk_update",
        "loop": "official SDK, one file per call + save()",
    }
    for side, label in labels.items():
        print(f"  {label:<48} {med[side]:8.0f} docs/s")
    to_limit, to_sdk = ratio("app", "limit"), ratio("app", "batched")
    ok_limit, ok_sdk = to_limit >= GOAL_LIMIT, to_sdk >= GOAL_SDK
    print(f"  app / limit: {to_limit:.2f} (goal >= {GOAL_LIMIT}) {'PASS' if ok_limit else 'FAIL'}")
    print(f"  app / SDK batched: {to_sdk:.2f} (goal >= {GOAL_SDK}) {'PASS' if ok_sdk else 'FAIL'}")
    print(f"  app / SDK one file per call: {ratio('app', 'loop'):.2f}")
    if clock.available:
        parts = ", ".join(clock.PARTS)
        print(f"processor time per batch of {BATCH} (ms, medians: {parts}, total):")
        for side in ("limit", "app", "batched"):
            by_part = [statistics.median(values) for values in zip(*spent[side], strict=True)]
            figures = "  ".join(f"{value:6.1f}" for value in by_part)
            print(f"  {labels[side].split(':')[0]:<48} {figures}  {sum(by_part):6.1f}")
    return 0 if ok_limit and ok_sdk else 1


if __name__ == "__main__":
    sys.exit(main())
