"""``manage.py demo``: migrate, create the demo users, start the emulator and serve the site.

Without ``PROMPTJUGGLER_API_KEY`` and ``PROMPTJUGGLER_WEBHOOK_SECRET`` it runs the bundled
PromptJuggler emulator in this process, wired to this site's webhook URL with a freshly
generated key and secret, so uploads go ``queued`` → ``processing`` → ``ready`` with no account,
and publishes the Ask page's prompt (``ASK_PROMPT``) on it: it answers from the knowledge base's
ready documents, quoting them by file name. With both set it talks to the real service instead.
"""

from __future__ import annotations

import io
import secrets
import socket
import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import reverse

from promptjuggler_django.conf import pj_settings
from promptjuggler_django.models import KnowledgeBase

#: Demo accounts, reset to these passwords on every start (a local demo only).
DEMO_USER = ("demo", "demo")
DEMO_ADMIN = ("admin", "admin")
#: The sample document that answers the demo's question.
HANDBOOK = "example_project/sample_documents/employee-handbook.md"


class Command(BaseCommand):
    help = "Set up and serve the example site, on the PromptJuggler emulator unless keys are set."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Address to serve on.")
        parser.add_argument("--port", type=int, default=8000, help="Port to serve on.")
        parser.add_argument(
            "--processing-delay",
            type=float,
            default=3.0,
            help="Seconds the emulator takes to process a document (default 3).",
        )
        parser.add_argument(
            "--run-delay",
            type=float,
            default=2.0,
            help="Seconds the emulator takes to answer a question (default 2).",
        )
        parser.add_argument(
            "--setup-only",
            action="store_true",
            help="Migrate and create the users, then exit without serving.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = options["host"], options["port"]
        if not options["setup_only"]:
            _check_port_free(host, port)

        call_command("migrate", interactive=False, verbosity=0)
        slug = pj_settings.DEFAULT_KNOWLEDGE_BASE
        KnowledgeBase.objects.get_or_create(slug=slug, defaults={"name": "Demo handbook"})
        self._ensure_users()
        if options["setup_only"]:
            self.stdout.write(self.style.SUCCESS("Demo database ready."))
            return

        emulator = None
        if settings.USE_REAL_PROMPTJUGGLER:
            mode = f"the real PromptJuggler at {pj_settings.BASE_URL}"
        else:
            emulator = self._start_emulator(
                slug, port, options["processing_delay"], options["run_delay"]
            )
            mode = f"the bundled PromptJuggler emulator at {emulator.url}"
        self._catch_up()

        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        ask = (
            [f"  Ask:           {base}{reverse('promptjuggler_django:ask')}"]
            if pj_settings.ASK_PROMPT
            else []
        )
        self.stdout.write(
            "\n".join(
                [
                    "",
                    self.style.SUCCESS("PromptJuggler demo site"),
                    f"  Site:          {base}/",
                    f"  My documents:  {base}{reverse('promptjuggler_django:document_list')}",
                    *ask,
                    f"  Admin:         {base}/admin/",
                    f"  REST API:      {base}/api/documents/",
                    f"  Log in as      {DEMO_USER[0]} / {DEMO_USER[1]}   "
                    f"(admin: {DEMO_ADMIN[0]} / {DEMO_ADMIN[1]})",
                    f"  Documents go to knowledge base {slug!r} on {mode}.",
                    *(
                        [
                            f"  Try it: upload {HANDBOOK}, then ask "
                            "“How many vacation days?”: the answer quotes the file."
                        ]
                        if ask
                        else []
                    ),
                    "",
                ]
            )
        )
        if emulator is None:
            self.stdout.write(
                "  Point PromptJuggler's webhook at this site's public URL + "
                f"{reverse('promptjuggler_django:webhook')} (or run promptjuggler_sync to poll).\n"
            )
        try:
            call_command("runserver", f"{host}:{port}", use_reloader=False)
        finally:
            if emulator is not None:
                emulator.stop()

    def _ensure_users(self) -> None:
        users = get_user_model()
        for (username, password), staff in ((DEMO_USER, False), (DEMO_ADMIN, True)):
            user, _ = users.objects.get_or_create(username=username)
            user.is_staff = user.is_superuser = staff
            user.set_password(password)
            user.save()

    def _start_emulator(self, slug: str, port: int, delay: float, run_delay: float) -> Any:
        from promptjuggler_django.testing import FakePromptJuggler

        api_key = "pj_demo_" + secrets.token_urlsafe(24)
        webhook_secret = "whsec_" + secrets.token_urlsafe(32)
        webhook_url = f"http://127.0.0.1:{port}{reverse('promptjuggler_django:webhook')}"
        emulator = FakePromptJuggler(
            api_key,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            processing_delay=delay,
            run_delay=run_delay,
        )
        # A stable id, so the knowledge base's id learned in an earlier run stays right.
        emulator.create_knowledge_base(slug, id=uuid.uuid5(uuid.NAMESPACE_URL, f"demo/{slug}"))
        if pj_settings.ASK_PROMPT:
            # Like a prompt with PromptJuggler's knowledge-search tool: it answers from the
            # documents of the knowledge base that are ready, quoting them with their names.
            emulator.add_prompt(
                pj_settings.ASK_PROMPT,
                knowledge_base=slug,
                question_input=pj_settings.ASK_INPUT,
            )
        emulator.start()
        # pj_settings reads settings.PROMPTJUGGLER on every access: the server started below
        # (in this process) sees the emulator's URL, key and secret.
        settings.PROMPTJUGGLER.update(
            {"API_KEY": api_key, "WEBHOOK_SECRETS": [webhook_secret], "BASE_URL": emulator.url}
        )
        return emulator

    def _catch_up(self) -> None:
        """Bring documents from earlier runs up to date (the emulator forgets between runs)."""
        if "promptjuggler_sync" not in get_commands():
            return
        report = io.StringIO()
        try:
            call_command("promptjuggler_sync", verbosity=0, stdout=report, stderr=report)
        except (CommandError, SystemExit):
            self.stderr.write("promptjuggler_sync left work for later:\n" + report.getvalue())


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CommandError(f"Cannot serve on {host}:{port} ({exc}); try --port.") from exc
