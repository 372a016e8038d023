"""Settings for the RQ worker processes that ``tests/test_scale_rq.py`` starts.

The workers run ``python -m django rqworker`` with these settings: those of
``tests/settings_scale.py``, and ``PJ_RQ_REDIS_DB``, the Redis database of the run's queue.
"""

from __future__ import annotations

import os

from tests.settings_scale import *  # noqa: F403
from tests.settings_scale import INSTALLED_APPS, QUEUE

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
#: Kept apart from tests/test_tasks.py (database 15).
REDIS_DB = int(os.environ.get("PJ_RQ_REDIS_DB", "14"))

INSTALLED_APPS = [*INSTALLED_APPS, "django_rq", "django_tasks_rq"]

# The app's tasks are declared on the "default" queue (validated when tasks.py is imported)
# and sent to PROMPTJUGGLER["TASK_QUEUE"]: the backend must know both.
RQ_QUEUES = {
    name: {"HOST": REDIS_HOST, "PORT": REDIS_PORT, "DB": REDIS_DB} for name in ("default", QUEUE)
}
TASKS = {"default": {"BACKEND": "django_tasks_rq.RQBackend", "QUEUES": ["default", QUEUE]}}
