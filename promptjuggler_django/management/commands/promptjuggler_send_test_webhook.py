"""``manage.py promptjuggler_send_test_webhook URL``: post a signed delivery like PromptJuggler.

For checking a deployment end to end (reverse proxy, secret, URL) without waiting for a real
document to finish: the body has PromptJuggler's shape and is signed with a configured secret
(or ``--secret``). A random ``--id`` ends as ``unknown_object`` in the log, which proves the
path works without touching any row; pass a real remote id to move that row. A refusal is
explained from its reason code in plain words; a body that is not JSON is never printed.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import pj_settings
from ..arguments import bounded_float
from ..webhook_probe import EVENTS, build_delivery, send_delivery

#: The longest --timeout accepted, in seconds.
MAX_TIMEOUT = 600.0

#: Where the signing secret came from, as the hint of a mismatch names it.
CONFIGURED_SECRET = 'the first of settings.PROMPTJUGGLER["WEBHOOK_SECRETS"]'


class Command(BaseCommand):
    help = "Sign a PromptJuggler-shaped webhook body and POST it to URL; print the answer."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "url", help="The full webhook URL, e.g. https://site/promptjuggler/webhook/"
        )
        parser.add_argument(
            "--secret",
            help="Signing secret (default: the first configured webhook secret).",
        )
        parser.add_argument(
            "--event",
            choices=EVENTS,
            default="document",
            help="Which body to send: knowledgedocument.finished (document), "
            "knowledgebase.finished (knowledge-base) or promptrun/workflowrun.finished (run). "
            "Default: document.",
        )
        parser.add_argument("--id", dest="object_id", help="Remote id (default: a random UUID).")
        parser.add_argument("--status", help="Status to send (default: ready; completed for runs).")
        parser.add_argument(
            "--chunk-count",
            type=int,
            default=1,
            metavar="N",
            help="chunkCount in the body of a document or knowledge-base event (default: 1).",
        )
        parser.add_argument(
            "--document-count",
            type=int,
            default=1,
            metavar="N",
            help="documentCount in the body of a knowledge-base event (default: 1).",
        )
        parser.add_argument(
            "--timestamp", type=int, help="Signature time, Unix seconds (default: now)."
        )
        parser.add_argument(
            "--timeout",
            type=bounded_float(0, MAX_TIMEOUT, "seconds", open_low=True),
            default=10.0,
            help=f"Seconds, more than 0 and at most {MAX_TIMEOUT:g} (default: 10).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        secret, source = options["secret"], "--secret"
        if not secret:
            secrets = pj_settings.webhook_secrets
            if not secrets:
                raise CommandError(
                    'No secret: pass --secret or set settings.PROMPTJUGGLER["WEBHOOK_SECRETS"].'
                )
            secret, source = secrets[0], CONFIGURED_SECRET
        delivery = build_delivery(
            options["url"],
            secret,
            event=options["event"],
            object_id=options["object_id"],
            status=options["status"],
            chunk_count=options["chunk_count"],
            document_count=options["document_count"],
            timestamp=options["timestamp"],
        )
        self.stdout.write(f"POST {delivery.url}\n{delivery.body.decode()}")
        answer = send_delivery(delivery, timeout=options["timeout"], secret_source=source)
        if answer.status_code is not None:
            self.stdout.write(f"{answer.status_code} {answer.reason_phrase}")
            if answer.shown_body:
                self.stdout.write(answer.shown_body)
        if answer.problem is not None:
            raise CommandError(answer.problem)
