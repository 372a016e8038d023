"""Take the screenshots the docs show, from the demo site after a few uploads finished.

``screenshot-upload.png`` (the upload page at 1040 px), ``screenshot-list-phone.png`` ("My
documents" at 390 px), ``screenshot-ask.png`` (the Ask page's answer quoting the handbook, at
1040 px) and ``screenshot-admin.png`` (the documents' changelist at 1280 px).
Runs ``manage.py demo`` on a free port with a throw-away database, drives Debian's Chromium
through Playwright, then stops the demo. Usage::

    python example_project/screenshot.py [--output-dir docs]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE_DIR = HERE / "sample_documents"
#: Uploaded and processed before the picture; then one more still processing, two more chosen.
PROCESSED = ["employee-handbook.md", "travel-policy.txt"]
PROCESSING = ["office-locations.csv"]
CHOSEN = ["onboarding-checklist.html", "expenses-faq.md"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default=str(HERE.parent / "docs"))
    args = parser.parse_args()
    out = Path(args.output_dir)

    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "EXAMPLE_DATA_DIR": data_dir}
        env.pop("PROMPTJUGGLER_API_KEY", None)
        demo = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "manage.py"),
                "demo",
                "--port",
                str(port),
                "--processing-delay",
                "1",
                "--run-delay",
                "1",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(f"{base}/accounts/login/")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1040, "height": 760})
                page.goto(f"{base}/accounts/login/")
                page.fill("#id_username", "demo")
                page.fill("#id_password", "demo")
                page.click("main button[type=submit]")
                upload = f"{base}/promptjuggler/documents/upload/"
                page.goto(upload)
                page.set_input_files("input[type=file]", [str(SAMPLE_DIR / n) for n in PROCESSED])
                page.click("main button[type=submit]")
                page.wait_for_url("**/promptjuggler/documents/")
                badges = page.locator("[data-pj-badge]")
                expect(badges).to_have_text(["Ready"] * len(PROCESSED), timeout=30_000)
                page.goto(upload)
                page.set_input_files("input[type=file]", [str(SAMPLE_DIR / n) for n in PROCESSING])
                page.click("main button[type=submit]")
                page.wait_for_url("**/promptjuggler/documents/")
                page.goto(upload)
                expect(badges.first).to_have_text("Processing")
                page.set_input_files("input[type=file]", [str(SAMPLE_DIR / n) for n in CHOSEN])
                page.mouse.move(0, 0)
                page.screenshot(path=out / "screenshot-upload.png", full_page=True)

                phone = browser.new_page(viewport={"width": 390, "height": 844})
                phone.context.add_cookies(page.context.cookies())
                phone.goto(f"{base}/promptjuggler/documents/")
                expect(phone.locator("[data-pj-badge]").first).to_be_visible()
                phone.screenshot(path=out / "screenshot-list-phone.png", full_page=True)

                ask = browser.new_page(viewport={"width": 1040, "height": 760})
                ask.context.add_cookies(page.context.cookies())
                ask.goto(f"{base}/promptjuggler/ask/")
                ask.get_by_label("Your question").fill("How many vacation days?")
                ask.get_by_role("button", name="Ask").click()
                expect(ask.locator("[data-pj-badge]")).to_have_text("Answered", timeout=30_000)
                ask.mouse.move(0, 0)
                ask.screenshot(path=out / "screenshot-ask.png", full_page=True)

                admin = browser.new_page(viewport={"width": 1280, "height": 720})
                admin.goto(f"{base}/admin/promptjuggler_django/knowledgedocument/")
                admin.fill("#id_username", "admin")
                admin.fill("#id_password", "admin")
                admin.click("#login-form [type=submit]")
                expect(admin.locator("#result_list")).to_be_visible()
                admin.click("#toggle-nav-sidebar")  # the whole changelist, without the app list
                admin.screenshot(path=out / "screenshot-admin.png")
                browser.close()
        finally:
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(timeout=10)
            except subprocess.TimeoutExpired:
                demo.kill()
    print(f"Saved the screenshots in {out}")


if __name__ == "__main__":
    main()
