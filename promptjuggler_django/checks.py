"""System checks: every message names the setting to fix."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.urls import NoReverseMatch, reverse

from .conf import API_KEY_ENV, DEPRECATED_SETTINGS, SETTINGS, SettingError, pj_settings
from .taskqueue import task_backends
from .uploadtargets import default_upload_knowledge_bases, upload_knowledge_bases_callback


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Validate every ``PROMPTJUGGLER`` key and the presence of the API key and secrets."""
    errors: list[CheckMessage] = []
    try:
        unknown = pj_settings.unknown_keys()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), id="promptjuggler_django.E000")]
    for key in unknown:
        errors.append(
            Warning(
                f'Unknown setting settings.PROMPTJUGGLER["{key}"].',
                hint="Known keys: " + ", ".join(sorted(SETTINGS)),
                id="promptjuggler_django.W001",
            )
        )
    for key in pj_settings.deprecated_keys():
        new = DEPRECATED_SETTINGS[key]
        errors.append(
            Warning(
                f'settings.PROMPTJUGGLER["{key}"] is deprecated; it is now "{new}".',
                hint=f'Rename the key to "{new}"; the old name goes in the next release.',
                id="promptjuggler_django.W003",
            )
        )
    invalid = False
    for key in SETTINGS:
        try:
            getattr(pj_settings, key)
        except SettingError as exc:
            invalid = True
            errors.append(Error(str(exc), hint=exc.hint, id=exc.check_id))
        except ImproperlyConfigured as exc:
            invalid = True
            errors.append(Error(str(exc), id="promptjuggler_django.E003"))
    if invalid:
        return errors
    for label in pj_settings.padded_secrets():
        errors.append(
            Warning(
                f"{label} has surrounding whitespace (often the trailing newline of a secret "
                "file); the app strips it.",
                hint="Strip the value where it is read, e.g. Path(...).read_text().strip().",
                id="promptjuggler_django.W002",
            )
        )

    if not pj_settings.API_KEY:
        errors.append(
            Error(
                "No PromptJuggler API key is configured.",
                hint=f'Set settings.PROMPTJUGGLER["API_KEY"] or the {API_KEY_ENV} '
                "environment variable.",
                id="promptjuggler_django.E001",
            )
        )
    if not pj_settings.webhook_secrets:
        errors.append(
            Error(
                "No PromptJuggler webhook secret is configured; every webhook delivery "
                "will be refused.",
                hint='Set settings.PROMPTJUGGLER["WEBHOOK_SECRETS"] to the secret(s) shown in '
                "PromptJuggler's webhook settings (whsec_…).",
                id="promptjuggler_django.E002",
            )
        )
    return errors


def _settings_valid() -> bool:
    """Whether every setting reads; :func:`check_settings` reports the ones that do not."""
    try:
        for key in SETTINGS:
            getattr(pj_settings, key)
    except ImproperlyConfigured:
        return False
    return True


@register(Tags.compatibility)
def check_task_backend(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``TASK_BACKEND`` names a backend of ``settings.TASKS`` that accepts ``TASK_QUEUE``.

    Otherwise every enqueue fails (and logs why): the work waits for ``promptjuggler_sync``.
    """
    if not _settings_valid():
        return []
    alias, queue = pj_settings.TASK_BACKEND, pj_settings.TASK_QUEUE
    try:
        backend = task_backends[alias]
    except Exception as exc:
        return [
            Error(
                f'settings.PROMPTJUGGLER["TASK_BACKEND"] is {alias!r}, which is not a usable '
                f"backend of settings.TASKS ({exc}).",
                hint="Name one of the aliases in settings.TASKS ("
                + ", ".join(repr(a) for a in _task_aliases())
                + ").",
                id="promptjuggler_django.E009",
            )
        ]
    queues = getattr(backend, "queues", None)
    if queues and queue not in queues:
        return [
            Error(
                f'settings.PROMPTJUGGLER["TASK_QUEUE"] is {queue!r}, which is not among the '
                f'QUEUES of settings.TASKS["{alias}"] ({", ".join(sorted(map(repr, queues)))}): '
                "every enqueue would fail and the work wait for promptjuggler_sync.",
                hint=f"Set TASK_QUEUE to one of those queues, or add {queue!r} to "
                f'settings.TASKS["{alias}"]["QUEUES"].',
                id="promptjuggler_django.E010",
            )
        ]
    return []


#: RabbitMQ's default ``consumer_timeout`` (seconds): a consumer holding a message unacknowledged
#: longer has its channel closed. Celery's Redis transport redelivers such a message after its
#: ``visibility_timeout`` (an hour by default) instead: the task runs twice.
BROKER_HOLD_LIMIT = 1800.0


@register(Tags.compatibility)
def check_task_deferral(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """On Celery, ``TASK_DEFER_MAX`` keeps deferred tasks inside what the broker will hold.

    A Celery worker holds a task with an ETA unacknowledged until it runs; the broker gives
    up on such a message after a while (see :data:`BROKER_HOLD_LIMIT`).
    """
    if not _settings_valid():
        return []
    try:
        backend = task_backends[pj_settings.TASK_BACKEND]
    except Exception:
        return []  # E009 says so
    if not type(backend).__module__.startswith("django_tasks_celery"):
        return []
    cap = pj_settings.TASK_DEFER_MAX
    if cap is not None and cap < BROKER_HOLD_LIMIT:
        return []
    return [
        Warning(
            f'settings.PROMPTJUGGLER["TASK_DEFER_MAX"] is {cap!r} with the Celery backend: a '
            "Celery worker holds a deferred task unacknowledged until it runs, and RabbitMQ "
            "closes the channel of a consumer that holds a message past its consumer_timeout "
            "(30 minutes by default); Redis redelivers it after its visibility_timeout.",
            hint="Set TASK_DEFER_MAX well below the broker's limit (the default, 900.0, is). "
            "If you raised the limit, add promptjuggler_django.W004 to "
            "SILENCED_SYSTEM_CHECKS.",
            id="promptjuggler_django.W004",
        )
    ]


def _task_aliases() -> list[str]:
    try:
        return list(task_backends)
    except Exception:
        return []


@register(Tags.compatibility)
def check_upload_knowledge_bases_callback(
    app_configs: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """``UPLOAD_KNOWLEDGE_BASES_CALLBACK`` imports and can be called.

    Otherwise every upload (page, admin, REST) would fail with a server error.
    """
    if not _settings_valid():
        return []
    try:
        upload_knowledge_bases_callback()
    except SettingError as exc:
        return [Error(str(exc), hint=exc.hint, id=exc.check_id)]
    return []


def _routed(name: str) -> bool:
    """Whether the project's URLconf routes the view named ``name``."""
    try:
        reverse(name)
    except NoReverseMatch:
        return False
    except Exception:  # a broken URLconf: Django's own URL checks report it
        return False
    return True


@register(Tags.urls)
def check_upload_page(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The routed upload page has a knowledge base to upload into."""
    if not _settings_valid() or not _default_rule_allows_nothing():
        return []
    if not _routed("promptjuggler_django:document_upload"):
        return []
    return [
        Error(
            "The upload page (promptjuggler_django:document_upload) is routed, but "
            'settings.PROMPTJUGGLER["DEFAULT_KNOWLEDGE_BASE"] is not set and '
            '"CHOOSABLE_KNOWLEDGE_BASES" is empty: the page has no knowledge base to upload '
            "into (but for staff who may add documents).",
            hint="Set DEFAULT_KNOWLEDGE_BASE to the slug (kb_…) uploads go to, list the slugs "
            "users may choose in CHOOSABLE_KNOWLEDGE_BASES, or name a rule of your own in "
            "UPLOAD_KNOWLEDGE_BASES_CALLBACK (or override get_knowledge_bases() on a subclass "
            "of DocumentUploadView).",
            id="promptjuggler_django.E008",
        )
    ]


def _default_rule_allows_nothing() -> bool:
    """Whether the default upload rule is in force and names no knowledge base."""
    try:
        callback = upload_knowledge_bases_callback()
    except SettingError:  # check_upload_knowledge_bases_callback reports it
        return False
    return (
        callback is default_upload_knowledge_bases
        and not pj_settings.DEFAULT_KNOWLEDGE_BASE
        and not pj_settings.CHOOSABLE_KNOWLEDGE_BASES
    )


@register(Tags.urls)
def check_ask_page(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The routed Ask page has a prompt to start."""
    if not _settings_valid() or pj_settings.ASK_PROMPT:
        return []
    if not _routed("promptjuggler_django:ask"):
        return []
    return [
        Warning(
            "The Ask page (promptjuggler_django:ask) is routed, but "
            'settings.PROMPTJUGGLER["ASK_PROMPT"] is not set: the page and its status '
            "endpoint answer 404.",
            hint="Set ASK_PROMPT to the slug of the published prompt that answers questions "
            "(and ASK_PROMPT_VERSION, ASK_INPUT to match it), or leave the warning if asking "
            "is meant to be off.",
            id="promptjuggler_django.W010",
        )
    ]
