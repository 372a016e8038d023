"""docs/quickstart.md followed literally: from ``django-admin startproject`` to a ready document.

The page's own code blocks run, read from the page at test time (not a copy). A block runs when
an HTML comment right before it says how, ``<!-- quickstart: ACTION [ARG] [django=V] -->``:

- ``run``: a shell script (bash, ``-eu``); variables it exports carry over to later blocks.
- ``append PATH`` / ``write PATH``: the block is added to / replaces a project file.
- ``start HOST:PORT``: a long-running command (its own terminal), waited for until the address
  accepts connections, stopped at the end.
- ``open``: the URL a reader opens in a browser; the test signs in with the superuser the page
  created, checks the page links its static files and they load, and uploads a file.
- ``shell``: Python piped into ``manage.py shell``; ``expect=WORD`` repeats it until every line
  it prints ends with WORD.
- ``django=6`` / ``django=5.2``: only on that Django version (the page's version tabs).

Everything runs in a temporary directory with the interpreter running the tests, with no
setting inherited from the suite. The only change made to the page's text: the two ports it uses
(8000 and 8765) become free ones, so that parallel runs do not collide.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import django
import httpx
import pytest

PAGE = Path(__file__).resolve().parent.parent / "docs" / "quickstart.md"
MARKER = re.compile(r"^(?P<indent> *)<!-- quickstart: (?P<spec>.+?) -->\s*$")
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>\S*)\s*$")
#: Ports the page uses, replaced by free ones.
PAGE_PORTS = ("8000", "8765")
STEP_TIMEOUT = 60


@dataclass
class Block:
    line: int
    action: str
    arg: str
    options: dict[str, str]
    code: str

    def applies(self) -> bool:
        wanted = self.options.get("django")
        if wanted is None:
            return True
        major, minor = django.VERSION[:2]
        return wanted in (str(major), f"{major}.{minor}")

    def __str__(self) -> str:
        return f"docs/quickstart.md:{self.line} ({self.action} {self.arg})".rstrip()


def marked_blocks(text: str) -> list[Block]:
    """The blocks of ``text`` that a ``quickstart:`` comment marks, in page order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    for number, line in enumerate(lines):
        marker = MARKER.match(line)
        if not marker:
            continue
        fence = FENCE.match(lines[number + 1]) if number + 1 < len(lines) else None
        assert fence and fence.group("indent") == marker.group("indent"), (
            f"docs/quickstart.md:{number + 1}: a quickstart marker must sit right above a fence"
        )
        end = next(
            i
            for i in range(number + 2, len(lines))
            if lines[i].strip() == "```" and lines[i].startswith(fence.group("indent"))
        )
        words = marker.group("spec").split()
        options = dict(word.split("=", 1) for word in words[1:] if "=" in word)
        args = [word for word in words[1:] if "=" not in word]
        code = textwrap.dedent("\n".join(lines[number + 2 : end])) + "\n"
        blocks.append(Block(number + 1, words[0], " ".join(args), options, code))
    return blocks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_address(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited early:\n{log.read_text()}"
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
            return
        time.sleep(0.1)
    raise AssertionError(f"{address} never answered:\n{log.read_text()}")


class Reader:
    """Follows the page: one shell environment, the project directory, background processes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "PROMPTJUGGLER", "PJ_", "PYTEST"))
        }
        self.env["PATH"] = os.pathsep.join([bin_dir, self.env.get("PATH", "")])
        self.env["PYTHONUNBUFFERED"] = "1"
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def run(self, block: Block) -> None:
        env_file = self.directory / ".quickstart-env"
        script = f"set -eu\n{block.code}\nenv -0 > {shlex.quote(str(env_file))}\n"
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
        )
        assert result.returncode == 0, f"{block} failed:\n{result.stdout}\n{result.stderr}"
        pairs = env_file.read_bytes().decode().split("\0")
        self.env = dict(pair.split("=", 1) for pair in pairs if "=" in pair)

    def start(self, block: Block) -> None:
        log = self.directory / f"quickstart-{len(self.processes)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {block.code.strip()}"],
                cwd=self.directory,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append((process, log))
        wait_for_address(block.arg, process, log)

    def shell(self, code: str) -> str:
        source = self.directory / ".quickstart-shell.py"
        source.write_text(code)
        with source.open("rb") as stdin:
            result = subprocess.run(
                [sys.executable, "manage.py", "shell"],
                cwd=self.directory,
                env=self.env,
                stdin=stdin,
                capture_output=True,
                text=True,
                timeout=STEP_TIMEOUT,
            )
        assert result.returncode == 0, f"manage.py shell failed:\n{result.stdout}{result.stderr}"
        return result.stdout

    def shell_until(self, block: Block) -> None:
        word = block.options["expect"]
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            output = self.shell(block.code).splitlines()
            # Django 5.2+ announces its automatic shell imports; that line is not the block's.
            lines = [line for line in output if line.strip() and "automatically" not in line]
            if lines and all(line.split()[-1] == word for line in lines):
                return
            assert time.monotonic() < deadline, f"{block} never printed {word!r}: {lines}"
            time.sleep(0.5)

    def open(self, block: Block) -> None:
        """What a reader does in the browser: sign in, see the styled page, upload a file."""
        url = block.code.strip()
        base = url.split("/promptjuggler/", 1)[0]
        assert self.superuser, f"{block}: the page created no superuser to sign in with"
        username, password = self.superuser
        with httpx.Client(base_url=base, timeout=STEP_TIMEOUT) as browser:
            login = browser.get(url, follow_redirects=True)
            assert login.status_code == 200, f"{url} led to {login.url}: {login.status_code}"
            assert "/admin/login/" in str(login.url), f"{url} led to {login.url}"
            signed_in = browser.post(
                str(login.url),
                data={
                    "username": username,
                    "password": password,
                    "csrfmiddlewaretoken": browser.cookies["csrftoken"],
                    "next": login.url.params["next"],
                },
                follow_redirects=True,
            )
            assert signed_in.url == url, f"signing in led to {signed_in.url}"
            page = signed_in.text
            for asset in re.findall(r'(?:href|src)="(/static/promptjuggler_django/[^"]+)"', page):
                assert browser.get(asset).status_code == 200, f"{asset} is not served"
            assert "/static/promptjuggler_django/documents.css" in page
            uploaded = browser.post(
                url,
                data={"csrfmiddlewaretoken": browser.cookies["csrftoken"]},
                files={"files": ("handbook.md", b"# Handbook\n\nWelcome.\n", "text/markdown")},
            )
            assert uploaded.status_code == 302, f"upload answered {uploaded.status_code}"

    #: (username, password) of the superuser the page creates.
    superuser: tuple[str, str] | None = None

    def follow(self, block: Block) -> None:
        if "createsuperuser" in block.code:
            username = re.search(r"--username (\S+)", block.code)
            password = re.search(r"DJANGO_SUPERUSER_PASSWORD=(\S+)", block.code)
            assert username and password, f"{block}: createsuperuser without --noinput's values"
            self.superuser = (username.group(1), password.group(1))
        if block.action == "run":
            self.run(block)
        elif block.action in ("append", "write"):
            path = self.directory / block.arg
            previous = path.read_text() if block.action == "append" else ""
            path.write_text(f"{previous}\n{block.code}" if previous else block.code)
        elif block.action == "start":
            self.start(block)
        elif block.action == "open":
            self.open(block)
        elif block.action == "shell" and "expect" in block.options:
            self.shell_until(block)
        elif block.action == "shell":
            self.shell(block.code)
        else:
            raise AssertionError(f"{block}: unknown quickstart action {block.action!r}")

    def stop(self) -> None:
        for process, _log in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process, _log in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Reader]:
    person = Reader(tmp_path)
    try:
        yield person
    finally:
        person.stop()


def page_blocks() -> list[Block]:
    text = PAGE.read_text(encoding="utf-8")
    for port in PAGE_PORTS:
        text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
    return [block for block in marked_blocks(text) if block.applies()]


def test_the_page_marks_the_whole_path() -> None:
    """Guards the test below: without its marks it would follow nothing."""
    blocks = page_blocks()
    codes = "\n".join(block.code for block in blocks)
    assert blocks[0].code.startswith("django-admin startproject"), blocks[0]
    for needed in ("INSTALLED_APPS", "PROMPTJUGGLER =", "promptjuggler_emulator", "runserver"):
        assert needed in codes, f"no marked block of docs/quickstart.md has {needed!r}"
    actions = {block.action for block in blocks}
    assert {"run", "append", "write", "start", "open", "shell"} <= actions
    assert sum(1 for b in blocks if b.options.get("django")) == 1, "one settings tab per version"


@pytest.mark.timeout(180)
def test_the_quickstart_works_as_written(reader: Reader) -> None:
    for block in page_blocks():
        reader.follow(block)

    # Both documents (the page's upload and the shell's) are ready, and a verified, signed
    # webhook made them so: nothing polled (promptjuggler_sync never ran).
    report = reader.shell(
        "from promptjuggler_django.models import KnowledgeDocument, WebhookDelivery\n"
        "print(sorted(KnowledgeDocument.objects.values_list('remote_status', flat=True)))\n"
        "print(WebhookDelivery.objects.filter(\n"
        "    event_type='knowledgedocument.finished', outcome='applied', status='ready'\n"
        ").count())\n"
    )
    statuses, applied = report.splitlines()[-2:]
    assert statuses == "['ready', 'ready']", report
    assert int(applied) == 2, report
    assert (reader.directory / "staticfiles" / "promptjuggler_django" / "documents.css").is_file()
