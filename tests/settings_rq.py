"""Settings for the RQ worker processes that ``tests/test_scale_rq.py`` starts.

The workers run ``python -m django rqworker`` with these settings; everything they must share
with the test process comes from the environment, so two runs side by side never meet:

- ``PJ_RQ_DATABASE``: ``DATABASES["default"]`` as JSON (the test's own database);
- ``PJ_RQ_QUEUE`` and ``PJ_RQ_REDIS_DB``: the queue (unique per run) and its Redis database;
- ``PJ_RQ_MEDIA_ROOT``: where the documents' files are (a file system storage both sides read);
- ``PJ_RQ_BASE_URL``: the emulator the test started.

httpx logs every request at INFO to stderr, so the test can tell which worker sent what.
"""

from __future__ import annotations

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, PROMPTJUGGLER, STORAGES

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
#: Kept apart from tests/test_tasks.py (database 15).
REDIS_DB = int(os.environ.get("PJ_RQ_REDIS_DB", "14"))
QUEUE = os.environ.get("PJ_RQ_QUEUE", "pj-scale")

INSTALLED_APPS = [*INSTALLED_APPS, "django_rq", "django_tasks_rq"]

if os.environ.get("PJ_RQ_DATABASE"):
    DATABASES = {"default": json.loads(os.environ["PJ_RQ_DATABASE"])}

# The app's tasks are declared on the "default" queue (validated when tasks.py is imported)
# and sent to PROMPTJUGGLER["TASK_QUEUE"]: the backend must know both.
RQ_QUEUES = {
    name: {"HOST": REDIS_HOST, "PORT": REDIS_PORT, "DB": REDIS_DB} for name in ("default", QUEUE)
}
TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default", QUEUE]}}

STORAGES = {
    **STORAGES,
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ.get("PJ_RQ_MEDIA_ROOT", "/nonexistent")},
    },
}

PROMPTJUGGLER = {
    **PROMPTJUGGLER,
    "BASE_URL": os.environ.get("PJ_RQ_BASE_URL", PROMPTJUGGLER["BASE_URL"]),
    "TASK_QUEUE": QUEUE,
    "PUSH_BACKOFF": 0.05,
    "PUSH_BACKOFF_MAX": 0.5,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(process)d %(name)s %(levelname)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "httpx": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "promptjuggler_django": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}
