"""The tasks that trigger the sync engine: push documents, push a knowledge base, delete remotely.

Thin wrappers that take ids only and are idempotent (the rows are the outbox). The engine below
does not import this module: when it is imported (``promptjuggler_django.sync`` always does) it
hands its tasks to the outbox's :data:`~promptjuggler_django.sync._outbox.TRIGGERS`, through which
the engine enqueues after commit.
"""

from __future__ import annotations

from ..conf import pj_settings
from ..models import KnowledgeBase, KnowledgeDocument
from ..taskqueue import enqueue, task
from ._outbox import TRIGGERS
from ._push import push_documents, push_due
from ._reconcile import reconcile
from ._tombstones import drain_tombstones


@task()
def push_documents_task(document_ids: list[int]) -> None:
    """Push the given documents (those still due) to PromptJuggler."""
    push_documents(document_ids)


@task()
def push_knowledge_base_task(knowledge_base_id: int) -> None:
    """Push due documents of one knowledge base, in batches, then hand over if more are due.

    One run sends at most ``TASK_PUSH_LIMIT`` documents, so a large backlog never outlives a
    worker's job timeout (RQ kills jobs after 180 s by default); the rest goes to a fresh task.
    """
    limit = pj_settings.TASK_PUSH_LIMIT
    report = push_due(knowledge_base_ids=[knowledge_base_id], limit=limit)
    if report.attempted >= limit and (
        KnowledgeDocument.objects.due().filter(knowledge_base_id=knowledge_base_id).exists()
    ):
        enqueue(push_knowledge_base_task, knowledge_base_id)


@task()
def delete_remote_task(tombstone_ids: list[int]) -> None:
    """Delete the remote documents recorded by these tombstones."""
    drain_tombstones(tombstone_ids)


@task()
def reconcile_knowledge_base_task(knowledge_base_id: int) -> None:
    """Reconcile one knowledge base: one ``GET``, then adopt, push again or delete what it finds.

    Scheduled after a row whose upload outcome was unknown is deleted or replaced, so the copy
    it may have left is deleted without waiting for ``promptjuggler_sync``.
    """
    knowledge_base = KnowledgeBase.objects.filter(pk=knowledge_base_id).first()
    if knowledge_base is not None:
        reconcile(knowledge_base=knowledge_base)


TRIGGERS.push_knowledge_base = push_knowledge_base_task
TRIGGERS.delete_remote = delete_remote_task
TRIGGERS.reconcile_knowledge_base = reconcile_knowledge_base_task
