"""Peak memory of a knowledge base's refresh as its listing grows: 10k to 500k documents.

Run from the repository root:

    python3 benchmarks/reconcile_memory.py                       # 10k, 100k, 500k documents
    python3 benchmarks/reconcile_memory.py --sizes 10000 50000   # quicker
    python3 benchmarks/reconcile_memory.py --database postgres   # PostgreSQL at 127.0.0.1

For each size, a setup process writes a SQLite file (or a PostgreSQL database of its own,
``bench_reconcile_<size>``, dropped at the end) with that many synced rows and a listing
naming each of them (half with a newer status, so the polling fallback applies them too); a
small server in its own process streams the listing from disk as
``GET /api/v1/knowledge-bases/<slug>``. Then, in a fresh process, ``refresh_knowledge_base``
compares them: the listing is parsed as it arrives and spooled to disk
(``client.list_knowledge_base`` and ``sync._listing.Listing``). The figure is that process's
peak resident set size (``ru_maxrss``) above its size after imports and setup. For reference
the whole-body parse (``client.get_knowledge_base``, capped at 64 MiB) is measured beside it.
Exits non-zero when the refresh's growth from the smallest to the largest size is 20 MB or more.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLUG = "kb_listing"
API_KEY = "pj_bench_key"
TARGET_GROWTH_MB = 20.0

_SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

path = sys.argv[1]

class Listing(BaseHTTPRequestHandler):
    def do_GET(self):
        with open(path, "rb") as body:
            size = body.seek(0, 2)
            body.seek(0)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            try:
                while chunk := body.read(65536):
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the whole-body parse stops reading at its cap

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Listing)
print(f"http://127.0.0.1:{server.server_port}", flush=True)
server.serve_forever()
"""


def doc_id(i: int) -> uuid.UUID:
    return uuid.UUID(int=(0x5EED << 112) + i)


def write_listing(path: Path, n: int) -> None:
    """A KnowledgeBaseResponse with ``n`` documents, written in pieces (never whole)."""
    with path.open("w") as out:
        head = {"id": str(uuid.UUID(int=1)), "status": "ready"}
        out.write(json.dumps({**head, "documentCount": n, "chunkCount": n})[:-1])
        out.write(', "documents": [')
        for i in range(n):
            doc = {
                "id": str(doc_id(i)),
                "status": "ready" if i % 2 else "sealed",
                "fileName": f"document-{i:07}.txt",
                "bytes": 1000 + i % 997,
                "mimeType": "text/plain",
            }
            out.write(("," if i else "") + json.dumps(doc))
        out.write("]}")


def database_settings(database: str) -> str | dict[str, str]:
    """A SQLite file's path as given; ``postgres:<name>`` as PostgreSQL's settings."""
    if database.startswith("postgres:"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": database.split(":", 1)[1],
            "HOST": "127.0.0.1",
            "USER": "postgres",
        }
    return database


def postgres_database(name: str, *, create: bool) -> None:
    """Drop the PostgreSQL database ``name``, then create it afresh when ``create``."""
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}"')
        if create:
            c.execute(f'CREATE DATABASE "{name}"')


def setup(database: str, n: int) -> None:
    """Rows for every listed document, synced and ``sealed`` (half will move to ``ready``)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _project import configure

    configure(
        storage={"BACKEND": "django.core.files.storage.InMemoryStorage"},
        promptjuggler={"API_KEY": API_KEY, "BASE_URL": "http://127.0.0.1:9"},
        database=database_settings(database),
    )
    from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, SyncState

    kb = KnowledgeBase.objects.create(slug=SLUG, remote_id=uuid.UUID(int=1))
    batch = []
    for i in range(n):
        batch.append(
            KnowledgeDocument(
                knowledge_base=kb,
                file=f"document-{i:07}.txt",
                file_name=f"document-{i:07}.txt",
                file_size=1000 + i % 997,
                remote_id=doc_id(i),
                remote_status="sealed",
                sync_state=SyncState.SYNCED,
            )
        )
        if len(batch) == 5000:
            KnowledgeDocument.objects.bulk_create(batch)
            batch = []
    KnowledgeDocument.objects.bulk_create(batch)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(database: str, url: str, mode: str) -> None:
    """In this fresh process: refresh (``mode`` "refresh") or the whole-body parse ("whole")."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _project import configure

    configure(
        storage={"BACKEND": "django.core.files.storage.InMemoryStorage"},
        promptjuggler={"API_KEY": API_KEY, "BASE_URL": url},
        database=database_settings(database),
    )
    from promptjuggler_django import sync
    from promptjuggler_django.client import PromptJugglerClient, PromptJugglerError
    from promptjuggler_django.models import KnowledgeBase

    kb = KnowledgeBase.objects.get(slug=SLUG)
    client = PromptJugglerClient.from_settings()
    before = rss_mb()
    result: dict[str, object] = {}
    if mode == "refresh":
        report = sync.refresh_knowledge_base(kb, client=client)
        result = {
            "error": report.error,
            "changes": report.status_changes,
            "missing": len(report.missing),
            "orphans": len(report.orphans),
        }
    else:
        try:
            remote = client.get_knowledge_base(SLUG)
            result = {"error": "", "listed": len(remote.documents)}
        except PromptJugglerError as exc:
            result = {"error": type(exc).__name__}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before": before, "peak": peak, **result}))


def run_child(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 500_000])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[0] == "setup":
            setup(args.child[1], int(args.child[2]))
            print("{}")
        else:
            measure(args.child[1], args.child[2], args.child[0])
        return 0

    growth: list[float] = []
    print(f"database: {args.database}")
    print("listed docs | body MB | refresh: peak above setup | changes | whole-body parse")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            database, listing = f"{tmp}/db-{n}.sqlite3", Path(tmp) / f"listing-{n}.json"
            if args.database == "postgres":
                database = f"postgres:bench_reconcile_{n}"
                postgres_database(database.split(":", 1)[1], create=True)
            write_listing(listing, n)
            run_child("--child", "setup", database, str(n))
            server = subprocess.Popen(
                [sys.executable, "-c", _SERVER, str(listing)], stdout=subprocess.PIPE, text=True
            )
            try:
                assert server.stdout is not None
                url = server.stdout.readline().strip()
                refresh = run_child("--child", "refresh", database, url)
                whole = run_child("--child", "whole", database, url)
            finally:
                server.terminate()
                server.wait()
                if args.database == "postgres":
                    postgres_database(database.split(":", 1)[1], create=False)
            assert not refresh["error"], refresh
            assert refresh["changes"] == n // 2 and refresh["missing"] == 0, refresh
            above = float(refresh["peak"]) - float(refresh["before"])  # type: ignore[arg-type]
            growth.append(above)
            whole_text = (
                f"{float(whole['peak']) - float(whole['before']):6.1f} MB"  # type: ignore[arg-type]
                if not whole["error"]
                else f"fails ({whole['error']})"
            )
            print(
                f"{n:>11,} | {listing.stat().st_size / 1e6:7.1f} | {above:22.1f} MB |"
                f" {refresh['changes']:>7} | {whole_text}"
            )
    delta = growth[-1] - growth[0]
    ok = delta < TARGET_GROWTH_MB
    print(
        f"refresh peak growth {args.sizes[0]:,} -> {args.sizes[-1]:,} documents: {delta:.1f} MB"
        f" (goal < {TARGET_GROWTH_MB:.0f} MB) {'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
