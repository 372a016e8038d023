"""Settings for the Celery worker processes that ``tests/test_scale_celery.py`` starts.

The workers run ``celery -A tests.celery_app worker`` with these settings: those of
``tests/settings_scale.py``, Django's Tasks API on django-tasks-celery, and Celery on the
RabbitMQ broker at ``PJ_CELERY_BROKER_URL``.
"""

from __future__ import annotations

import os

from tests.settings_scale import *  # noqa: F403
from tests.settings_scale import PROMPTJUGGLER, QUEUE

CELERY_BROKER_URL = os.environ.get("PJ_CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
# The app logs through Django's LOGGING (httpx's request lines): Celery keeps its hands off.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_REDIRECT_STDOUTS = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# The app's tasks are declared on the "default" queue (validated when they are defined) and
# sent to PROMPTJUGGLER["TASK_QUEUE"], which the backend hands to Celery as the queue name.
TASKS = {
    "default": {
        "BACKEND": "django_tasks_celery.CeleryBackend",
        "QUEUES": ["default", QUEUE],
        "OPTIONS": {"CELERY_APP": "tests.celery_app.app"},
    }
}

PROMPTJUGGLER = {
    **PROMPTJUGGLER,
    # Retries wait a second or so, longer than the cap on deferral: they go through relays.
    "PUSH_BACKOFF": 1.0,
    "PUSH_BACKOFF_MAX": 2.0,
    "TASK_DEFER_MAX": 0.3,
}
