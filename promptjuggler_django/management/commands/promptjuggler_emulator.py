"""``manage.py promptjuggler_emulator``: a local PromptJuggler for development without an account.

Runs the same emulator the tests use as a standalone process: the knowledge-base and run API on
loopback, documents and runs that finish on a timer, signed webhooks to your site, and prompts
(``--search-prompt``) that answer questions from the uploaded documents. Needs no database.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import pj_settings
from ...testing import FakePromptJuggler
from ..arguments import bounded_float, bounded_int, pair

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_API_KEY = "pj_test_key"
#: The input a ``--search-prompt`` prompt reads its question from.
QUESTION_INPUT = "question"
#: The tag a ``--search-prompt`` prompt's version 1 carries, besides ``1`` and ``__latest__``.
SEARCH_PROMPT_TAG = "production"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class _StdoutHandler(logging.Handler):
    def __init__(self, write: Any) -> None:
        super().__init__()
        self._write = write

    def emit(self, record: logging.LogRecord) -> None:
        self._write(self.format(record))


class Command(BaseCommand):
    help = (
        "Run a local PromptJuggler emulator (knowledge-base and run API, simulated processing, "
        "signed webhooks, prompts that answer from the documents) until Ctrl-C. Defaults come "
        "from settings.PROMPTJUGGLER."
    )
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host",
            help="Interface to bind (default: BASE_URL's host if "
            f"it is loopback, else {DEFAULT_HOST}).",
        )
        parser.add_argument(
            "--port",
            type=bounded_int(0, 65535),
            help="Port to bind (default: BASE_URL's port "
            f"if BASE_URL is loopback, else {DEFAULT_PORT}; 0 picks a free one).",
        )
        parser.add_argument(
            "--api-key", help=f"API key to accept (default: API_KEY, else {DEFAULT_API_KEY!r})."
        )
        parser.add_argument(
            "--knowledge-base",
            action="append",
            dest="knowledge_bases",
            metavar="SLUG",
            help="Knowledge base to create; repeat for several (default: DEFAULT_KNOWLEDGE_BASE).",
        )
        parser.add_argument("--webhook-url", help="Where to POST finished-processing webhooks.")
        parser.add_argument(
            "--webhook-secret", help="Signing secret (default: the first of WEBHOOK_SECRETS)."
        )
        parser.add_argument(
            "--processing-delay",
            type=bounded_float(0, 86400, "seconds"),
            default=3.0,
            metavar="SECONDS",
            help="Seconds until an uploaded document is ready (sealed at half). Default: 3.",
        )
        parser.add_argument(
            "--fail-file",
            action="append",
            default=[],
            metavar="NAME",
            help="File name whose processing ends 'failed'; repeat for several.",
        )
        parser.add_argument(
            "--search-prompt",
            action="append",
            default=[],
            type=pair("SLUG", "KB_SLUG"),
            dest="search_prompts",
            metavar="SLUG=KB_SLUG",
            help=f"Publish prompt SLUG (version 1, tagged {SEARCH_PROMPT_TAG!r}) that answers its "
            f"{QUESTION_INPUT!r} input by quoting the best-matching passages of knowledge base "
            "KB_SLUG's ready documents; KB_SLUG must be one of the knowledge bases created. "
            "Repeat for several (default: none).",
        )
        parser.add_argument(
            "--run-delay",
            type=bounded_float(0, 86400, "seconds"),
            default=1.0,
            metavar="SECONDS",
            help="Seconds until a prompt or workflow run completes and its webhook is sent. "
            "Default: 1.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = self._address(options["host"], options["port"])
        secret = options["webhook_secret"] or next(iter(pj_settings.webhook_secrets), None)
        if options["webhook_url"] and not secret:
            raise CommandError(
                "--webhook-url needs a signing secret: pass --webhook-secret or set "
                'settings.PROMPTJUGGLER["WEBHOOK_SECRETS"].'
            )
        slugs = options["knowledge_bases"] or [s for s in [pj_settings.DEFAULT_KNOWLEDGE_BASE] if s]
        emulator = FakePromptJuggler(
            options["api_key"] or pj_settings.API_KEY or DEFAULT_API_KEY,
            host=host,
            port=port,
            webhook_url=options["webhook_url"],
            webhook_secret=secret if options["webhook_url"] else None,
            processing_delay=options["processing_delay"],
            knowledge_bases=slugs,
            run_delay=options["run_delay"],
        )
        emulator.fail_files(*options["fail_file"])
        for prompt, kb_slug in options["search_prompts"]:
            if kb_slug not in slugs:
                raise CommandError(
                    f"--search-prompt {prompt}={kb_slug}: no knowledge base {kb_slug!r}; "
                    f"create it with --knowledge-base {kb_slug}."
                )
            try:
                emulator.add_prompt(
                    prompt,
                    tags={SEARCH_PROMPT_TAG: 1},
                    knowledge_base=kb_slug,
                    question_input=QUESTION_INPUT,
                )
            except ValueError as exc:  # e.g. a slug with a "/"
                raise CommandError(f"--search-prompt {prompt}={kb_slug}: {exc}") from exc
        try:
            emulator.start()
        except OSError as exc:
            raise CommandError(f"Cannot listen on {host}:{port}: {exc}") from exc

        handler = _StdoutHandler(self.stdout.write)
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
        log = logging.getLogger("promptjuggler_django.emulator")
        if options["verbosity"] >= 1:
            log.addHandler(handler)
            log.setLevel(logging.DEBUG if options["verbosity"] >= 3 else logging.INFO)
        self._banner(emulator, slugs, options)

        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            emulator.stop()
            log.removeHandler(handler)
            self.stdout.write("PromptJuggler emulator stopped.")

    def _address(self, host: str | None, port: int | None) -> tuple[str, int]:
        parts = urlsplit(pj_settings.BASE_URL)
        loopback = parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK
        if host is None:
            host = parts.hostname if loopback and parts.hostname else DEFAULT_HOST
        if port is None:
            port = parts.port if loopback and parts.port else DEFAULT_PORT
        return host, port

    def _banner(self, emulator: Any, slugs: list[str], options: dict[str, Any]) -> None:
        write = self.stdout.write
        write(self.style.SUCCESS(f"PromptJuggler emulator running at {emulator.url}"))
        write(f'  Point the app at it: PROMPTJUGGLER["BASE_URL"] = "{emulator.url}"')
        source = (
            "--api-key"
            if options["api_key"]
            else (
                'PROMPTJUGGLER["API_KEY"]'
                if pj_settings.API_KEY
                else f"the default {DEFAULT_API_KEY!r}"
            )
        )
        write(f"  API key: {source}")
        for slug in slugs:
            kb = emulator.knowledge_base(slug)
            write(f"  Knowledge base {kb.slug} (id {kb.id})")
        if not slugs:
            write("  No knowledge base: pass --knowledge-base SLUG or set DEFAULT_KNOWLEDGE_BASE.")
        for prompt, kb_slug in options["search_prompts"]:
            write(
                f"  Prompt {prompt} answers its {QUESTION_INPUT!r} input from {kb_slug} "
                f"(version 1, {SEARCH_PROMPT_TAG!r}, '__latest__')"
            )
        if emulator.webhook_url:
            write(f"  Webhooks to {emulator.webhook_url}, signed with the configured secret")
        else:
            write("  Webhooks off (pass --webhook-url)")
        write(
            f"  Documents are ready {options['processing_delay']:g}s after upload, runs complete "
            f"{options['run_delay']:g}s after they start. Ctrl-C to stop."
        )
        self.stdout.flush()
