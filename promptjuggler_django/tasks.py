"""Thin Tasks wrappers around :mod:`promptjuggler_django.sync`.

Tasks take ids only and are idempotent: the database rows are the outbox, so a lost or repeated
task delays work but never loses or duplicates it. ``django.tasks`` is used on Django 6, the
``django-tasks`` backport on Django 5.2. :func:`enqueue` never raises: if the backend is down the
rows stay queued and ``promptjuggler_sync`` picks them up.
"""

from __future__ import annotations

import logging
from typing import Any

try:  # Django 6+
    from django.tasks import task
except ImportError:  # Django 5.2: the backport
    from django_tasks import task  # type: ignore[no-redef]

from .conf import pj_settings

logger = logging.getLogger(__name__)


@task()
def push_documents_task(document_ids: list[int]) -> None:
    """Push the given documents (those still due) to PromptJuggler."""
    from .sync import push_documents

    push_documents(document_ids)


@task()
def push_knowledge_base_task(knowledge_base_id: int) -> None:
    """Push due documents of one knowledge base, in batches, then hand over if more are due.

    One run sends at most ``TASK_PUSH_LIMIT`` documents, so a large backlog never outlives a
    worker's job timeout (RQ kills jobs after 180 s by default); the rest goes to a fresh task.
    """
    from .models import KnowledgeDocument
    from .sync import push_due

    limit = pj_settings.TASK_PUSH_LIMIT
    report = push_due(knowledge_base_ids=[knowledge_base_id], limit=limit)
    if report.attempted >= limit and (
        KnowledgeDocument.objects.due().filter(knowledge_base_id=knowledge_base_id).exists()
    ):
        enqueue(push_knowledge_base_task, knowledge_base_id)


@task()
def delete_remote_task(tombstone_ids: list[int]) -> None:
    """Delete the remote documents recorded by these tombstones."""
    from .sync import drain_tombstones

    drain_tombstones(tombstone_ids)


@task()
def process_webhook_task(delivery_id: int) -> None:
    """Apply a stored webhook delivery (the deferred processing mode)."""
    from .webhooks import process_delivery

    process_delivery(delivery_id)


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


def enqueue_at(task_obj: Any, when: Any, *args: Any) -> bool:
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
