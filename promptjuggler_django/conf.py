"""The ``PROMPTJUGGLER`` settings dict, read lazily.

Every attribute of :data:`pj_settings` is looked up in ``settings.PROMPTJUGGLER`` at the moment
it is read, so ``override_settings`` and pytest-django's ``settings`` fixture work without any
cache to reset. A value of the wrong type raises
:class:`~django.core.exceptions.ImproperlyConfigured` naming the key and what is expected.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .filetypes import SUPPORTED_EXTENSIONS
from .redaction import has_control_character

API_KEY_ENV = "PROMPTJUGGLER_API_KEY"

#: Settings that hold secrets: never echoed in an error, surrounding whitespace stripped.
SECRET_SETTINGS = ("API_KEY", "WEBHOOK_SECRETS", "WEBHOOK_SECRET")


class SecretValueError(ImproperlyConfigured):
    """A secret setting holds a control character (a newline, NUL, …) inside its value."""


@dataclass(frozen=True)
class Setting:
    default: Any
    kind: str  # human description used in errors
    check: Callable[[Any], bool]
    doc: str = ""


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_opt_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _is_pos_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def _is_nonneg_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_str_seq(v: Any) -> bool:
    return isinstance(v, list | tuple) and all(isinstance(s, str) and s for s in v)


def _is_upload_to(v: Any) -> bool:
    return isinstance(v, str) or callable(v)


def _is_processing_mode(v: Any) -> bool:
    return v in ("inline", "deferred")


#: Every key of ``settings.PROMPTJUGGLER`` with its default. ``docs/configuration.md`` mirrors it.
SETTINGS: dict[str, Setting] = {
    "API_KEY": Setting(
        None, "a string (or the PROMPTJUGGLER_API_KEY environment variable)", _is_opt_str
    ),
    "BASE_URL": Setting("https://promptjuggler.com", "an http(s) URL string", _is_str),
    "WEBHOOK_SECRETS": Setting((), "a list of non-empty strings", _is_str_seq),
    "WEBHOOK_SECRET": Setting(
        None, "a string (shorthand for a one-item WEBHOOK_SECRETS)", _is_opt_str
    ),
    "WEBHOOK_TOLERANCE": Setting(300, "a number of seconds greater than 0", _is_number),
    "WEBHOOK_MAX_BODY_BYTES": Setting(256 * 1024, "a positive int (bytes)", _is_pos_int),
    "WEBHOOK_LOG_BODY_BYTES": Setting(4096, "a non-negative int (bytes)", _is_nonneg_int),
    "WEBHOOK_RETENTION_DAYS": Setting(30, "a positive int (days)", _is_pos_int),
    "WEBHOOK_PROCESSING": Setting("inline", "'inline' or 'deferred'", _is_processing_mode),
    "DEFAULT_KNOWLEDGE_BASE": Setting(None, "a knowledge-base slug string", _is_opt_str),
    "CONNECT_TIMEOUT": Setting(5.0, "a positive number of seconds", _is_pos_number),
    "READ_TIMEOUT": Setting(60.0, "a positive number of seconds", _is_pos_number),
    "WRITE_TIMEOUT": Setting(60.0, "a positive number of seconds", _is_pos_number),
    "POOL_TIMEOUT": Setting(5.0, "a positive number of seconds", _is_pos_number),
    "MAX_RETRIES": Setting(3, "a non-negative int", _is_nonneg_int),
    "RETRY_BACKOFF": Setting(0.5, "a positive number of seconds", _is_pos_number),
    "RETRY_BACKOFF_MAX": Setting(30.0, "a positive number of seconds", _is_pos_number),
    "UPLOAD_CHUNK_SIZE": Setting(64 * 1024, "a positive int (bytes)", _is_pos_int),
    "PUSH_MAX_ATTEMPTS": Setting(8, "a positive int", _is_pos_int),
    "PUSH_BACKOFF": Setting(30.0, "a positive number of seconds", _is_pos_number),
    "PUSH_BACKOFF_MAX": Setting(3600.0, "a positive number of seconds", _is_pos_number),
    "UPLOAD_LEASE": Setting(900.0, "a positive number of seconds", _is_pos_number),
    "BATCH_MAX_FILES": Setting(100, "a positive int", _is_pos_int),
    "BATCH_MAX_BYTES": Setting(50 * 1024 * 1024, "a positive int (bytes)", _is_pos_int),
    "STORAGE": Setting(None, "a STORAGES alias string, or None for 'default'", _is_opt_str),
    "UPLOAD_TO": Setting("promptjuggler/%Y/%m/", "a path string or a callable", _is_upload_to),
    "ALLOWED_EXTENSIONS": Setting(SUPPORTED_EXTENSIONS, "a list of '.ext' strings", _is_str_seq),
    "MAX_UPLOAD_SIZE": Setting(100 * 1024 * 1024, "a positive int (bytes)", _is_pos_int),
    "SYNC_ENABLED": Setting(True, "a bool", _is_bool),
    "TASK_BACKEND": Setting("default", "a TASKS alias string", _is_str),
    "TASK_QUEUE": Setting("default", "a queue name string", _is_str),
    "TASK_PUSH_LIMIT": Setting(1000, "a positive int (documents per push task)", _is_pos_int),
}


def _user_settings() -> Mapping[str, Any]:
    value = getattr(settings, "PROMPTJUGGLER", None)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(
            f"settings.PROMPTJUGGLER must be a dict, not {type(value).__name__}."
        )
    return value


class PromptJugglerSettings:
    """Attribute access to ``settings.PROMPTJUGGLER`` with defaults and validation."""

    def __getattr__(self, name: str) -> Any:
        try:
            spec = SETTINGS[name]
        except KeyError:
            raise AttributeError(f"Unknown PromptJuggler setting {name!r}") from None
        value = _user_settings().get(name, spec.default)
        if name == "API_KEY" and not value:
            value = os.environ.get(API_KEY_ENV) or None
        if name in SECRET_SETTINGS:
            value = _strip_secrets(name, value)
        if not spec.check(value):
            got = _describe(name, value)
            raise ImproperlyConfigured(
                f'settings.PROMPTJUGGLER["{name}"] must be {spec.kind}; got {got}.'
            )
        if name == "BASE_URL" and not value.startswith(("http://", "https://")):
            raise ImproperlyConfigured(
                f'settings.PROMPTJUGGLER["BASE_URL"] must be {spec.kind}; got {value!r}.'
            )
        return value

    @property
    def webhook_secrets(self) -> list[str]:
        """All configured webhook secrets, ``WEBHOOK_SECRETS`` first, then ``WEBHOOK_SECRET``."""
        secrets = list(self.WEBHOOK_SECRETS)
        single = self.WEBHOOK_SECRET
        if single and single not in secrets:
            secrets.append(single)
        return secrets

    def padded_secrets(self) -> list[str]:
        """Where a secret was given with surrounding whitespace (stripped on every read)."""
        return [
            label
            for label, raw in _secret_sources(_user_settings())
            if raw.strip() and raw != raw.strip()
        ]

    def unknown_keys(self) -> list[str]:
        return sorted(k for k in _user_settings() if k not in SETTINGS)

    def __repr__(self) -> str:  # never show the API key or secrets
        return "<PromptJugglerSettings>"


def _secret_sources(user: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every configured secret string, with where it came from (never its value)."""
    sources: list[tuple[str, str]] = []
    api_key = user.get("API_KEY")
    if isinstance(api_key, str) and api_key:
        sources.append(('settings.PROMPTJUGGLER["API_KEY"]', api_key))
    elif not api_key and os.environ.get(API_KEY_ENV):
        sources.append((f"the {API_KEY_ENV} environment variable", os.environ[API_KEY_ENV]))
    many = user.get("WEBHOOK_SECRETS", ())
    if isinstance(many, list | tuple):
        for i, secret in enumerate(many):
            if isinstance(secret, str):
                sources.append((f'settings.PROMPTJUGGLER["WEBHOOK_SECRETS"][{i}]', secret))
    single = user.get("WEBHOOK_SECRET")
    if isinstance(single, str):
        sources.append(('settings.PROMPTJUGGLER["WEBHOOK_SECRET"]', single))
    return sources


def _strip_secrets(name: str, value: Any) -> Any:
    """``value`` without surrounding whitespace; a control character inside is refused.

    A key read from a mounted secret file keeps its trailing newline, which no HTTP header may
    carry and no signature computed by PromptJuggler includes. A whitespace-only secret is no
    secret: ``None`` for the single-valued settings, an invalid list for ``WEBHOOK_SECRETS``.
    """
    if isinstance(value, str):
        stripped = value.strip()
        if has_control_character(stripped):
            raise _control_character_error(name, _label(name))
        return stripped or None
    if name == "WEBHOOK_SECRETS" and isinstance(value, list | tuple):
        cleaned = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                item = item.strip()
                if has_control_character(item):
                    raise _control_character_error(name, f"{_label(name)}[{i}]")
            cleaned.append(item)
        return type(value)(cleaned)
    return value


def _label(name: str) -> str:
    if name == "API_KEY" and not _user_settings().get("API_KEY"):
        return f"the {API_KEY_ENV} environment variable"
    return f'settings.PROMPTJUGGLER["{name}"]'


def _control_character_error(name: str, label: str) -> SecretValueError:
    return SecretValueError(
        f"{label} contains a control character (such as a newline) inside the value. "
        "No HTTP header may carry one, so the value cannot be what PromptJuggler issued."
    )


def _describe(name: str, value: Any) -> str:
    if name in SECRET_SETTINGS:
        return f"a value of type {type(value).__name__}"  # never echo secrets
    return repr(value)


#: The app's settings. Import this, never copy values at import time.
pj_settings = PromptJugglerSettings()
