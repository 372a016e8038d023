"""Sending a run's create request, and what each answer makes of the run.

Creating a run is **not idempotent**: PromptJuggler has no idempotency key, so a create request
sent again after it may have reached the server starts a second, billed run. The rule here is
therefore narrower than the push engine's: a run goes back to ``queued`` only when the request
provably started nothing — not a byte of it left (a connect failure, a pool timeout) or
PromptJuggler answered 429. A definite refusal (401, 403, 404, 422, another 4xx) fails it.
Everything else after sending (a timeout, a reset, a 5xx, a 2xx that cannot be read) makes it
``needs_review``: a person checks PromptJuggler for the run (its ``metadata`` carries the local
id under :data:`METADATA_KEY`) and either sends it again or abandons it.

A send holds a lease on the row (``sending`` until ``next_attempt_at``); a worker that dies
mid-request leaves the lease to expire, and :func:`expire_send_leases` then marks the run
``needs_review`` — it may have been created.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from .. import transitions
from ..apply import replay_early_run_webhooks
from ..client import (
    APIError,
    PromptJugglerClient,
    PromptJugglerError,
    RateLimited,
    RequestNotSent,
    RunCreated,
)
from ..conf import pj_settings
from ..models import Run, RunKind, RunSendState
from ..retries import backoff_delay
from ._outbox import trigger, trigger_at

logger = logging.getLogger("promptjuggler_django.runs")

#: The key under which a run's local id goes into the ``metadata`` PromptJuggler stores.
METADATA_KEY = "django_run_id"

#: What a send made of a run.
STARTED, RETRYING, FAILED, NEEDS_REVIEW = "started", "retrying", "failed", "needs_review"


@dataclass
class SendReport:
    """What :func:`send_due_runs` did."""

    attempted: int = 0
    started: int = 0
    retrying: int = 0
    failed: int = 0
    needs_review: int = 0
    errors: list[str] = field(default_factory=list)

    def count(self, outcome: str | None, error: str = "") -> None:
        if outcome is None:
            return
        self.attempted += 1
        setattr(self, outcome, getattr(self, outcome) + 1)
        if error:
            self.errors.append(error)


def send_run(run_id: int, *, client: PromptJugglerClient | None = None) -> str | None:
    """Send the create request of a due ``queued`` run; what became of it (``None``: not sent).

    Idempotent: a run that is not ``queued``, not yet due, or gone is left alone, so a task
    delivered twice sends once. Without an API key nothing is claimed: the run stays queued,
    its ``last_error`` naming the setting, and goes once the key is there.
    """
    if client is None:
        try:
            own = PromptJugglerClient.from_settings()
        except ImproperlyConfigured as exc:
            Run.objects.filter(pk=run_id, send_state=RunSendState.QUEUED).update(
                **transitions.hold_run(str(exc), timezone.now())
            )
            return None
        with own:
            return send_run(run_id, client=own)
    now = timezone.now()
    token = now + timedelta(seconds=pj_settings.LEASE)
    claimed = (
        Run.objects.filter(pk=run_id, send_state=RunSendState.QUEUED)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(attempts=F("attempts") + 1, **transitions.claim_run(token, now))
    )
    if not claimed:
        return None
    run = Run.objects.get(pk=run_id)
    try:
        created = _create(client, run)
    except PromptJugglerError as exc:
        return _store_failure(run, token, exc)
    except Exception as exc:  # a bug or a setting: whether the request left is unknown
        logger.exception("Sending run %s failed unexpectedly.", run.pk)
        return _store(run, token, NEEDS_REVIEW, _review_reason(f"{type(exc).__name__}: {exc}"))
    return _store_started(run, token, created)


def _create(client: PromptJugglerClient, run: Run) -> RunCreated:
    options: dict[str, Any] = {
        "thread": run.thread,
        "priority": run.priority or None,
        "environment": run.environment or None,
        "metadata": {**run.metadata, METADATA_KEY: str(run.pk)},
    }
    if run.kind == RunKind.PROMPT:
        return client.create_prompt_run(
            run.slug, run.version, run.inputs, channel=run.channel or None, **options
        )
    return client.create_workflow_run(run.slug, run.version, run.inputs, **options)


def _store_started(run: Run, token: datetime, created: RunCreated) -> str:
    """Keep the run's id: the one thing that must never be lost once PromptJuggler has a run."""
    now = timezone.now()
    with transaction.atomic():
        # Also when the lease ran out meanwhile and the run was put in review: the answer
        # settles what the review would have had to find out.
        stored = Run.objects.filter(
            pk=run.pk,
            send_state__in=(RunSendState.SENDING, RunSendState.NEEDS_REVIEW),
            remote_id__isnull=True,
        ).update(**transitions.mark_run_started(created, now))
        if stored:
            transaction.on_commit(lambda: replay_early_run_webhooks([created.id]), robust=True)
    if not stored:
        logger.warning(
            "PromptJuggler started run %s for local run %s, which is gone or changed meanwhile.",
            created.id,
            run.pk,
        )
    return STARTED


def _store_failure(run: Run, token: datetime, exc: PromptJugglerError) -> str:
    if _nothing_started(exc) and run.attempts < pj_settings.RUN_MAX_ATTEMPTS:
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        return _store(run, token, RETRYING, str(exc), backoff_delay(run.attempts, retry_after))
    if _nothing_started(exc):
        return _store(
            run, token, FAILED, f"Gave up after {run.attempts} attempts; no run was started: {exc}"
        )
    if isinstance(exc, APIError) and 400 <= exc.status_code < 500:
        return _store(run, token, FAILED, str(exc))  # a definite refusal: nothing was started
    return _store(run, token, NEEDS_REVIEW, _review_reason(str(exc)))


def _nothing_started(exc: PromptJugglerError) -> bool:
    """Only proof counts: no byte of the request left, or a 429."""
    if isinstance(exc, RequestNotSent):
        return exc.nothing_sent
    return isinstance(exc, RateLimited)


def _review_reason(error: str) -> str:
    return (
        f"The create request may have reached PromptJuggler, so a run may exist ({error}). "
        f"Look for metadata {METADATA_KEY}; send again only if no run was created."
    )


def _store(run: Run, token: datetime, outcome: str, error: str, delay: float = 0.0) -> str:
    now = timezone.now()
    if outcome == RETRYING:
        change = transitions.schedule_run_send(error, now + timedelta(seconds=delay), now)
    elif outcome == FAILED:
        change = transitions.mark_run_failed(error, now)
    else:
        change = transitions.mark_run_needs_review(error, now)
    updated = Run.objects.filter(
        pk=run.pk, send_state=RunSendState.SENDING, next_attempt_at=token
    ).update(**change)
    if updated and outcome == RETRYING:
        when = change["next_attempt_at"]
        transaction.on_commit(lambda: trigger_at("send_run", when, run.pk), robust=True)
    return outcome


def due_runs(now: datetime | None = None) -> Any:
    """``queued`` runs whose time has come (new ones, and sends waiting out a backoff)."""
    now = now or timezone.now()
    return Run.objects.filter(send_state=RunSendState.QUEUED).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )


def send_due_runs(*, limit: int = 500, client: PromptJugglerClient | None = None) -> SendReport:
    """Send the create request of every due ``queued`` run (at most ``limit``), oldest first."""
    report = SendReport()
    ids = list(due_runs().order_by("created_at", "pk").values_list("pk", flat=True)[:limit])
    for run_id in ids:
        outcome = send_run(run_id, client=client)
        error = ""
        if outcome in (FAILED, NEEDS_REVIEW):
            error = Run.objects.filter(pk=run_id).values_list("last_error", flat=True).first() or ""
        report.count(outcome, error and f"run {run_id}: {error}")
    return report


def expire_send_leases(now: datetime | None = None) -> int:
    """Runs whose sender stopped mid-request (lease expired) go to review: a run may exist."""
    now = now or timezone.now()
    return Run.objects.filter(send_state=RunSendState.SENDING, next_attempt_at__lt=now).update(
        **transitions.mark_run_needs_review(
            _review_reason("the worker stopped while sending, its lease expired"), now
        )
    )


def resend(queryset: Any) -> int:
    """Queue runs to be sent again: a person checked that PromptJuggler has no run for them.

    Only runs in review or failed qualify (a started run has a run; a queued one is queued).
    """
    now = timezone.now()
    ids = list(
        queryset.filter(
            send_state__in=(RunSendState.NEEDS_REVIEW, RunSendState.FAILED), remote_id__isnull=True
        ).values_list("pk", flat=True)
    )
    if not ids:
        return 0
    Run.objects.filter(pk__in=ids).update(**transitions.resend_run(now))
    for run_id in ids:
        transaction.on_commit(partial(trigger, "send_run", run_id), robust=True)
    return len(ids)


def abandon(queryset: Any, reason: str) -> int:
    """Give up on runs in review: nothing will send them again (a run may still exist remotely)."""
    now = timezone.now()
    abandoned: int = queryset.filter(send_state=RunSendState.NEEDS_REVIEW).update(
        **transitions.mark_run_failed(f"Abandoned: {reason}", now)
    )
    return abandoned
