"""Peak memory of an upload: promptjuggler_django's client against the official Python SDK.

Run from the repository root:

    python3 benchmarks/client_memory.py                 # 200 MB and 400 MB files
    python3 benchmarks/client_memory.py --sizes 50 100  # quicker

It writes the files to a temporary directory, starts the bundled PromptJuggler emulator in another
process (``manage.py promptjuggler_emulator``, so the server's memory is not counted), then runs
each upload in a fresh Python process and reads that process's peak RSS (``ru_maxrss``) when it
ends. A "baseline" process that only imports the same modules shows what Python itself costs.
The client should stay under 100 MB and not grow with the file; the SDK holds the file and the
whole request body in memory, so it grows by about twice the file size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "pj_bench_key"
SLUG = "kb_bench"
MB = 1024 * 1024
TARGET_MB = 100


# -- the measured child processes -------------------------------------------------------------


def child(kind: str, url: str, path: str) -> None:
    """Run one upload (or none, for a baseline) and print this process's figures as JSON."""
    started = time.monotonic()
    stored = 0  # the bytes the server says it received
    if kind in ("ours", "baseline-ours"):
        from promptjuggler_django.client import PromptJugglerClient, UploadFile

        if kind == "ours":
            client = PromptJugglerClient(api_key=API_KEY, base_url=url)
            with client, UploadFile.from_path(path) as upload:
                (doc,) = client.upload_documents(SLUG, [upload])
                stored = doc.bytes or 0
    else:
        import promptjuggler

        if kind == "sdk":
            sdk = promptjuggler.PromptJuggler(API_KEY, base_url=url)
            # The SDK takes (file name, bytes): the whole file must be read first.
            data = Path(path).read_bytes()
            (doc,) = sdk.upload_documents(SLUG, [(os.path.basename(path), data)])
            stored = doc.bytes
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "peak_mb": peak_kb / 1024,
                "seconds": time.monotonic() - started,
                "stored": stored,
            }
        )
    )


def measure(kind: str, url: str, path: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--url", url, "--file", path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{kind} upload failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- the driver ------------------------------------------------------------------------------


def make_file(directory: Path, size_mb: int) -> Path:
    """A text file of ``size_mb`` MiB (a supported type, so the emulator accepts it)."""
    path = directory / f"bench-{size_mb}mb.txt"
    block = (b"The quick brown fox jumps over the lazy dog. 0123456789\n" * 20000)[:MB]
    with open(path, "wb") as f:
        for _ in range(size_mb):
            f.write(block)
    return path


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    """``promptjuggler_emulator`` on a free loopback port; returns the process and its URL."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "promptjuggler_emulator",
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "--knowledge-base",
            SLUG,
            "--processing-delay",
            "3600",
            "--verbosity",
            "0",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = re.search(r"running at (http://\S+)", line)
        if match:
            return proc, match.group(1)
    proc.kill()
    raise SystemExit("the emulator did not start (is promptjuggler_django importable?)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 400], help="file sizes, MiB")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.file)
        return

    proc, url = start_emulator()
    try:
        with tempfile.TemporaryDirectory(prefix="pj-bench-") as tmp:
            baseline_ours = measure("baseline-ours", url, "")["peak_mb"]
            baseline_sdk = measure("baseline-sdk", url, "")["peak_mb"]
            rows = []
            for size in args.sizes:
                path = make_file(Path(tmp), size)
                ours = measure("ours", url, str(path))
                sdk = measure("sdk", url, str(path))
                assert ours["stored"] == sdk["stored"] == size * MB, (ours, sdk)
                rows.append((size, ours, sdk))
                path.unlink()
    finally:
        proc.terminate()
        proc.wait(10)

    print(f"Peak RSS of one upload, each in a fresh process (emulator at {url})")
    print(f"baseline, imports only: client {baseline_ours:.1f} MB, SDK {baseline_sdk:.1f} MB\n")
    print(
        f"{'file':>8} | {'client peak':>11} | {'SDK peak':>9} | {'SDK / client':>12} |"
        f" {'client s':>8} | {'SDK s':>6}"
    )
    print("-" * 70)
    for size, ours, sdk in rows:
        print(
            f"{size:>5} MB | {ours['peak_mb']:>8.1f} MB | {sdk['peak_mb']:>6.1f} MB |"
            f" {sdk['peak_mb'] / ours['peak_mb']:>11.1f}x | {ours['seconds']:>8.2f} |"
            f" {sdk['seconds']:>6.2f}"
        )
    peaks = [ours["peak_mb"] for _, ours, _ in rows]
    growth = max(peaks) - min(peaks)
    ok = max(peaks) < TARGET_MB and growth < 10
    print(
        f"\nclient: max peak {max(peaks):.1f} MB (target < {TARGET_MB} MB), "
        f"growth across sizes {growth:.1f} MB (target: flat) -> {'OK' if ok else 'MISSED'}"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
