"""Enqueueing on the configured Tasks backend, without ever raising.

Tasks take ids only and are idempotent: the database rows are the outbox, so a lost or repeated
task delays work but never loses or duplicates it. :func:`enqueue` and :func:`enqueue_at` log and
return ``False`` when the backend is down or refuses: the state that asked for the work is already
committed and ``promptjuggler_sync`` finishes it. ``django.tasks`` is used on Django 6, the
``django-tasks`` backport on Django 5.2. The tasks themselves live with the engine they trigger
(:mod:`promptjuggler_django.sync.tasks`, :mod:`promptjuggler_django.webhooks.tasks`).

No task is deferred further ahead than ``TASK_DEFER_MAX``: a broker may hold a deferred task
for a limited time only. A Celery worker keeps a task with an ETA unacknowledged until it runs,
and RabbitMQ closes the channel of a consumer that holds a message longer than its
``consumer_timeout`` (30 minutes by default), while a push may wait out an hour's backoff
(``PUSH_BACKOFF_MAX``). A longer wait is relayed: :func:`relay_deferred_task` is deferred by the
cap, and enqueues the real task when that is close enough, so no task ever runs early.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

try:  # Django 6+ ships the Tasks API
    from django.tasks import task as define_task
    from django.tasks import task_backends
except ImportError:  # Django 5.2: the django-tasks backport, an install requirement there
    from django_tasks import task as define_task  # type: ignore[no-redef]
    from django_tasks import task_backends  # type: ignore[assignment]

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.module_loading import import_string

from .conf import pj_settings

__all__ = [
    "UnusableTask",
    "enqueue",
    "enqueue_at",
    "relay_deferred_task",
    "task",
    "task_backends",
]

logger = logging.getLogger("promptjuggler_django.tasks")


def task() -> Callable[[Callable[..., Any]], Any]:
    """``@task()`` that a Tasks configuration cannot break at import.

    The Tasks API validates a task when it is defined, on the ``default`` backend and queue. A
    project whose ``default`` backend lists other ``QUEUES`` would otherwise fail every import of
    the app's task modules, ``manage.py check`` included. The task is then defined on the
    configured ``TASK_BACKEND`` and ``TASK_QUEUE``; if those are wrong too it becomes an
    :class:`UnusableTask`, :func:`enqueue` logs why, and system checks ``E009``/``E010`` say
    which setting to fix.
    """

    def define(func: Callable[..., Any]) -> Any:
        try:
            return define_task()(func)
        except Exception as default_error:
            try:
                return define_task(
                    backend=pj_settings.TASK_BACKEND, queue_name=pj_settings.TASK_QUEUE
                )(func)
            except Exception:
                return UnusableTask(func, str(default_error))

    return define


class UnusableTask:
    """A task the configured Tasks backend refused to define; using it raises."""

    def __init__(self, func: Callable[..., Any], reason: str) -> None:
        self.func = func
        self.name = func.__name__
        self.reason = reason

    def using(self, **kwargs: Any) -> UnusableTask:
        raise ImproperlyConfigured(
            f"The task {self.name} could not be defined on the Tasks backend ({self.reason}); "
            "run manage.py check for the setting to fix."
        )

    enqueue = using

    def __repr__(self) -> str:
        return f"<UnusableTask {self.name}>"


def _configured(task_obj: Any) -> Any:
    """``task_obj`` on the configured backend and queue."""
    return task_obj.using(backend=pj_settings.TASK_BACKEND, queue_name=pj_settings.TASK_QUEUE)


def enqueue(task_obj: Any, *args: Any) -> bool:
    """Enqueue ``task_obj`` on the configured backend and queue; log and return False on failure.

    Call it from ``transaction.on_commit``. Failure is not fatal: the state that asked for the
    work is already committed and ``promptjuggler_sync`` will finish it.
    """
    try:
        _configured(task_obj).enqueue(*args)
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
    nothing is enqueued and ``promptjuggler_sync`` picks the work up once it is due. A ``when``
    further ahead than ``TASK_DEFER_MAX`` enqueues :func:`relay_deferred_task` at the cap
    instead, which comes back here then.
    """
    try:
        configured = _configured(task_obj)
        if not configured.get_backend().supports_defer:
            return False
        cap = pj_settings.TASK_DEFER_MAX
        horizon = None if cap is None else timezone.now() + timedelta(seconds=cap)
        if horizon is not None and when > horizon:
            _configured(relay_deferred_task).using(run_after=horizon).enqueue(
                configured.module_path, when.isoformat(), list(args)
            )
        else:
            configured.using(run_after=when).enqueue(*args)
    except Exception:
        logger.exception(
            "Could not schedule %s; promptjuggler_sync will pick the work up.",
            getattr(task_obj, "name", task_obj),
        )
        return False
    return True


#: The tasks :func:`relay_deferred_task` may enqueue: the app's own, by import path.
_RELAYABLE_PREFIX = "promptjuggler_django."


@task()
def relay_deferred_task(task_path: str, run_after: str, args: list[Any]) -> None:
    """Enqueue the task at ``task_path`` for ``run_after``, relayed once more if still too far.

    The hop of a deferral longer than ``TASK_DEFER_MAX`` (see :func:`enqueue_at`). It carries
    the task's import path, the time as ISO 8601 and the task's own (id) arguments, all JSON.
    """
    if not task_path.startswith(_RELAYABLE_PREFIX):
        raise ValueError(f"{task_path!r} is not a promptjuggler_django task; not relayed.")
    enqueue_at(import_string(task_path), datetime.fromisoformat(run_after), *args)
