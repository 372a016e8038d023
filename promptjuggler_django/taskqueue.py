"""Enqueueing on the configured Tasks backend, without ever raising.

Tasks take ids only and are idempotent: the database rows are the outbox, so a lost or repeated
task delays work but never loses or duplicates it. :func:`enqueue` and :func:`enqueue_at` log and
return ``False`` when the backend is down or refuses: the state that asked for the work is already
committed and ``promptjuggler_sync`` finishes it. ``django.tasks`` is used on Django 6, the
``django-tasks`` backport on Django 5.2. The tasks themselves live with the engine they trigger
(:mod:`promptjuggler_django.sync.tasks`, :mod:`promptjuggler_django.webhooks.tasks`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

try:  # Django 6+ ships the Tasks API
    from django.tasks import task
except ImportError:  # Django 5.2: the django-tasks backport, an install requirement there
    from django_tasks import task  # type: ignore[no-redef]

from .conf import pj_settings

__all__ = ["enqueue", "enqueue_at", "task"]

logger = logging.getLogger("promptjuggler_django.tasks")


def enqueue(task_obj: Any, *args: Any) -> bool:
    """Enqueue ``task_obj`` on the configured backend and queue; log and return False on failure.

    Call it from ``transaction.on_commit``. Failure is not fatal: the state that asked for the
    work is already committed and ``promptjuggler_sync`` will finish it.
    """
    try:
        configured = task_obj.using(
            backend=pj_settings.TASK_BACKEND, queue_name=pj_settings.TASK_QUEUE
        )
        configured.enqueue(*args)
    except Exception:
        logger.exception(
            "Could not enqueue %s; promptjuggler_sync will pick the work up.",
            getattr(task_obj, "name", task_obj),
        )
        return False
    return True


def enqueue_at(task_obj: Any, when: datetime, *args: Any) -> bool:
    """Enqueue ``task_obj`` to run at ``when`` if the backend can defer; False otherwise.

    Used for pushes waiting out a backoff. Without deferral (the immediate backend, for one)
    nothing is enqueued and ``promptjuggler_sync`` picks the work up once it is due.
    """
    try:
        configured = task_obj.using(
            backend=pj_settings.TASK_BACKEND, queue_name=pj_settings.TASK_QUEUE
        )
        if not configured.get_backend().supports_defer:
            return False
        configured.using(run_after=when).enqueue(*args)
    except Exception:
        logger.exception(
            "Could not schedule %s; promptjuggler_sync will pick the work up.",
            getattr(task_obj, "name", task_obj),
        )
        return False
    return True
