"""Peak memory of pushing one large S3-stored document: the app's worker vs the official SDK.

Both run in a fresh subprocess against the same moto S3 server and PromptJuggler emulator
(loopback), and report their peak RSS (``VmHWM``). The app streams the object from S3 into
the multipart request in chunks; the SDK needs the file as ``bytes`` and then builds the whole
request body again.

    python benchmarks/push_memory_s3.py            # 200 MB
    python benchmarks/push_memory_s3.py --size-mb 50
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "pj-bench"
KEY = "media/promptjuggler/large-document.txt"
SLUG = "kb_bench"
API_KEY = "pj_bench_key"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
REGION = "us-east-1"
LIMIT_MB = 100


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: after fork + exec, ru_maxrss still reports the parent's peak
    # (here the test process holding moto's copy of the object).
    return _status_mb("VmHWM")


def _current_rss_mb() -> float:
    return _status_mb("VmRSS")


# -- workers (run in a subprocess) -----------------------------------------------------------


def app_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Configure a minimal Django project on S3 and push the document with the sync engine."""
    from _project import configure

    configure(
        storage={
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": config["s3"],
                "access_key": CREDENTIALS["aws_access_key_id"],
                "secret_key": CREDENTIALS["aws_secret_access_key"],
                "region_name": REGION,
                "location": "media",
            },
        },
        promptjuggler={"API_KEY": API_KEY, "BASE_URL": config["api"], "READ_TIMEOUT": 120.0},
    )
    from promptjuggler_django import sync
    from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument

    kb = KnowledgeBase.objects.create(slug=SLUG)
    doc = KnowledgeDocument(knowledge_base=kb)
    doc.file.name = KEY.removeprefix("media/")  # already in the bucket
    doc.save()
    before = _current_rss_mb()
    started = time.perf_counter()
    report = sync.push_documents([doc.pk])
    elapsed = time.perf_counter() - started
    doc.refresh_from_db()
    return {
        "synced": report.synced,
        "remote_id": str(doc.remote_id),
        "rss_before_push_mb": round(before, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "seconds": round(elapsed, 2),
    }


def sdk_worker(config: dict[str, Any]) -> dict[str, Any]:
    """The official SDK: it takes ``bytes``, so the object is read whole first."""
    import boto3
    from promptjuggler import PromptJuggler

    s3 = boto3.client("s3", endpoint_url=config["s3"], region_name=REGION, **CREDENTIALS)
    before = _current_rss_mb()
    started = time.perf_counter()
    data = s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read()
    answer = PromptJuggler(API_KEY, base_url=config["api"]).upload_documents(
        SLUG, [("large-document.txt", data)]
    )
    elapsed = time.perf_counter() - started
    return {
        "synced": len(answer),
        "remote_id": str(answer[0].id),
        "rss_before_push_mb": round(before, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "seconds": round(elapsed, 2),
    }


WORKERS = {"app": app_worker, "sdk": sdk_worker}


def run_worker(mode: str, config: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", mode, json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- the run ---------------------------------------------------------------------------------


def _write_object(s3: Any, size: int) -> str:
    """Upload ``size`` bytes of text (written to a temp file, never held in memory)."""
    digest = hashlib.sha256()
    line = b"PromptJuggler streams this document from S3 in small chunks. " * 16 + b"\n"
    with tempfile.NamedTemporaryFile(suffix=".txt") as fh:
        written = 0
        while written < size:
            piece = line[: size - written]
            fh.write(piece)
            digest.update(piece)
            written += len(piece)
        fh.flush()
        s3.upload_file(fh.name, BUCKET, KEY)
    return digest.hexdigest()


def measure(size_mb: int = 200, *, include_sdk: bool = True) -> dict[str, Any]:
    """Run the app worker (and the SDK) once; returns both results and the ratio."""
    import boto3
    from moto.server import ThreadedMotoServer

    sys.path.insert(0, str(ROOT))
    from promptjuggler_django.testing import FakePromptJuggler

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3_url = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name=REGION, **CREDENTIALS)
        s3.create_bucket(Bucket=BUCKET)
        sha = _write_object(s3, size_mb * 1024 * 1024)
        with FakePromptJuggler(API_KEY, knowledge_bases=[SLUG]) as fake:
            config = {"s3": s3_url, "api": fake.url}
            results: dict[str, Any] = {"size_mb": size_mb, "limit_mb": LIMIT_MB}
            for mode in ["app", "sdk"] if include_sdk else ["app"]:
                result = run_worker(mode, config)
                stored = fake.document(result["remote_id"])
                result["content_ok"] = stored is not None and stored.sha256 == sha
                results[mode] = result
    finally:
        server.stop()
    if include_sdk:
        results["ratio"] = round(results["sdk"]["peak_rss_mb"] / results["app"]["peak_rss_mb"], 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, config = args.worker
        print(json.dumps(WORKERS[mode](json.loads(config))))
        return
    r = measure(args.size_mb)
    app, sdk = r["app"], r["sdk"]
    print(f"Pushing one {r['size_mb']} MB document stored on S3 (moto), peak RSS per process:")
    print(
        f"  app worker (streams S3 -> multipart): {app['peak_rss_mb']:7.1f} MB "
        f"(before the push {app['rss_before_push_mb']} MB, {app['seconds']} s, "
        f"content {'ok' if app['content_ok'] else 'WRONG'})"
    )
    print(
        f"  official SDK (bytes in memory):       {sdk['peak_rss_mb']:7.1f} MB "
        f"(before the push {sdk['rss_before_push_mb']} MB, {sdk['seconds']} s, "
        f"content {'ok' if sdk['content_ok'] else 'WRONG'})"
    )
    print(
        f"  ratio SDK / app: {r['ratio']}x; app under {LIMIT_MB} MB: "
        f"{'yes' if app['peak_rss_mb'] < LIMIT_MB else 'NO'}"
    )


if __name__ == "__main__":
    main()
