"""The tasks that trigger the runs engine: send a run's create request, fetch a finished result.

Thin wrappers that take a run id and are idempotent (the row says what is left to do). The
engine below does not import this module: importing it (``promptjuggler_django.runs`` always
does) hands the tasks to the engine's triggers.
"""

from __future__ import annotations

from ..taskqueue import task
from ._outbox import TRIGGERS
from ._results import fetch_result
from ._send import send_run


@task()
def send_run_task(run_id: int) -> None:
    """Send the create request of a queued run (nothing if it is not due or already sent)."""
    send_run(run_id)


@task()
def fetch_run_result_task(run_id: int) -> None:
    """Fetch and store the result of a finished run (nothing if it is stored already)."""
    fetch_result(run_id)


TRIGGERS.send_run = send_run_task
TRIGGERS.fetch_result = fetch_run_result_task
