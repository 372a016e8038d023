"""Settings that used to pass ``manage.py check`` but were dangerous or broken.

Each has a system check with an id, a message naming the setting, and a hint.
"""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import django
import pytest
from django.core.checks import run_checks

from promptjuggler_django import signature
from promptjuggler_django.checks import (
    check_ask_page,
    check_settings,
    check_task_backend,
    check_task_deferral,
    check_upload_page,
)
from promptjuggler_django.conf import pj_settings
from promptjuggler_django.taskqueue import UnusableTask, enqueue, task

REPO = Path(__file__).resolve().parent.parent
TASKS_MODULE = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
IMMEDIATE = f"{TASKS_MODULE}.backends.immediate.ImmediateBackend"
DUMMY = f"{TASKS_MODULE}.backends.dummy.DummyBackend"

#: ``ROOT_URLCONF`` for the tests where the app's pages are not routed.
urlpatterns: list[object] = []


def ids(messages):
    return [m.id for m in messages]


def configure(settings, **values):
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, **values}


# --- BASE_URL ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://promptjuggler.com", "http://10.0.0.7:8000", "http://emulator.internal"]
)
def test_plain_http_to_another_host_is_an_error(settings, url):
    configure(settings, BASE_URL=url)
    [message] = check_settings()
    assert message.id == "promptjuggler_django.E006"
    assert 'PROMPTJUGGLER["BASE_URL"]' in message.msg
    assert "in clear" in message.msg
    assert "ALLOW_INSECURE_BASE_URL" in message.hint


def test_the_opt_out_allows_an_emulator_on_another_development_host(settings):
    configure(settings, BASE_URL="http://devbox.internal:8765", ALLOW_INSECURE_BASE_URL=True)
    assert check_settings() == []
    assert pj_settings.BASE_URL == "http://devbox.internal:8765"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8765",
        "http://localhost:8765",
        "http://[::1]:8765",
        "http://emulator.localhost",
        "https://promptjuggler.com",
        "https://10.0.0.7",
    ],
)
def test_https_and_loopback_http_pass(settings, url):
    configure(settings, BASE_URL=url)
    assert check_settings() == []


def test_user_info_in_base_url_is_an_error_that_names_the_real_host(settings):
    configure(settings, BASE_URL="https://promptjuggler.com:s3cret@evil.example")
    [message] = check_settings()
    assert message.id == "promptjuggler_django.E007"
    assert "'evil.example'" in message.msg
    assert "s3cret" not in message.msg
    assert "“@”" in message.hint


@pytest.mark.parametrize(
    "url", ["ftp://promptjuggler.com", "https://", "promptjuggler.com", "https://h:99999"]
)
def test_base_url_without_a_usable_host_is_an_error(settings, url):
    configure(settings, BASE_URL=url)
    [message] = check_settings()
    assert message.id == "promptjuggler_django.E003"
    assert 'PROMPTJUGGLER["BASE_URL"]' in message.msg


def test_a_password_in_a_base_url_without_host_is_not_echoed(settings):
    configure(settings, BASE_URL="https://user:hunter2@")
    [message] = check_settings()
    assert "hunter2" not in message.msg


# --- WEBHOOK_TOLERANCE ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0, -5])
def test_tolerance_must_be_a_finite_positive_number(settings, value):
    configure(settings, WEBHOOK_TOLERANCE=value)
    [message] = check_settings()
    assert message.id == "promptjuggler_django.E004"
    assert 'PROMPTJUGGLER["WEBHOOK_TOLERANCE"]' in message.msg
    assert "300" in message.hint


def test_a_nan_tolerance_never_verifies_a_signature_from_1970():
    body = b'{"id": "evt_1"}'
    header = signature.sign(body, "whsec_x", timestamp=1)
    assert signature.verify(body, header, ["whsec_x"], tolerance=math.nan) is None
    assert signature.verify(body, header, ["whsec_x"], tolerance=math.inf) is not None
    fresh = signature.sign(body, "whsec_x", timestamp=int(time.time()))
    assert signature.verify(body, fresh, ["whsec_x"], tolerance=math.nan) is None


# --- The upload page without a knowledge base ----------------------------------------------


def test_routed_upload_page_without_default_knowledge_base_is_an_error(settings):
    configure(settings, DEFAULT_KNOWLEDGE_BASE=None)
    [message] = check_upload_page()
    assert message.id == "promptjuggler_django.E008"
    assert 'PROMPTJUGGLER["DEFAULT_KNOWLEDGE_BASE"]' in message.msg
    assert "CHOOSABLE_KNOWLEDGE_BASES" in message.hint
    assert "UPLOAD_KNOWLEDGE_BASES_CALLBACK" in message.hint
    assert "promptjuggler_django.E008" in ids(run_checks(databases=[]))


def test_upload_page_check_passes_with_a_default_or_without_the_page(settings):
    assert check_upload_page() == []
    configure(settings, DEFAULT_KNOWLEDGE_BASE=None, CHOOSABLE_KNOWLEDGE_BASES=["kb_a", "kb_b"])
    assert check_upload_page() == []
    configure(settings, DEFAULT_KNOWLEDGE_BASE=None)
    settings.ROOT_URLCONF = __name__
    assert check_upload_page() == []


# --- The Ask page without a prompt ---------------------------------------------------------


def test_routed_ask_page_without_a_prompt_is_a_warning(settings):
    configure(settings, ASK_PROMPT=None)
    [message] = check_ask_page()
    assert message.id == "promptjuggler_django.W010"
    assert 'PROMPTJUGGLER["ASK_PROMPT"]' in message.msg
    assert "ASK_PROMPT" in message.hint
    assert "promptjuggler_django.W010" in ids(run_checks(databases=[]))


def test_ask_page_check_passes_with_a_prompt_or_without_the_page(settings):
    assert check_ask_page() == []
    configure(settings, ASK_PROMPT=None)
    settings.ROOT_URLCONF = __name__
    assert check_ask_page() == []


# --- The Tasks backend and queue -----------------------------------------------------------


def test_unknown_task_backend_is_an_error(settings):
    configure(settings, TASK_BACKEND="nope")
    [message] = check_task_backend()
    assert message.id == "promptjuggler_django.E009"
    assert 'PROMPTJUGGLER["TASK_BACKEND"]' in message.msg
    assert "'default'" in message.hint


def test_queue_missing_from_the_backend_is_an_error(settings):
    settings.TASKS = {"default": {"BACKEND": DUMMY, "QUEUES": ["documents"]}}
    [message] = check_task_backend()
    assert message.id == "promptjuggler_django.E010"
    assert 'PROMPTJUGGLER["TASK_QUEUE"]' in message.msg
    assert "'documents'" in message.msg
    assert 'TASKS["default"]["QUEUES"]' in message.hint


def test_configured_queue_passes(settings):
    settings.TASKS = {"default": {"BACKEND": DUMMY, "QUEUES": ["documents"]}}
    configure(settings, TASK_QUEUE="documents")
    assert check_task_backend() == []
    settings.TASKS = {"default": {"BACKEND": DUMMY, "QUEUES": []}}  # empty: any queue
    assert check_task_backend() == []


class CeleryLikeBackend(importlib.import_module(f"{TASKS_MODULE}.backends.dummy").DummyBackend):
    """Stands for django-tasks-celery's backend where it cannot be installed (Python 3.11)."""

    __module__ = "django_tasks_celery.backend"


CELERY_LIKE = f"{__name__}.CeleryLikeBackend"


@pytest.mark.parametrize("cap", [None, 1800.0, 7200])
def test_celery_without_a_cap_below_the_brokers_hold_limit_is_warned(settings, cap):
    settings.TASKS = {"default": {"BACKEND": CELERY_LIKE}}
    configure(settings, TASK_DEFER_MAX=cap)
    [message] = check_task_deferral()
    assert message.id == "promptjuggler_django.W004"
    assert f'PROMPTJUGGLER["TASK_DEFER_MAX"] is {cap!r}' in message.msg
    assert "consumer_timeout" in message.msg
    assert "SILENCED_SYSTEM_CHECKS" in message.hint


def test_celery_with_the_default_cap_passes_and_other_backends_need_none(settings):
    settings.TASKS = {"default": {"BACKEND": CELERY_LIKE}}
    assert check_task_deferral() == []  # TASK_DEFER_MAX's default, 900 s
    settings.TASKS = {"default": {"BACKEND": DUMMY}}
    configure(settings, TASK_DEFER_MAX=None)
    assert check_task_deferral() == []


def test_the_real_celery_backend_is_recognised(settings):
    pytest.importorskip("django_tasks_celery", reason="django-tasks-celery needs Python 3.12+")
    settings.TASKS = {"default": {"BACKEND": "django_tasks_celery.CeleryBackend"}}
    configure(settings, TASK_DEFER_MAX=None)
    [message] = check_task_deferral()
    assert message.id == "promptjuggler_django.W004"


def sample_task(value: int) -> None:
    """A module-level task body for the definition tests."""


def test_task_is_defined_on_the_configured_queue_when_default_is_refused(settings, monkeypatch):
    settings.TASKS = {"default": {"BACKEND": DUMMY, "QUEUES": ["documents"]}}
    configure(settings, TASK_QUEUE="documents")
    defined = task()(sample_task)
    # A task is found again by its module path, as a module-level ``@task()`` is.
    monkeypatch.setattr(sys.modules[__name__], "sample_task", defined)
    assert not isinstance(defined, UnusableTask)
    assert defined.queue_name == "documents"
    assert enqueue(defined, 1) is True


def test_a_task_no_backend_accepts_fails_only_when_enqueued(settings, caplog):
    settings.TASKS = {"default": {"BACKEND": DUMMY, "QUEUES": ["documents"]}}
    defined = task()(sample_task)
    assert isinstance(defined, UnusableTask)
    assert enqueue(defined, 1) is False
    assert "manage.py check" in caplog.text


def _manage_py_check(tmp_path: Path, extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "check_settings.py").write_text(
        "from tests.settings import *  # noqa: F403\n" + textwrap.dedent(extra)
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
        "DJANGO_SETTINGS_MODULE": "check_settings",
    }
    return subprocess.run(
        [sys.executable, "-m", "django", "check"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_manage_py_check_reports_a_backend_without_the_default_queue(tmp_path):
    result = _manage_py_check(
        tmp_path, f'TASKS = {{"default": {{"BACKEND": "{IMMEDIATE}", "QUEUES": ["documents"]}}}}\n'
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "promptjuggler_django.E010" in output
    assert "Traceback" not in output


def test_manage_py_check_passes_once_the_queue_is_configured(tmp_path):
    result = _manage_py_check(
        tmp_path,
        f"""
        TASKS = {{"default": {{"BACKEND": "{IMMEDIATE}", "QUEUES": ["documents"]}}}}
        PROMPTJUGGLER = {{**PROMPTJUGGLER, "TASK_QUEUE": "documents"}}
        """,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
