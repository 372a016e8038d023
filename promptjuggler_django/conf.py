"""The ``PROMPTJUGGLER`` settings dict, read lazily.

Every attribute of :data:`pj_settings` is looked up in ``settings.PROMPTJUGGLER`` at the moment
it is read, so ``override_settings`` and pytest-django's ``settings`` fixture work without any
cache to reset. A value of the wrong type raises
:class:`~django.core.exceptions.ImproperlyConfigured` naming the key and what is expected.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .filetypes import SUPPORTED_EXTENSIONS
from .redaction import has_control_character

API_KEY_ENV = "PROMPTJUGGLER_API_KEY"

#: Settings that hold secrets: never echoed in an error, surrounding whitespace stripped.
SECRET_SETTINGS = ("API_KEY", "WEBHOOK_SECRETS", "WEBHOOK_SECRET")


class SettingError(ImproperlyConfigured):
    """An invalid setting, with the id and hint of the system check that reports it."""

    def __init__(
        self, message: str, *, check_id: str = "promptjuggler_django.E003", hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.check_id = check_id
        self.hint = hint


class SecretValueError(SettingError):
    """A secret setting holds a control character (a newline, NUL, …) inside its value."""

    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            check_id="promptjuggler_django.E005",
            hint="Copy the value again from PromptJuggler; check how it is read "
            "(a file, an environment variable) for stray characters.",
        )


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
    return _is_number(v) and math.isfinite(v) and v > 0


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


def _is_callable_or_path(v: Any) -> bool:
    return callable(v) or _is_non_empty_str(v)


def _is_upload_to(v: Any) -> bool:
    return isinstance(v, str) or callable(v)


def _is_version(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool) and v > 0) or _is_non_empty_str(v)


def _is_non_empty_str(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _is_opt_pos_number(v: Any) -> bool:
    return v is None or _is_pos_number(v)


def _is_processing_mode(v: Any) -> bool:
    return v in ("inline", "deferred")


#: Every key of ``settings.PROMPTJUGGLER`` with its default. ``docs/configuration.md`` mirrors it.
SETTINGS: dict[str, Setting] = {
    "API_KEY": Setting(
        None, "a string (or the PROMPTJUGGLER_API_KEY environment variable)", _is_opt_str
    ),
    "BASE_URL": Setting("https://promptjuggler.com", "an http(s) URL string", _is_str),
    "ALLOW_INSECURE_BASE_URL": Setting(False, "a bool", _is_bool),
    "WEBHOOK_SECRETS": Setting((), "a list of non-empty strings", _is_str_seq),
    "WEBHOOK_SECRET": Setting(
        None, "a string (shorthand for a one-item WEBHOOK_SECRETS)", _is_opt_str
    ),
    "WEBHOOK_TOLERANCE": Setting(
        300, "a number of seconds greater than 0 (finite)", _is_pos_number
    ),
    "WEBHOOK_MAX_BODY_BYTES": Setting(256 * 1024, "a positive int (bytes)", _is_pos_int),
    "WEBHOOK_LOG_BODY_BYTES": Setting(4096, "a non-negative int (bytes)", _is_nonneg_int),
    "WEBHOOK_RETENTION_DAYS": Setting(30, "a positive int (days)", _is_pos_int),
    "WEBHOOK_PROCESSING": Setting("inline", "'inline' or 'deferred'", _is_processing_mode),
    "DEFAULT_KNOWLEDGE_BASE": Setting(None, "a knowledge-base slug string", _is_opt_str),
    "CHOOSABLE_KNOWLEDGE_BASES": Setting((), "a list of knowledge-base slug strings", _is_str_seq),
    "UPLOAD_KNOWLEDGE_BASES_CALLBACK": Setting(
        "promptjuggler_django.uploadtargets.default_upload_knowledge_bases",
        "a dotted path to a callable (request) -> knowledge bases, or the callable",
        _is_callable_or_path,
    ),
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
    "LEASE": Setting(900.0, "a positive number of seconds", _is_pos_number),
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
    # A broker may hold a deferred task for a limited time only (RabbitMQ: consumer_timeout).
    "TASK_DEFER_MAX": Setting(
        900.0, "a positive number of seconds, or None for no cap", _is_opt_pos_number
    ),
    "RUN_MAX_ATTEMPTS": Setting(5, "a positive int", _is_pos_int),
    "RUN_POLL_AFTER": Setting(300.0, "a positive number of seconds", _is_pos_number),
    "ASK_PROMPT": Setting(None, "a prompt slug string", _is_opt_str),
    "ASK_PROMPT_VERSION": Setting("__latest__", "a version: a number or a tag string", _is_version),
    "ASK_INPUT": Setting("question", "an input name string", _is_non_empty_str),
}


#: Old name → new name, for one release: the old key still works (check ``W003`` says rename).
DEPRECATED_SETTINGS: dict[str, str] = {
    # The lease covers a drain of tombstones as well as a push, not only uploads.
    "UPLOAD_LEASE": "LEASE",
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
        name = DEPRECATED_SETTINGS.get(name, name)
        try:
            spec = SETTINGS[name]
        except KeyError:
            raise AttributeError(f"Unknown PromptJuggler setting {name!r}") from None
        user = _user_settings()
        value = user.get(name, spec.default)
        if name not in user:
            for old, new in DEPRECATED_SETTINGS.items():
                if new == name and old in user:
                    value = user[old]
        if name == "API_KEY" and not value:
            value = os.environ.get(API_KEY_ENV) or None
        if name in SECRET_SETTINGS:
            value = _strip_secrets(name, value)
        if not spec.check(value):
            got = _describe(name, value)
            raise SettingError(
                f'settings.PROMPTJUGGLER["{name}"] must be {spec.kind}; got {got}.',
                # The check that predates the others keeps its id.
                check_id="promptjuggler_django.E004"
                if name == "WEBHOOK_TOLERANCE" and _is_number(value)
                else "promptjuggler_django.E003",
                hint="PromptJuggler's SDKs use 300." if name == "WEBHOOK_TOLERANCE" else None,
            )
        if name == "BASE_URL":
            _check_base_url(value, spec.kind)
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
        known = SETTINGS.keys() | DEPRECATED_SETTINGS.keys()
        return sorted(k for k in _user_settings() if k not in known)

    def deprecated_keys(self) -> list[str]:
        """Keys set under an old name (see :data:`DEPRECATED_SETTINGS`)."""
        return sorted(k for k in _user_settings() if k in DEPRECATED_SETTINGS)

    def __repr__(self) -> str:  # never show the API key or secrets
        return "<PromptJugglerSettings>"


def _check_base_url(value: str, kind: str) -> None:
    """Refuse a ``BASE_URL`` the API key must not be sent to.

    Plain ``http://`` is for the emulator on this machine only: elsewhere the bearer key would
    travel in clear (``ALLOW_INSECURE_BASE_URL`` opts out, for an emulator on another development
    host). User info (``https://evil.example@promptjuggler.com``) hides the real host behind a
    familiar name and is never needed: the API key is the only credential.
    """
    label = 'settings.PROMPTJUGGLER["BASE_URL"]'
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise SettingError(f"{label} has an invalid port; it must be {kind}.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The value itself is not echoed: it may carry a password in its user info.
        got = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise SettingError(f"{label} must be {kind} with a host; got {got}, no host.")
    if parts.username is not None or parts.password is not None:
        raise SettingError(
            f"{label} carries user info (a name before “@” in front of the host). The host it "
            f"really names is {parts.hostname!r}.",
            check_id="promptjuggler_django.E007",
            hint="Remove everything between “//” and “@”: the API key is the only credential.",
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        allowed = _user_settings().get("ALLOW_INSECURE_BASE_URL", False)
        if allowed is not True:
            raise SettingError(
                f"{label} is plain http:// to {parts.hostname!r}, which is not this machine: "
                "the API key would travel in clear.",
                check_id="promptjuggler_django.E006",
                hint="Use https://. For an emulator on another development host, set "
                'settings.PROMPTJUGGLER["ALLOW_INSECURE_BASE_URL"] = True.',
            )


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
