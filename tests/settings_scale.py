"""Settings shared by the worker processes that the scale-out tests start.

``tests/test_scale_rq.py`` and ``tests/test_scale_celery.py`` start real worker processes with a
settings module of their backend (``tests.settings_rq``, ``tests.settings_celery``), each built
on this one. Everything the workers must share with the test process comes from the
environment, so two runs side by side never meet:

- ``PJ_SCALE_DATABASE``: ``DATABASES["default"]`` as JSON (the test's own database);
- ``PJ_SCALE_QUEUE``: the queue, unique per run;
- ``PJ_SCALE_MEDIA_ROOT``: where the documents' files are (a file system storage both sides read);
- ``PJ_SCALE_BASE_URL``: the emulator the test started.

httpx logs every request at INFO to stderr, and ``tests/scale_worker.py`` each document pushed,
so the test can tell which worker sent what.
"""

from __future__ import annotations

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS, PROMPTJUGGLER, STORAGES

# Logs each document a worker pushed.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.scale_worker.ScaleWorkerConfig"]

QUEUE = os.environ.get("PJ_SCALE_QUEUE", "pj-scale")

if os.environ.get("PJ_SCALE_DATABASE"):
    DATABASES = {"default": json.loads(os.environ["PJ_SCALE_DATABASE"])}

STORAGES = {
    **STORAGES,
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ.get("PJ_SCALE_MEDIA_ROOT", "/nonexistent")},
    },
}

PROMPTJUGGLER = {
    **PROMPTJUGGLER,
    "BASE_URL": os.environ.get("PJ_SCALE_BASE_URL", PROMPTJUGGLER["BASE_URL"]),
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
