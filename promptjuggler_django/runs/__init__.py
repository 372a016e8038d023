"""Prompt and workflow runs started from Django: recorded first, sent after commit, completed
from the signed webhook, their results fetched in the background.

The flow PromptJuggler's integration guide describes — trigger a run with inputs, store its id,
wait for the ``*.finished`` webhook, fetch the result — with the app's guarantees:

* :func:`start_prompt_run` / :func:`start_workflow_run` write a ``queued``
  :class:`~promptjuggler_django.models.Run` in the caller's transaction; a task sends the create
  request after commit.
* A create request is **never sent twice blindly**: a second one would start a second, billed
  run. Only a send that provably started nothing is retried; anything else after sending leaves
  the run ``needs_review`` for a person (:func:`resend`, :func:`abandon`; the admin's actions).
* The webhook engine applies ``promptrun.finished`` / ``workflowrun.finished`` forward-only; this
  package listens for the change and fetches the result in a task, then sends
  :data:`~promptjuggler_django.signals.run_result_stored`.
* :func:`run_runs` (part of ``promptjuggler_sync``) sends what is due, puts stale sends in
  review, and polls runs whose webhook never came.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.core.exceptions import ImproperlyConfigured

from .. import signals
from ..client import PromptJugglerClient
from ..models import Run, RunKind, RunSendState
from . import tasks  # noqa: F401  (hands the tasks to the engine's triggers)
from ._outbox import PRIORITIES, start_run
from ._results import PollReport, fetch_result, on_run_status_changed, poll_runs, runs_to_poll
from ._send import (
    METADATA_KEY,
    SendReport,
    abandon,
    due_runs,
    expire_send_leases,
    resend,
    send_due_runs,
    send_run,
)

__all__ = [
    "METADATA_KEY",
    "PRIORITIES",
    "PollReport",
    "RunsSummary",
    "SendReport",
    "abandon",
    "connect_receivers",
    "continue_run",
    "due_runs",
    "expire_send_leases",
    "fetch_result",
    "poll_runs",
    "resend",
    "run_runs",
    "runs_to_poll",
    "send_due_runs",
    "send_run",
    "start_prompt_run",
    "start_workflow_run",
]


def start_prompt_run(
    slug: str,
    inputs: Mapping[str, str],
    *,
    version: int | str = "__latest__",
    thread: UUID | str | None = None,
    priority: str = "",
    environment: str = "",
    metadata: Mapping[str, str | Sequence[str]] | None = None,
    channel: str = "",
    owner: Any = None,
    using: str | None = None,
) -> Run:
    """Record a run of prompt ``slug`` and start it after the current transaction commits.

    ``version`` is a revision number, a tag (``"production"``) or ``"__latest__"``; ``inputs``
    maps input names to strings; ``thread`` continues a conversation; ``priority`` is
    ``onsite``, ``normal`` or ``low`` (empty: PromptJuggler's default); ``metadata`` values are
    strings or lists of strings (the run's local id is added under :data:`METADATA_KEY`).
    Per-run ``envVars`` are not accepted: they may hold secrets, and task backends store task
    arguments and rows. Returns the ``queued`` row; raises ``ValueError``/``TypeError`` for what
    PromptJuggler would refuse, before anything is recorded.
    """
    return start_run(
        RunKind.PROMPT,
        slug,
        inputs,
        version=version,
        thread=thread,
        priority=priority,
        environment=environment,
        metadata=metadata,
        channel=channel,
        owner=owner,
        using=using,
    )


def start_workflow_run(
    slug: str,
    inputs: Mapping[str, str],
    *,
    version: int | str = "__latest__",
    thread: UUID | str | None = None,
    priority: str = "",
    environment: str = "",
    metadata: Mapping[str, str | Sequence[str]] | None = None,
    owner: Any = None,
    using: str | None = None,
) -> Run:
    """Record a run of workflow ``slug``; as :func:`start_prompt_run` (workflows have no
    memory channel)."""
    return start_run(
        RunKind.WORKFLOW,
        slug,
        inputs,
        version=version,
        thread=thread,
        priority=priority,
        environment=environment,
        metadata=metadata,
        owner=owner,
        using=using,
    )


def continue_run(previous: Run, inputs: Mapping[str, str], **options: Any) -> Run:
    """Record a follow-up in ``previous``'s thread: same kind, slug and version (a chat turn).

    The thread is known once ``previous`` has started; before that this raises ``ValueError``.
    ``options`` are those of :func:`start_prompt_run` (``owner`` defaults to ``previous``'s).
    """
    if previous.thread is None:
        raise ValueError("the previous run has not started yet: its thread is not known")
    options.setdefault("version", previous.version)
    options.setdefault("owner", previous.owner)
    if previous.kind == RunKind.PROMPT:
        options.setdefault("channel", previous.channel)
    return start_run(previous.kind, previous.slug, inputs, thread=previous.thread, **options)


def connect_receivers() -> None:
    """Follow run status changes to fetch finished results (called from ``AppConfig.ready``)."""
    signals.run_status_changed.connect(
        on_run_status_changed, sender=Run, dispatch_uid="promptjuggler_django.runs.fetch"
    )


@dataclass
class RunsSummary:
    """What :func:`run_runs` did, and what needs a person."""

    dry_run: bool = False
    due: int = 0
    leases_expired: int = 0
    send: SendReport = field(default_factory=SendReport)
    poll: PollReport = field(default_factory=PollReport)
    to_poll: int = 0
    needs_review: int = 0
    queued: int = 0

    @property
    def failing(self) -> int:
        """Runs in review: a person must check PromptJuggler before anything is sent again."""
        return self.needs_review

    def lines(self) -> list[str]:
        if self.dry_run:
            head = [f"Runs: {self.due} due to send, {self.to_poll} to poll (dry run)."]
        else:
            s, p = self.send, self.poll
            head = [
                f"Runs sent: {s.attempted} ({s.started} started, {s.retrying} retrying, "
                f"{s.failed} failed, {s.needs_review} need review); "
                f"{self.leases_expired} stale send(s) put in review.",
                f"Runs polled: {p.checked}; {p.status_changes} status change(s), "
                f"{p.results_stored} result(s) stored.",
            ]
            head += [f"Error: {e}" for e in (s.errors + p.errors)[:20]]
        return [
            *head,
            f"Runs left: {self.needs_review} need review, {self.queued} waiting to be sent.",
        ]


def run_runs(*, dry_run: bool = False, client: PromptJugglerClient | None = None) -> RunsSummary:
    """Finish outstanding run work: what ``promptjuggler_sync`` does for runs.

    Puts sends whose lease expired in review, sends due runs, then polls runs whose webhook is
    overdue (started ``RUN_POLL_AFTER`` seconds ago) and fetches results a failed fetch left.
    A dry run only counts.
    """
    summary = RunsSummary(dry_run=dry_run)
    if dry_run:
        summary.due = due_runs().count()
        summary.to_poll = runs_to_poll().count()
    else:
        with _client_or_none(client) as active:
            summary.leases_expired = expire_send_leases()
            summary.send = send_due_runs(client=active)
            summary.poll = poll_runs(client=active)
    summary.needs_review = Run.objects.filter(send_state=RunSendState.NEEDS_REVIEW).count()
    summary.queued = Run.objects.filter(send_state=RunSendState.QUEUED).count()
    return summary


@contextmanager
def _client_or_none(client: PromptJugglerClient | None) -> Iterator[PromptJugglerClient | None]:
    """``client``; else one client from settings for the whole run, closed afterwards; else
    ``None`` without an API key (each step then says so in its own words)."""
    if client is not None:
        yield client
        return
    try:
        own = PromptJugglerClient.from_settings()
    except ImproperlyConfigured:
        yield None
        return
    with own:
        yield own
