"""``python example_project/manage.py demo`` from a clean data directory: it migrates, creates the
users, starts the emulator and serves the site, and a person can upload a document and watch it
become ready (the emulator's webhooks reach the demo site), then ask "How many vacation days?" and
read the answer quoting the uploaded handbook."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

MANAGE = Path(__file__).resolve().parents[2] / "example_project" / "manage.py"
SAMPLE = MANAGE.parent / "sample_documents" / "employee-handbook.md"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def demo_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = tmp_path / "demo.log"
    env = {**os.environ, "EXAMPLE_DATA_DIR": str(tmp_path / "data")}
    for name in ("PROMPTJUGGLER_API_KEY", "PROMPTJUGGLER_WEBHOOK_SECRET", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                str(MANAGE),
                "demo",
                "--port",
                str(port),
                "--processing-delay",
                "1",
                "--run-delay",
                "1",
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/accounts/login/", timeout=2) as answer:
                    assert answer.status == 200
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the demo did not start:\n{log.read_text(errors='replace')}")
                time.sleep(0.25)
        yield base, log
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.mark.browser
def test_demo_command_serves_a_working_site(chromium, demo_site):
    from playwright.sync_api import expect

    base, log = demo_site
    output = log.read_text(errors="replace")
    assert "Log in as      demo / demo" in output
    assert "bundled PromptJuggler emulator" in output
    assert "ask “How many vacation days?”" in output
    assert "whsec_" not in output and "pj_demo_" not in output  # no secret printed

    context = chromium.new_context(base_url=base)
    try:
        page = context.new_page()
        page.goto("/")
        page.fill("#id_username", "demo")
        page.fill("#id_password", "demo")
        page.click("main [type=submit]")
        expect(page.get_by_role("heading", name="My documents")).to_be_visible()
        page.get_by_role("link", name="Upload documents").click()
        page.set_input_files("input[type=file]", str(SAMPLE))
        page.click("main form [type=submit]")
        expect(page.locator(".pj-messages")).to_contain_text("1 document uploaded.")
        # Processing takes a second in the demo's emulator, then its webhook arrives.
        expect(page.locator("[data-pj-badge]")).to_have_text("Ready", timeout=20_000)

        # Ask the handbook: the demo's prompt answers from the uploaded file and quotes it.
        page.get_by_role("link", name="Ask", exact=True).click()
        page.get_by_label("Your question").fill("How many vacation days?")
        page.get_by_role("button", name="Ask").click()
        answer = page.locator("[data-pj-answer]")
        expect(answer).to_contain_text("27 vacation days", timeout=20_000)
        expect(answer).to_contain_text("employee-handbook.md")
        expect(page.locator("[data-pj-source-list] li")).to_have_text(["employee-handbook.md"])

        # The admin account works too and sees the document.
        page.click("nav button")  # log out
        page.goto("/admin/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "admin")
        page.click("#login-form [type=submit]")
        page.goto("/admin/promptjuggler_django/knowledgedocument/")
        expect(page.locator("#result_list")).to_contain_text("employee-handbook.md")
        expect(page.locator("[data-pj-remote-status]")).to_have_text("Ready")
    finally:
        context.close()


@pytest.mark.parametrize("real", [False, True])
def test_environment_switches_to_the_real_service(tmp_path: Path, real: bool):
    env = {**os.environ, "EXAMPLE_DATA_DIR": str(tmp_path)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("PROMPTJUGGLER_BASE_URL", None)
    env.pop("PROMPTJUGGLER_API_KEY", None)
    env.pop("PROMPTJUGGLER_WEBHOOK_SECRET", None)
    if real:
        env.update(PROMPTJUGGLER_API_KEY="pj_live_x", PROMPTJUGGLER_WEBHOOK_SECRET="whsec_live")
    code = (
        "from django.conf import settings as s; from promptjuggler_django.conf import pj_settings"
        " as p; print(s.USE_REAL_PROMPTJUGGLER, p.BASE_URL, p.API_KEY == 'pj_live_x')"
    )
    result = subprocess.run(
        [sys.executable, str(MANAGE), "shell", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    expected = (
        "True https://promptjuggler.com True" if real else "False http://127.0.0.1:8765 False"
    )
    assert result.stdout.strip().splitlines()[-1] == expected  # after shell's auto-import note
