"""``manage.py promptjuggler_emulator``: a local PromptJuggler for development without an account.

Runs the same emulator the tests use as a standalone process: the knowledge-base API on
loopback, documents that finish on a timer, signed webhooks to your site. Needs no database.
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
from ..arguments import bounded_float, bounded_int

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_API_KEY = "pj_test_key"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class _StdoutHandler(logging.Handler):
    def __init__(self, write: Any) -> None:
        super().__init__()
        self._write = write

    def emit(self, record: logging.LogRecord) -> None:
        self._write(self.format(record))


class Command(BaseCommand):
    help = (
        "Run a local PromptJuggler emulator (knowledge-base API, simulated processing, signed "
        "webhooks) until Ctrl-C. Defaults come from settings.PROMPTJUGGLER."
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
        )
        emulator.fail_files(*options["fail_file"])
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
        if emulator.webhook_url:
            write(f"  Webhooks to {emulator.webhook_url}, signed with the configured secret")
        else:
            write("  Webhooks off (pass --webhook-url)")
        write(
            f"  Documents are ready {options['processing_delay']:g}s after upload. Ctrl-C to stop."
        )
        self.stdout.flush()
