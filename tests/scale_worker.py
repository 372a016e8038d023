"""A test-only app for the scale-out workers: each document a worker pushed is a log line.

``tests/settings_scale.py`` installs it, so the test can count the documents each worker
process pushed (``pushed <file name>`` on ``promptjuggler_django.tests``), not only its upload
requests.
"""

from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig

logger = logging.getLogger("promptjuggler_django.tests.scale")

#: The line a worker logs per document PromptJuggler accepted from it.
PUSHED = "pushed %s"


class ScaleWorkerConfig(AppConfig):
    name = "tests.scale_worker"
    label = "pj_scale_worker"

    def ready(self) -> None:
        from promptjuggler_django.signals import upload_succeeded

        upload_succeeded.connect(log_pushed, dispatch_uid="pj_scale_worker")


def log_pushed(sender: Any, document: Any, **kwargs: Any) -> None:
    logger.info(PUSHED, document.file_name)
