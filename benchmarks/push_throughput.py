"""Documents per second: the app pushing N small documents vs the official SDK, one file per call.

Run from the repository root:

    python3 benchmarks/push_throughput.py                 # N = 1000, default batch size
    python3 benchmarks/push_throughput.py -n 2000 --batch 50 --rounds 9
    python3 benchmarks/push_throughput.py --latency 0     # bare loopback only

Both talk to the same PromptJuggler emulator on loopback, in the same run, with the same files
(about 1 KB each). The app batches ``BATCH_MAX_FILES`` documents per request and streams them
from Django storage (``push_due``: claim, upload, store the answers, all in the database); the
official SDK's ``upload_documents`` is called once per file, the way a save signal handler would
use it, with the file's bytes already in memory. Each side builds its client before its clock
starts, and both are warmed up first.

Each round pushes N documents with each side (the order alternates); the figures are medians
over rounds and the ratio the median of the rounds' ratios, so that other load on the machine
favours neither side. By default bare loopback runs 5 rounds; a run with added latency (a round
trip to a hosted API) runs 1, as the waiting dwarfs any noise. Exits non-zero when a ratio is
under the target (5).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SLUG_APP, SLUG_SDK = "kb_app", "kb_sdk"
API_KEY = "pj_bench_key"
TARGET = 5.0

_configured = False


def _django(api_url: str) -> None:
    global _configured
    _configured = True
    from _project import configure

    configure(
        storage={"BACKEND": "django.core.files.storage.InMemoryStorage"},
        promptjuggler={"API_KEY": API_KEY, "BASE_URL": api_url},
    )


def _payload(i: int) -> bytes:
    return (f"Document {i}: a short note about nothing in particular.\n" * 20).encode()


_EMULATOR = """
import sys
from promptjuggler_django.testing import FakePromptJuggler
fake = FakePromptJuggler(sys.argv[1], knowledge_bases=sys.argv[2].split(",")).start()
if float(sys.argv[3]) > 0:
    fake.set_fault("upload", latency=float(sys.argv[3]))
print(fake.url, flush=True)
sys.stdin.read()  # serve until the benchmark closes our stdin
fake.stop()
"""


def _start_emulator(latency: float) -> tuple[subprocess.Popen[str], str]:
    """The emulator in its own process: its parsing does not compete for our GIL."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _EMULATOR, API_KEY, f"{SLUG_APP},{SLUG_SDK}", str(latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _remote_count(url: str, slug: str) -> int:
    import httpx

    answer = httpx.get(
        f"{url}/api/v1/knowledge-bases/{slug}", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    return len(answer.json()["documents"])


class _App:
    """One round of the app: create N rows (timed apart), then ``push_due``."""

    def __init__(self, url: str, n: int) -> None:
        from promptjuggler_django.client import PromptJugglerClient
        from promptjuggler_django.models import KnowledgeBase

        self.url, self.n = url, n
        self.kb, _ = KnowledgeBase.objects.get_or_create(slug=SLUG_APP)
        self.client = PromptJugglerClient.from_settings()
        self.pushed = 0
        self.requests = 0

    def round(self, r: int, n: int | None = None) -> tuple[float, float]:
        """(seconds creating the rows, seconds pushing them)."""
        n = self.n if n is None else n
        from django.core.files.base import ContentFile
        from django.db import transaction

        from promptjuggler_django import sync
        from promptjuggler_django.models import KnowledgeDocument

        with sync.suppress_sync():  # the last round's rows: gone without tombstones
            KnowledgeDocument.objects.all().delete()
        started = time.perf_counter()
        with transaction.atomic():
            for i in range(n):
                KnowledgeDocument.objects.create(
                    knowledge_base=self.kb,
                    file=ContentFile(_payload(i), name=f"app-{r:02}-{i:05}.txt"),
                )
        created = time.perf_counter() - started
        started = time.perf_counter()
        report = sync.push_due(client=self.client)
        pushed = time.perf_counter() - started
        self.pushed += n
        self.requests = report.requests
        assert report.synced == n, report
        assert _remote_count(self.url, SLUG_APP) == self.pushed
        return created, pushed

    def close(self) -> None:
        self.client.close()


class _SDK:
    """One round of the official SDK: ``upload_documents`` once per file."""

    def __init__(self, url: str, n: int) -> None:
        from promptjuggler import PromptJuggler

        self.url, self.n = url, n
        self.sdk = PromptJuggler(API_KEY, base_url=url)
        self.pushed = 0

    def round(self, r: int, n: int | None = None) -> float:
        n = self.n if n is None else n
        started = time.perf_counter()
        for i in range(n):
            self.sdk.upload_documents(SLUG_SDK, [(f"sdk-{r:02}-{i:05}.txt", _payload(i))])
        elapsed = time.perf_counter() - started
        self.pushed += n
        assert _remote_count(self.url, SLUG_SDK) == self.pushed
        return elapsed


def run(
    n: int = 1000, batch: int | None = None, latency: float = 0.0, rounds: int = 5
) -> dict[str, Any]:
    """Push ``n`` documents with the app and with the SDK, ``rounds`` times each, in turns.

    ``latency`` is added by the emulator to every upload (0 = bare loopback); ``batch``
    overrides ``BATCH_MAX_FILES`` (None keeps the app's default).
    """
    proc, url = _start_emulator(latency)
    try:
        if not _configured:
            _django(url)
        from django.conf import settings

        from promptjuggler_django.conf import pj_settings

        overrides: dict[str, Any] = {"BASE_URL": url}
        if batch is not None:
            overrides["BATCH_MAX_FILES"] = batch
        settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, **overrides}
        app, sdk = _App(url, n), _SDK(url, n)
        app_rates, e2e_rates, sdk_rates, ratios, e2e_ratios = [], [], [], [], []
        try:
            # Warm up both sides (connections, first queries, lazy imports), unmeasured.
            app.round(99, min(n, 100))
            sdk.round(99, min(n, 100))
            for r in range(rounds):
                if r % 2:
                    sdk_time = sdk.round(r)
                    created, pushed = app.round(r)
                else:
                    created, pushed = app.round(r)
                    sdk_time = sdk.round(r)
                app_rates.append(n / pushed)
                e2e_rates.append(n / (created + pushed))
                sdk_rates.append(n / sdk_time)
                ratios.append(sdk_time / pushed)
                e2e_ratios.append(sdk_time / (created + pushed))
        finally:
            app.close()
        batch_used = pj_settings.BATCH_MAX_FILES
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    return {
        "n": n,
        "batch": batch_used,
        "rounds": rounds,
        "latency_ms": round(latency * 1000),
        "app_requests": app.requests,
        "app_docs_per_s": round(statistics.median(app_rates), 1),
        "app_end_to_end_docs_per_s": round(statistics.median(e2e_rates), 1),
        "sdk_docs_per_s": round(statistics.median(sdk_rates), 1),
        "ratio": round(statistics.median(ratios), 2),
        "ratios": [round(x, 2) for x in ratios],
        "ratio_end_to_end": round(statistics.median(e2e_ratios), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="documents per side and round")
    parser.add_argument(
        "--batch", type=int, default=None, help="BATCH_MAX_FILES (default: the app's default)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds (default: 5 on bare loopback, else 1)"
    )
    parser.add_argument(
        "--latency",
        type=float,
        action="append",
        help="seconds the emulator adds to each upload; repeat for several runs "
        "(default: 0 and 0.02)",
    )
    args = parser.parse_args()
    print(f"Pushing {args.n} small documents (~1 KB) to the emulator on loopback:")
    met = True
    for latency in args.latency or [0.0, 0.02]:
        rounds = args.rounds or (1 if latency else 5)
        r = run(args.n, args.batch, latency, rounds)
        where = "bare loopback" if not latency else f"+{r['latency_ms']} ms per upload"
        print(f"  [{where}, median of {r['rounds']} rounds]")
        print(
            f"    app (batches of {r['batch']}, {r['app_requests']} requests): "
            f"{r['app_docs_per_s']:8.1f} documents/s "
            f"({r['app_end_to_end_docs_per_s']} incl. creating the rows)"
        )
        print(f"    official SDK, one file per call:   {r['sdk_docs_per_s']:8.1f} documents/s")
        ok = r["ratio"] >= TARGET
        met = met and ok
        print(
            f"    ratio app / SDK: {r['ratio']}x (rounds: {r['ratios']}; incl. row creation: "
            f"{r['ratio_end_to_end']}x); target >= {TARGET:g}: {'met' if ok else 'not met'}"
        )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
