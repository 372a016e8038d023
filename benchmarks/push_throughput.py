"""Documents per second: the app pushing N small documents vs the official SDK, one file per call.

Both talk to the same PromptJuggler emulator on loopback, in the same run. The app batches
``BATCH_MAX_FILES`` documents per request and streams them from storage; the official SDK's
``upload_documents`` is called once per file, the way a save signal handler would use it.

    python benchmarks/push_throughput.py             # N = 1000
    python benchmarks/push_throughput.py -n 2000 --batch 50
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SLUG_APP, SLUG_SDK = "kb_app", "kb_sdk"
API_KEY = "pj_bench_key"


_configured = False


def _django(api_url: str, batch: int) -> None:
    global _configured
    _configured = True
    sys.path.insert(0, str(ROOT))
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "promptjuggler_django",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
        STORAGES={"default": {"BACKEND": "django.core.files.storage.InMemoryStorage"}},
        TASKS={"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend"}},
        PROMPTJUGGLER={"API_KEY": API_KEY, "BASE_URL": api_url, "BATCH_MAX_FILES": batch},
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


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


def run(n: int = 1000, batch: int = 20, latency: float = 0.0) -> dict[str, Any]:
    """Push ``n`` documents with the app, then with the SDK; ``latency`` is added by the
    emulator to every upload (a round trip to a hosted API; 0 = bare loopback)."""
    proc, url = _start_emulator(latency)
    try:
        if not _configured:
            _django(url, batch)
        from django.conf import settings
        from django.core.files.base import ContentFile
        from django.db import transaction

        from promptjuggler_django import sync
        from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument

        settings.PROMPTJUGGLER = {
            **settings.PROMPTJUGGLER,
            "BASE_URL": url,
            "BATCH_MAX_FILES": batch,
        }
        KnowledgeDocument.objects.all().delete()
        kb, _ = KnowledgeBase.objects.get_or_create(slug=SLUG_APP)
        started = time.perf_counter()
        with transaction.atomic():
            for i in range(n):
                KnowledgeDocument.objects.create(
                    knowledge_base=kb, file=ContentFile(_payload(i), name=f"app-{i:05}.txt")
                )
        created = time.perf_counter() - started
        started = time.perf_counter()
        report = sync.push_due()
        app_push = time.perf_counter() - started
        assert report.synced == n and _remote_count(url, SLUG_APP) == n

        from promptjuggler import PromptJuggler

        sdk = PromptJuggler(API_KEY, base_url=url)
        started = time.perf_counter()
        for i in range(n):
            sdk.upload_documents(SLUG_SDK, [(f"sdk-{i:05}.txt", _payload(i))])
        sdk_time = time.perf_counter() - started
        assert _remote_count(url, SLUG_SDK) == n
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    app_rate, sdk_rate = n / app_push, n / sdk_time
    return {
        "n": n,
        "batch": batch,
        "latency_ms": round(latency * 1000),
        "app_requests": report.requests,
        "app_docs_per_s": round(app_rate, 1),
        "app_end_to_end_docs_per_s": round(n / (app_push + created), 1),
        "sdk_docs_per_s": round(sdk_rate, 1),
        "ratio": round(app_rate / sdk_rate, 2),
        "ratio_end_to_end": round(n / (app_push + created) / sdk_rate, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=20, help="BATCH_MAX_FILES")
    parser.add_argument(
        "--latency",
        type=float,
        action="append",
        help="seconds the emulator adds to each upload; repeat for several runs "
        "(default: 0 and 0.02)",
    )
    args = parser.parse_args()
    print(f"Pushing {args.n} small documents (~1 KB) to the emulator on loopback:")
    for latency in args.latency or [0.0, 0.02]:
        r = run(args.n, args.batch, latency)
        where = "bare loopback" if not latency else f"+{r['latency_ms']} ms per upload"
        print(f"  [{where}]")
        print(
            f"    app (batches of {r['batch']}, {r['app_requests']} requests): "
            f"{r['app_docs_per_s']:8.1f} documents/s "
            f"({r['app_end_to_end_docs_per_s']} incl. creating the rows)"
        )
        print(f"    official SDK, one file per call:   {r['sdk_docs_per_s']:8.1f} documents/s")
        print(
            f"    ratio app / SDK: {r['ratio']}x (incl. row creation: "
            f"{r['ratio_end_to_end']}x); target >= 5: {'met' if r['ratio'] >= 5 else 'not met'}"
        )


if __name__ == "__main__":
    main()
