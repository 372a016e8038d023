"""System checks: every message names the setting to fix."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from .conf import API_KEY_ENV, SETTINGS, SecretValueError, pj_settings


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
    invalid = False
    for key in SETTINGS:
        try:
            getattr(pj_settings, key)
        except SecretValueError as exc:
            invalid = True
            errors.append(
                Error(
                    str(exc),
                    hint="Copy the value again from PromptJuggler; check how it is read "
                    "(a file, an environment variable) for stray characters.",
                    id="promptjuggler_django.E005",
                )
            )
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
    if pj_settings.WEBHOOK_TOLERANCE <= 0:
        errors.append(
            Error(
                'settings.PROMPTJUGGLER["WEBHOOK_TOLERANCE"] must be greater than 0 seconds.',
                hint="PromptJuggler's SDKs use 300.",
                id="promptjuggler_django.E004",
            )
        )
    return errors
