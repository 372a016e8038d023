"""Every refusal of the webhook view says why, in a short code a tool can read.

The body of a 400 (and of the 405, 413 and 503) is ``{"error": "<code>", "detail": "<words>"}``
with a code from :class:`promptjuggler_django.webhooks.Refusal`; the app's own logger gets a
WARNING with the code, and neither carries the secret, the header or its signature.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest
from django.test import Client

from promptjuggler_django import signature
from promptjuggler_django.models import WebhookDelivery
from promptjuggler_django.webhooks import REFUSAL_STATUS, Refusal

from .webhook_support import (
    NOW,
    PRIMARY,
    SECONDARY,
    TOLERANCE,
    URL_KINDS,
    URL_NAMES,
    body_for,
    encode,
    fixed_clock,  # noqa: F401  (fixture)
    post,
    url,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fixed_clock")]

APP_LOGGER = "promptjuggler_django.webhooks"
WEBHOOKS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "webhooks.md"


@pytest.fixture(params=URL_NAMES)
def endpoint(request: pytest.FixtureRequest) -> tuple[str, bytes]:
    name = request.param
    return url(name), encode(body_for(URL_KINDS[name]))


def refusal(response, reason: str, status: int = 400) -> str:
    """Assert the answer is the JSON refusal ``reason``; return its detail."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    answer = response.json()
    assert set(answer) == {"error", "detail"}
    assert answer["error"] == reason
    assert isinstance(answer["detail"], str) and answer["detail"]
    assert not WebhookDelivery.objects.exists()
    return answer["detail"]


def test_no_signature(client: Client, endpoint) -> None:
    target, body = endpoint
    detail = refusal(client.post(target, body, content_type="application/json"), "no_signature")
    assert detail == "No PromptJuggler-Signature header."


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"t={NOW}",
        "v1=" + "a" * 64,
        f"t={NOW},v1=" + "z" * 64,
        f"t={NOW},v0=" + "a" * 64,
        f"t={NOW},t={NOW + 1},v1=" + "a" * 64,
        "t=" + "\u0661" * 10 + ",v1=" + "a" * 64,
        "," * 5000,
    ],
    ids=["empty", "garbage", "no-v1", "no-t", "not-hex", "only-v0", "two-t", "unicode", "huge"],
)
def test_malformed(client: Client, endpoint, header: str) -> None:
    target, body = endpoint
    refusal(post(client, target, body, header=header), "malformed")


@pytest.mark.parametrize("offset", [-TOLERANCE - 1, TOLERANCE + 1, -86_400])
def test_stale(client: Client, endpoint, offset: int) -> None:
    target, body = endpoint
    detail = refusal(post(client, target, body, timestamp=NOW + offset), "stale")
    direction = "ahead of" if offset > 0 else "behind"
    assert f"{abs(offset)} s {direction} this server's clock (tolerance 300 s)" in detail


def test_mismatch(client: Client, endpoint) -> None:
    target, body = endpoint
    detail = refusal(post(client, target, body, secret="whsec_someone_else"), "mismatch")
    assert detail == "PromptJuggler-Signature matches no configured webhook secret."


def test_tampered_body_is_a_mismatch(client: Client, endpoint) -> None:
    target, body = endpoint
    refusal(post(client, target, body + b" ", sign_body=body), "mismatch")


def test_too_large(client: Client, endpoint, settings) -> None:
    target, _ = endpoint
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_MAX_BODY_BYTES": 1024}
    detail = refusal(post(client, target, b"x" * 2048), "too_large", status=413)
    assert "1024 bytes" in detail


def test_not_configured(client: Client, endpoint, settings) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_SECRETS": []}
    target, body = endpoint
    detail = refusal(post(client, target, body), "not_configured", status=503)
    assert "WEBHOOK_SECRETS" in detail


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_method_not_allowed(client: Client, endpoint, method: str) -> None:
    target, _ = endpoint
    response = getattr(client, method)(target)
    refusal(response, "method_not_allowed", status=405)
    assert response.headers["Allow"] == "POST, HEAD, OPTIONS"


class BrokenStream(io.RawIOBase):
    """A request body whose client went away after the headers."""

    def read(self, size: int = -1) -> bytes:
        raise OSError("connection reset by peer")

    def readable(self) -> bool:
        return True


def test_unreadable(client: Client, endpoint) -> None:
    target, body = endpoint
    response = client.generic(
        "POST",
        target,
        body,
        content_type="application/json",
        headers={signature.HEADER: signature.sign(body, PRIMARY, NOW)},
        **{"wsgi.input": BrokenStream()},
    )
    refusal(response, "unreadable")


def test_the_answer_is_json_under_debug_too(client: Client, endpoint, settings) -> None:
    """With ``DEBUG = True`` Django would answer a SuspiciousOperation with its debug page."""
    settings.DEBUG = True
    target, body = endpoint
    response = post(client, target, body, secret="whsec_wrong")
    refusal(response, "mismatch")
    assert b"<html" not in response.content.lower()


def test_no_refusal_carries_secret_material(client: Client, endpoint, caplog) -> None:
    target, body = endpoint
    headers = [
        signature.sign(body, "whsec_wrong", NOW),
        signature.sign(body, PRIMARY, NOW - 3600),
        f"t={NOW},v0={signature.compute(body, PRIMARY, NOW)}",
    ]
    with caplog.at_level(logging.DEBUG):
        answers = [post(client, target, body, header=header).content for header in headers]
    text = b"".join(answers).decode() + caplog.text
    for header in headers:
        assert header.split("=")[-1] not in text
    assert PRIMARY not in text and SECONDARY not in text
    assert signature.compute(body, PRIMARY, NOW) not in text


def test_a_refusal_is_a_warning_on_the_apps_logger(client: Client, endpoint, caplog) -> None:
    """Django's default logging shows nothing of ``django.security`` with ``DEBUG = False``;
    a WARNING on the app's logger reaches whatever handles ``promptjuggler_django``."""
    target, body = endpoint
    with caplog.at_level(logging.WARNING, logger=APP_LOGGER):
        post(client, target, body, secret="whsec_wrong")
    (record,) = [r for r in caplog.records if r.name == APP_LOGGER]
    assert record.levelno == logging.WARNING
    assert record.webhook_refusal == "mismatch"
    assert "(mismatch)" in record.getMessage()
    assert target in record.getMessage()
    security = [r for r in caplog.records if r.name.startswith("django.security")]
    assert [r.name for r in security] == ["django.security.WebhookValidationError"]
    assert security[0].getMessage() == (
        "PromptJuggler-Signature matches no configured webhook secret."
    )


def test_every_code_has_a_status_and_is_documented() -> None:
    assert set(REFUSAL_STATUS) == set(Refusal)
    page = WEBHOOKS_PAGE.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", page, re.MULTILINE))
    assert documented == {(str(code), str(REFUSAL_STATUS[code])) for code in Refusal}
    assert {"no_signature", "malformed", "stale", "mismatch"} <= {str(c) for c in Refusal}
