"""pytest fixtures for projects that use promptjuggler_django (registered as a pytest plugin).

- ``fake_promptjuggler``: a started :class:`~promptjuggler_django.testing.FakePromptJuggler`
  with ``DEFAULT_KNOWLEDGE_BASE`` created and the first webhook secret ready for
  ``fake.set_webhook(url)``; with pytest-django, ``settings.PROMPTJUGGLER`` points at it for the
  test (``BASE_URL`` and ``API_KEY``). Stopped afterwards.
- ``promptjuggler_signature``: signs webhook bodies with the first configured secret.

Nothing here imports pytest-django or touches Django settings until a fixture runs, so the
plugin is harmless in projects that use neither.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from promptjuggler_django.testing import FakePromptJuggler

_FALLBACK_API_KEY = "pj_test_key"


def _django_promptjuggler_settings() -> Mapping[str, Any]:
    """``settings.PROMPTJUGGLER`` if Django is configured, else an empty mapping."""
    try:
        from django.conf import settings
    except ImportError:  # pragma: no cover - Django is a dependency of the app
        return {}
    if not settings.configured:
        return {}
    value = getattr(settings, "PROMPTJUGGLER", None)
    return value if isinstance(value, Mapping) else {}


def _configured_secrets() -> list[str]:
    user = _django_promptjuggler_settings()
    # Stripped as the app strips them: a secret read from a file keeps its trailing newline.
    many = user.get("WEBHOOK_SECRETS", ())
    secrets = [s.strip() for s in many if isinstance(s, str) and s.strip()]
    single = user.get("WEBHOOK_SECRET")
    if isinstance(single, str) and single.strip() and single.strip() not in secrets:
        secrets.append(single.strip())
    return secrets


class WebhookSigner:
    """Signs webhook bodies as PromptJuggler would, with one secret.

    ``signer(body)`` returns the header value; ``signer.headers(body)`` the keyword arguments
    for Django's test client (``client.post(url, body, content_type=…, **signer.headers(body))``).
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def __call__(self, body: bytes, timestamp: int | None = None) -> str:
        from promptjuggler_django.testing import sign_webhook

        return sign_webhook(body, self.secret, timestamp)

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        return {"HTTP_PROMPTJUGGLER_SIGNATURE": self(body, timestamp)}

    def __repr__(self) -> str:  # never show the secret
        return "<WebhookSigner>"


@pytest.fixture
def fake_promptjuggler(request: pytest.FixtureRequest) -> Iterator[FakePromptJuggler]:
    """A running PromptJuggler emulator wired into ``settings.PROMPTJUGGLER`` for one test."""
    from promptjuggler_django.testing import FakePromptJuggler

    user = _django_promptjuggler_settings()
    configured_key = user.get("API_KEY")
    api_key = configured_key.strip() if isinstance(configured_key, str) else None
    default_kb = user.get("DEFAULT_KNOWLEDGE_BASE")
    knowledge_bases = [default_kb] if isinstance(default_kb, str) and default_kb else []
    secrets = _configured_secrets()
    with FakePromptJuggler(
        api_key or _FALLBACK_API_KEY,
        knowledge_bases=knowledge_bases,
        # Webhooks stay off until the test names a URL; they are then signed with this secret.
        webhook_secret=secrets[0] if secrets else None,
    ) as fake:
        django_settings = _pytest_django_settings(request)
        if django_settings is not None:
            current = getattr(django_settings, "PROMPTJUGGLER", None) or {}
            django_settings.PROMPTJUGGLER = {
                **current,
                "BASE_URL": fake.url,
                "API_KEY": fake.api_key,
            }
        yield fake


@pytest.fixture
def promptjuggler_signature() -> WebhookSigner:
    """A :class:`WebhookSigner` bound to the first of ``WEBHOOK_SECRETS`` / ``WEBHOOK_SECRET``."""
    secrets = _configured_secrets()
    if not secrets:
        pytest.fail(
            "promptjuggler_signature needs a webhook secret: set "
            'settings.PROMPTJUGGLER["WEBHOOK_SECRETS"] (or "WEBHOOK_SECRET").'
        )
    return WebhookSigner(secrets[0])


def _pytest_django_settings(request: pytest.FixtureRequest) -> Any:
    """pytest-django's ``settings`` fixture (restored after the test), or ``None`` without it.

    Only asked for when Django is configured: pytest-django skips tests that use its
    ``settings`` fixture otherwise, and the emulator is useful without Django settings too.
    """
    try:
        from django.conf import settings
    except ImportError:  # pragma: no cover
        return None
    if not settings.configured:
        return None
    try:
        return request.getfixturevalue("settings")
    except pytest.FixtureLookupError:
        return None
