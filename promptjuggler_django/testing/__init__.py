"""Test helpers shipped with the app: the PromptJuggler emulator and webhook signing.

``FakePromptJuggler`` is a real HTTP server on loopback that speaks PromptJuggler's
knowledge-base and run API, simulates processing and runs, sends signed webhooks and injects
faults. The pytest plugin (``promptjuggler_django.testing.pytest_plugin``, registered
automatically) provides the ``fake_promptjuggler`` and ``promptjuggler_signature`` fixtures.
See ``docs/testing.md``.
"""

from __future__ import annotations

from ..signature import HEADER as SIGNATURE_HEADER
from ..signature import sign as _sign
from .emulator import FakePromptJuggler, WebhookDeliveryError
from .faults import ENDPOINTS
from .runs import FakeRun, FakeRunnable
from .server import RecordedRequest
from .state import FakeDocument, FakeKnowledgeBase
from .webhooks import RecordedDelivery


def sign_webhook(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``PromptJuggler-Signature`` header value PromptJuggler would send with ``body``.

    ``timestamp`` defaults to now; pass an old one to test the tolerance window.
    """
    return _sign(body, secret, timestamp)


__all__ = [
    "ENDPOINTS",
    "SIGNATURE_HEADER",
    "FakeDocument",
    "FakeKnowledgeBase",
    "FakePromptJuggler",
    "FakeRun",
    "FakeRunnable",
    "RecordedDelivery",
    "RecordedRequest",
    "WebhookDeliveryError",
    "sign_webhook",
]
