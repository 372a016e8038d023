"""The Celery app of the Celery scale-out test: ``celery -A tests.celery_app worker``.

A project's ``celery.py``, as Celery's Django guide writes it: the Django settings first, then
the app configured from the ``CELERY_*`` settings. django-tasks-celery registers each of the
app's tasks with this app when its module is imported, which ``django.setup()`` does (the
app's ``ready()`` imports the task modules), so the worker knows every task it may receive.

Deferred tasks are logged when a worker receives them (``deferred … until …``), so the test
can tell that retries went through the broker with an ETA.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings_celery")

app = Celery("promptjuggler_tests")
app.config_from_object("django.conf:settings", namespace="CELERY")

logger = logging.getLogger("promptjuggler_django.tests.celery")


@signals.task_received.connect
def log_deferred(request: Any, **kwargs: Any) -> None:
    if request.eta:
        logger.info("deferred %s[%s] until %s", request.name, request.id, request.eta)
