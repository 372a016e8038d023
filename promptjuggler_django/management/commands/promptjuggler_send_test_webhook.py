"""``manage.py promptjuggler_send_test_webhook URL``: post a signed delivery like PromptJuggler.

For checking a deployment end to end (reverse proxy, secret, URL) without waiting for a real
document to finish: the body has PromptJuggler's shape and is signed with a configured secret
(or ``--secret``). A random ``--id`` ends as ``unknown_object`` in the log, which proves the
path works without touching any row; pass a real remote id to move that row.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import pj_settings
from ...signature import HEADER, sign
from ..arguments import bounded_float

#: The longest --timeout accepted, in seconds.
MAX_TIMEOUT = 600.0

#: The body PromptJuggler sends for each event (no event name is sent: the shape tells).
EVENTS = ("document", "knowledge-base", "run")
DEFAULT_STATUS = {"document": "ready", "knowledge-base": "ready", "run": "completed"}


def build_body(
    event: str,
    object_id: str,
    status: str,
    *,
    chunk_count: int = 1,
    document_count: int = 1,
) -> dict[str, Any]:
    """The JSON body of ``event`` as PromptJuggler shapes it."""
    if event == "document":
        return {"id": object_id, "status": status, "chunkCount": chunk_count}
    if event == "knowledge-base":
        return {
            "id": object_id,
            "status": status,
            "documentCount": document_count,
            "chunkCount": chunk_count,
        }
    return {"id": object_id, "status": status}


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
        secret = options["secret"]
        if not secret:
            secrets = pj_settings.webhook_secrets
            if not secrets:
                raise CommandError(
                    'No secret: pass --secret or set settings.PROMPTJUGGLER["WEBHOOK_SECRETS"].'
                )
            secret = secrets[0]
        event = options["event"]
        object_id = options["object_id"] or str(uuid.uuid4())
        status = options["status"] or DEFAULT_STATUS[event]
        body = json.dumps(
            build_body(
                event,
                object_id,
                status,
                chunk_count=options["chunk_count"],
                document_count=options["document_count"],
            ),
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "promptjuggler-django test webhook",
            HEADER: sign(body, secret, options["timestamp"]),
        }
        self.stdout.write(f"POST {options['url']}\n{body.decode()}")
        try:
            response = httpx.post(
                options["url"], content=body, headers=headers, timeout=options["timeout"]
            )
        except httpx.HTTPError as exc:
            raise CommandError(f"No answer from {options['url']}: {exc}") from None
        self.stdout.write(
            f"{response.status_code} {response.reason_phrase}\n{response.text[:2000]}"
        )
        if not response.is_success:
            raise CommandError(f"The endpoint answered {response.status_code}.")
