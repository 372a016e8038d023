"""``manage.py promptjuggler_doctor [--webhook-url URL]``: check a deployment, say what is wrong.

Run after deploying. It reads each knowledge base the site knows (``GET /knowledge-bases/<slug>``
with the configured key: ``DEFAULT_KNOWLEDGE_BASE`` first, then every slug in the
``KnowledgeBase`` table, or only the ``--knowledge-base`` slugs), posts a signed test delivery
to ``--webhook-url`` and reads its reason code, compares this machine's clock with
PromptJuggler's ``Date`` header, and prints one line per check: a wrong key (401/403), an
unknown slug (404), an unreachable host (named, with the setting it came from), a secret
mismatch, clock skew. It exits 1 on any problem, 0 when all is well.

It changes nothing: no row is written (the test delivery's random id ends ``unknown_object`` in
the site's delivery log) and nothing is sent to PromptJuggler but the reads.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...client import (
    AccessDenied,
    APIError,
    AuthenticationError,
    InvalidResponse,
    NotFound,
    OutcomeUnknown,
    PromptJugglerClient,
    PromptJugglerError,
    RequestNotSent,
)
from ...conf import API_KEY_ENV, pj_settings
from ...models import KnowledgeBase
from ..arguments import bounded_float, non_empty
from ..webhook_probe import build_delivery, send_delivery

#: The longest --timeout accepted, in seconds.
MAX_TIMEOUT = 600.0
DEFAULT_TIMEOUT = 10.0

#: Where the signing secret of the test delivery comes from, as a mismatch names it.
SIGNING_SECRET = 'the first of settings.PROMPTJUGGLER["WEBHOOK_SECRETS"]'
EXAMPLE_WEBHOOK_URL = "https://your.site/promptjuggler/webhook/"

OK, PROBLEM, SKIPPED = "OK", "PROBLEM", "-"


@dataclass
class Report:
    """The lines of a run, waiting to be printed, and the count of ``PROBLEM`` lines."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    problems: int = 0

    def add(self, kind: str, text: str) -> None:
        self.lines.append((kind, text))
        self.problems += kind == PROBLEM

    def take(self) -> list[tuple[str, str]]:
        lines, self.lines = self.lines, []
        return lines


class Command(BaseCommand):
    help = (
        "Check a deployment: read each configured knowledge base with the API key, post a "
        "signed test delivery to --webhook-url, and say in plain words what is wrong. Exits 1 "
        "on any problem. Changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--webhook-url",
            metavar="URL",
            help="The site's public webhook URL, as configured in PromptJuggler, e.g. "
            f"{EXAMPLE_WEBHOOK_URL} (default: the webhook is not checked).",
        )
        parser.add_argument(
            "--knowledge-base",
            action="append",
            metavar="SLUG",
            type=non_empty("name a slug, or leave the option out to check every one."),
            help="Check only this knowledge base (repeatable; default: DEFAULT_KNOWLEDGE_BASE "
            "and every slug in the KnowledgeBase table).",
        )
        parser.add_argument(
            "--timeout",
            type=bounded_float(0, MAX_TIMEOUT, "seconds", open_low=True),
            default=DEFAULT_TIMEOUT,
            metavar="SECONDS",
            help="Seconds to wait for each connection and answer, more than 0 and at most "
            f"{MAX_TIMEOUT:g} (default: {DEFAULT_TIMEOUT:g}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = Report()
        timeout = options["timeout"]
        self.stdout.write(f"PromptJuggler at {_shown_url(pj_settings.BASE_URL)} (BASE_URL):")
        check_clock(report, pj_settings.BASE_URL, timeout, pj_settings.WEBHOOK_TOLERANCE)
        check_knowledge_bases(report, knowledge_bases(options["knowledge_base"]), timeout)
        self._flush(report)
        url = options["webhook_url"]
        if url:
            self.stdout.write(f"Webhook at {url}:")
            check_webhook(report, url, timeout)
        else:
            report.add(SKIPPED, f"Webhook: not checked (pass --webhook-url {EXAMPLE_WEBHOOK_URL}).")
        self._flush(report)
        if report.problems:
            plural = "problem" if report.problems == 1 else "problems"
            raise CommandError(f"{report.problems} {plural} found.", returncode=1)
        self.stdout.write(self.style.SUCCESS("No problem found."))

    def _flush(self, report: Report) -> None:
        styles = {OK: self.style.SUCCESS, PROBLEM: self.style.ERROR}
        for kind, text in report.take():
            if kind == SKIPPED:
                self.stdout.write(f"  {text}")
            else:
                self.stdout.write(f"  {styles[kind](kind.ljust(8))} {text}")


def current_time() -> float:
    """This machine's Unix time (tests move it)."""
    return time.time()


def check_clock(report: Report, base_url: str, timeout: float, tolerance: float) -> None:
    """Compare this machine's clock with PromptJuggler's ``Date`` header.

    PromptJuggler signs deliveries with its own clock and the site refuses them beyond
    ``WEBHOOK_TOLERANCE``, so a skewed site clock refuses every delivery as ``stale``. A
    ``HEAD`` of the base URL, without the key, is enough to read the header; when no answer
    comes, the knowledge-base checks say why.
    """
    try:
        response = httpx.head(base_url, timeout=timeout)
        answered = parsedate_to_datetime(response.headers["Date"]).timestamp()
    except (httpx.HTTPError, KeyError, ValueError, TypeError):
        return
    # The header has whole seconds: PromptJuggler's time was within the second after it.
    skew = current_time() - (answered + 0.5)
    if abs(skew) > tolerance:
        direction = "ahead of" if skew > 0 else "behind"
        report.add(
            PROBLEM,
            f"this machine's clock is about {abs(skew):.0f} s {direction} PromptJuggler's (its "
            "Date header): deliveries signed by PromptJuggler are refused as stale beyond "
            f"WEBHOOK_TOLERANCE ({tolerance:g} s): check NTP (timedatectl).",
        )
    else:
        report.add(
            OK,
            f"this machine's clock is within {max(1, math.ceil(abs(skew)))} s of PromptJuggler's "
            f"(WEBHOOK_TOLERANCE {tolerance:g} s)",
        )


def _shown_url(url: str) -> str:
    """``url`` without user info (check E007 refuses it anyway; never print a password)."""
    try:
        return str(httpx.URL(url).copy_with(username=None, password=None))
    except (httpx.InvalidURL, TypeError):
        return "(an invalid URL)"


def knowledge_bases(only: list[str] | None) -> list[tuple[str, str]]:
    """``(slug, where it came from)`` for each knowledge base to check, the default first."""
    if only:
        return [(slug, "--knowledge-base") for slug in dict.fromkeys(only)]
    found: dict[str, str] = {}
    default = pj_settings.DEFAULT_KNOWLEDGE_BASE
    if default:
        found[default] = "DEFAULT_KNOWLEDGE_BASE"
    for slug in KnowledgeBase.objects.order_by("slug").values_list("slug", flat=True):
        found.setdefault(slug, "KnowledgeBase table")
    return list(found.items())


def check_knowledge_bases(report: Report, slugs: list[tuple[str, str]], timeout: float) -> None:
    """One ``GET`` per knowledge base; a refused key or an unreachable host ends the round
    (every further request would say the same)."""
    if not slugs:
        report.add(
            PROBLEM,
            "no knowledge base to check the API key against: set "
            'settings.PROMPTJUGGLER["DEFAULT_KNOWLEDGE_BASE"] (or pass --knowledge-base SLUG).',
        )
        return
    try:
        client = PromptJugglerClient.from_settings(max_retries=0, timeout=httpx.Timeout(timeout))
    except ImproperlyConfigured:
        report.add(
            PROBLEM,
            f'no API key: set settings.PROMPTJUGGLER["API_KEY"] (or the {API_KEY_ENV} '
            "environment variable).",
        )
        _not_checked(report, slugs, "no API key")
        return
    with client:
        for index, (slug, source) in enumerate(slugs):
            label = f"{slug} ({source})"
            try:
                remote = client.get_knowledge_base(slug)
            except PromptJugglerError as exc:
                report.add(PROBLEM, f"{label}: {_explain(exc, source)}")
                stop = _stops_the_round(exc)
                if stop:
                    _not_checked(report, slugs[index + 1 :], stop)
                    return
                continue
            documents = "document" if remote.document_count == 1 else "documents"
            report.add(
                OK,
                f"{label}: status {remote.status or 'unknown'}, "
                f"{remote.document_count} {documents}",
            )


def _explain(exc: PromptJugglerError, source: str) -> str:
    """What a failed read of a knowledge base means, and what to change."""
    if isinstance(exc, AuthenticationError):
        return (
            'PromptJuggler refused the API key (401): check settings.PROMPTJUGGLER["API_KEY"] '
            f"(or {API_KEY_ENV}); a revoked key needs a new one."
        )
    if isinstance(exc, AccessDenied):
        return (
            "the API key may not read this knowledge base (403): use a key of the organisation "
            "that owns it, or give this key access."
        )
    if isinstance(exc, NotFound):
        fix = {
            "DEFAULT_KNOWLEDGE_BASE": 'settings.PROMPTJUGGLER["DEFAULT_KNOWLEDGE_BASE"]',
            "KnowledgeBase table": "the slug, or delete the row",
            "--knowledge-base": "the slug",
        }[source]
        return f"PromptJuggler has no knowledge base with this slug (404): check {fix}."
    if isinstance(exc, APIError):
        if 300 <= exc.status_code < 400:
            return (
                f"BASE_URL answered {exc.status_code}, a redirect (never followed: it would "
                "carry the key elsewhere): check the scheme and host of BASE_URL."
            )
        if exc.retryable:
            return f"PromptJuggler answered {exc.status_code} ({exc.message}): try again later."
        return str(exc)
    if isinstance(exc, InvalidResponse):
        return f"BASE_URL answered, but not as PromptJuggler does: check BASE_URL. ({exc})"
    if isinstance(exc, OutcomeUnknown):
        return f"no answer in time (raise --timeout?): {exc}"
    return str(exc)  # RequestNotSent: names the host and BASE_URL


def _stops_the_round(exc: PromptJugglerError) -> str | None:
    if isinstance(exc, AuthenticationError):
        return "the API key was refused"
    if isinstance(exc, RequestNotSent):
        return "PromptJuggler could not be reached"
    return None


def _not_checked(report: Report, slugs: list[tuple[str, str]], why: str) -> None:
    for slug, source in slugs:
        report.add(SKIPPED, f"{slug} ({source}): not checked ({why})")


def check_webhook(report: Report, url: str, timeout: float) -> None:
    """Post a signed test delivery to ``url`` and read its answer."""
    secrets = pj_settings.webhook_secrets
    if not secrets:
        report.add(
            PROBLEM,
            'no webhook secret: set settings.PROMPTJUGGLER["WEBHOOK_SECRETS"] to the secret of '
            "the webhook in PromptJuggler's settings.",
        )
        return
    delivery = build_delivery(url, secrets[0])
    answer = send_delivery(
        delivery, timeout=timeout, secret_source=SIGNING_SECRET, url_source="--webhook-url"
    )
    if answer.problem is not None:
        report.add(PROBLEM, answer.problem)
    else:
        report.add(OK, f"a signed test delivery was accepted (outcome {answer.outcome})")
