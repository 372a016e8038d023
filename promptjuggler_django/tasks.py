"""Deprecated: the tasks moved to the engines that they trigger.

``promptjuggler_django.sync.tasks`` holds the push and delete tasks,
``promptjuggler_django.webhooks.tasks`` the deferred-delivery task, and
:mod:`promptjuggler_django.taskqueue` :func:`enqueue` and :func:`enqueue_at`. This module re-exports
them for one release, so that jobs queued under the old names still run.
"""

from __future__ import annotations

import warnings

from .sync.tasks import delete_remote_task, push_documents_task, push_knowledge_base_task
from .taskqueue import enqueue, enqueue_at
from .webhooks.tasks import process_webhook_task

__all__ = [
    "delete_remote_task",
    "enqueue",
    "enqueue_at",
    "process_webhook_task",
    "push_documents_task",
    "push_knowledge_base_task",
]

warnings.warn(
    "promptjuggler_django.tasks is deprecated: import the tasks from "
    "promptjuggler_django.sync.tasks and promptjuggler_django.webhooks.tasks.",
    DeprecationWarning,
    stacklevel=2,
)
