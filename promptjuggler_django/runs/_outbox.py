"""Starting runs: the row is recorded in the caller's transaction, the create request goes after.

A run is first a ``queued`` row, written in the same transaction as whatever asked for it; the
task that sends it is enqueued with ``transaction.on_commit``, so a rolled-back transaction
starts nothing and a lost task only delays the run (``promptjuggler_sync`` sends what is due).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import DEFAULT_DB_ALIAS, transaction

from ..client import PromptJugglerClient
from ..models import Run, RunKind
from ..taskqueue import enqueue, enqueue_at

#: The documented priorities; PromptJuggler's default is ``normal``.
PRIORITIES = ("onsite", "normal", "low")


@dataclass
class Triggers:
    """The tasks the runs engine enqueues, handed over by :mod:`promptjuggler_django.runs.tasks`
    (which imports the engine, so the engine cannot import it). A trigger still missing
    enqueues nothing: the run waits for ``promptjuggler_sync``."""

    #: Task taking a run id: send its create request.
    send_run: Any = None
    #: Task taking a run id: fetch and store a finished run's result.
    fetch_result: Any = None


TRIGGERS = Triggers()


def trigger(name: str, run_id: int) -> None:
    """Enqueue the ``name`` trigger for ``run_id`` now (call it after commit)."""
    task_obj = getattr(TRIGGERS, name)
    if task_obj is not None:
        enqueue(task_obj, run_id)


def trigger_at(name: str, when: datetime, run_id: int) -> None:
    """Enqueue the ``name`` trigger for ``run_id`` to run at ``when``, where the backend can
    defer; elsewhere ``promptjuggler_sync`` sends the run once it is due."""
    task_obj = getattr(TRIGGERS, name)
    if task_obj is not None:
        enqueue_at(task_obj, when, run_id)


def client_for(client: PromptJugglerClient | None) -> AbstractContextManager[PromptJugglerClient]:
    """``client`` as is, or a client from settings that is closed afterwards."""
    return nullcontext(client) if client is not None else PromptJugglerClient.from_settings()


def start_run(
    kind: str,
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
    """Record a run to start and send it after the current transaction commits."""
    _check(kind, slug, inputs, version, priority, metadata, channel)
    run = Run(
        kind=kind,
        slug=slug,
        version=str(version),
        inputs=dict(inputs),
        thread=UUID(str(thread)) if thread is not None else None,
        priority=priority,
        environment=environment,
        metadata={k: v if isinstance(v, str) else list(v) for k, v in (metadata or {}).items()},
        channel=channel,
        owner=owner,
    )
    alias = using or DEFAULT_DB_ALIAS
    run.save(using=alias)
    run_id = run.pk
    transaction.on_commit(lambda: trigger("send_run", run_id), using=alias, robust=True)
    return run


def _check(
    kind: str,
    slug: str,
    inputs: Mapping[str, str],
    version: int | str,
    priority: str,
    metadata: Mapping[str, str | Sequence[str]] | None,
    channel: str,
) -> None:
    """Refuse, before anything is recorded, what PromptJuggler would refuse with a 422."""
    if kind not in RunKind.values:
        raise ValueError(f"kind must be one of {', '.join(RunKind.values)}, not {kind!r}")
    if not isinstance(slug, str) or not slug.strip():
        raise ValueError(f"a {kind} slug is required")
    if not isinstance(inputs, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in inputs.items()
    ):
        raise TypeError("inputs must be a mapping of input names to strings")
    if isinstance(version, bool) or not (
        (isinstance(version, int) and version > 0) or (isinstance(version, str) and version)
    ):
        raise ValueError("version is a revision number, a tag or '__latest__'")
    if priority and priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}, not {priority!r}")
    for name, value in (metadata or {}).items():
        strings = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        if not isinstance(name, str) or not (isinstance(value, str) or strings):
            raise TypeError(f"metadata {name!r}: a string or a list of strings")
    if channel and kind != RunKind.PROMPT:
        raise ValueError("only prompt runs have a memory channel")
