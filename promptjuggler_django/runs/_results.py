"""Completing runs: the finished status arrives as a hint, the result is fetched afterwards.

``promptrun.finished`` / ``workflowrun.finished`` carry only ``{"id", "status"}``. The webhook
engine applies that status forward-only (:func:`promptjuggler_django.status.apply_run_status`)
and sends :data:`~promptjuggler_django.signals.run_status_changed` after commit; this module
listens and, for a finished run, enqueues a task that fetches the result with
``GET /promptruns/{id}`` or ``/workflowruns/{id}`` — never inside the webhook request. The fetch
stores the result in the same transaction as the status it read, then sends
:data:`~promptjuggler_django.signals.run_result_stored` with the stored run.

A run whose webhook never came is polled by ``promptjuggler_sync`` once it has been started for
``RUN_POLL_AFTER`` seconds; a finished run whose fetch failed is fetched again by the same command.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .. import signals, status, transitions
from ..client import PromptJugglerClient, PromptJugglerError, RemoteRun
from ..conf import pj_settings
from ..models import TERMINAL_RUN_STATUSES, Run, RunKind, RunSendState
from ..retries import backoff_delay
from ._outbox import client_for, trigger, trigger_at

logger = logging.getLogger("promptjuggler_django.runs")


@dataclass
class PollReport:
    """What :func:`poll_runs` did."""

    checked: int = 0
    status_changes: int = 0
    results_stored: int = 0
    errors: list[str] = field(default_factory=list)


def on_run_status_changed(sender: Any, run: Run, new_status: str, **kwargs: Any) -> None:
    """Receiver of ``run_status_changed``: a finished run gets its result fetched by a task."""
    if new_status in TERMINAL_RUN_STATUSES and run.result_fetched_at is None:
        trigger("fetch_result", run.pk)


def fetch_result(run_id: int, *, client: PromptJugglerClient | None = None) -> bool:
    """Fetch and store the result of a finished run; whether a result was stored.

    Idempotent: a run whose result is stored, or that has no remote id, is left alone. What the
    ``GET`` says of the status is applied forward-only first; the result is stored only once the
    run's status is terminal (a ``GET`` that still says ``pending`` stores nothing).
    """
    run = Run.objects.filter(pk=run_id, remote_id__isnull=False).first()
    if run is None or run.result_fetched_at is not None:
        return False
    try:
        remote = _get(run, client)
    except ImproperlyConfigured as exc:  # no API key: promptjuggler_sync fetches it later
        logger.warning("Run %s: its result cannot be fetched: %s", run.pk, exc)
        return False
    return _store(run, remote)


def _get(run: Run, client: PromptJugglerClient | None) -> RemoteRun:
    if client is None:
        with client_for(None) as own:
            return _get(run, own)
    if run.kind == RunKind.WORKFLOW:
        return client.get_workflow_run(run.remote_id)  # type: ignore[arg-type]
    return client.get_prompt_run(run.remote_id)  # type: ignore[arg-type]


def _store(run: Run, remote: RemoteRun) -> bool:
    now = timezone.now()
    with transaction.atomic():
        status.apply_run_status(remote_id=remote.id, status=remote.status, observed_at=now)
        locked = Run.objects.select_for_update().filter(pk=run.pk).first()
        if locked is None or locked.remote_status not in TERMINAL_RUN_STATUSES:
            return False
        if remote.status not in TERMINAL_RUN_STATUSES:
            # The webhook said finished, the GET does not yet: its result is not there to
            # store. Ask again after a backoff (and promptjuggler_sync polls it meanwhile).
            logger.info("Run %s: finished by webhook, still %r on GET.", locked.pk, remote.status)
            when = now + timedelta(seconds=backoff_delay(1))
            transaction.on_commit(partial(trigger_at, "fetch_result", when, locked.pk), robust=True)
            return False
        if remote.status != locked.remote_status:
            # A terminal status is final: keep the first one and say so, but keep the result.
            logger.warning(
                "Run %s: PromptJuggler now reports %r after %r; the first is kept.",
                locked.pk,
                remote.status,
                locked.remote_status,
            )
        fields = transitions.assign(locked, transitions.store_run_result(remote, now))
        locked.save(update_fields=fields)
        signals.send_on_commit(signals.run_result_stored, sender=Run, run=locked)
    return True


def runs_to_poll(now: Any = None) -> Any:
    """Started runs that should be finished by now but are not known to be, and finished runs
    whose result is not stored (a fetch that failed)."""
    now = now or timezone.now()
    overdue = now - timedelta(seconds=pj_settings.RUN_POLL_AFTER)
    return Run.objects.filter(
        send_state=RunSendState.STARTED, result_fetched_at__isnull=True
    ).filter(Q(remote_status__in=TERMINAL_RUN_STATUSES) | Q(sent_at__lte=overdue))


def poll_runs(*, limit: int = 500, client: PromptJugglerClient | None = None) -> PollReport:
    """``GET`` each run of :func:`runs_to_poll` (at most ``limit``) and store what it says."""
    report = PollReport()
    ids = list(runs_to_poll().order_by("sent_at", "pk").values_list("pk", flat=True)[:limit])
    if not ids:
        return report
    try:
        context = client_for(client)
    except ImproperlyConfigured as exc:
        report.errors.append(str(exc))
        return report
    with context as active:
        for run in Run.objects.filter(pk__in=ids).order_by("sent_at", "pk"):
            report.checked += 1
            before = run.remote_status
            try:
                remote = _get(run, active)
            except PromptJugglerError as exc:
                report.errors.append(f"run {run.pk}: {exc}")
                continue
            stored = _store(run, remote)
            report.results_stored += int(stored)
            now_status = Run.objects.filter(pk=run.pk).values_list("remote_status", flat=True)
            report.status_changes += int(now_status.first() != before)
    return report
