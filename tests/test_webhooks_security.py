"""The shared security suite, run against every webhook URL.

Each case posts through Django's test client with the view's clock fixed at ``NOW``; a refused
delivery must leave no row behind, an accepted one exactly one.
"""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from django.db import connection, transaction
from django.test import Client

from promptjuggler_django import signature
from promptjuggler_django.models import WebhookDelivery
from promptjuggler_django.webhooks import _deliveries as deliveries

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


@pytest.fixture(params=URL_NAMES)
def endpoint(request: pytest.FixtureRequest) -> tuple[str, bytes]:
    """A webhook URL and a well-formed body for it."""
    name = request.param
    return url(name), encode(body_for(URL_KINDS[name]))


def good_v1(body: bytes, secret: str = PRIMARY, timestamp: int = NOW) -> str:
    return signature.compute(body, secret, timestamp)


def assert_refused(response, status: int = 400) -> None:
    assert response.status_code == status
    assert WebhookDelivery.objects.count() == 0


def assert_logged(response, **fields) -> WebhookDelivery:
    assert response.status_code == 200, response.content
    delivery = WebhookDelivery.objects.get()
    for name, value in fields.items():
        assert getattr(delivery, name) == value, name
    return delivery


def test_valid_delivery_is_logged(client: Client, endpoint) -> None:
    target, body = endpoint
    delivery = assert_logged(post(client, target, body), secret_index=0, duplicate_count=0)
    assert delivery.signature_timestamp.timestamp() == NOW
    assert delivery.body == body.decode()


def test_missing_signature(client: Client, endpoint) -> None:
    target, body = endpoint
    assert_refused(client.post(target, body, content_type="application/json"))


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "t=,v1=",
        f"t={NOW}",
        "v1=" + "a" * 64,
        f"t={NOW},v1=" + "z" * 64,
        f"t={NOW},v1=" + "a" * 63,
        f"t={NOW},v1=" + "a" * 65,
        f"t=-{NOW},v1=" + "a" * 64,
        f"t={NOW}.5,v1=" + "a" * 64,
        f"t=0x{NOW:x},v1=" + "a" * 64,
        f"t={NOW},t={NOW + 1},v1=" + "a" * 64,
        f"t={NOW},v0=" + "a" * 64,
        "t=" + "9" * 40 + ",v1=" + "a" * 64,
        "," * 5000,
        "=\x00=",
    ],
)
def test_malformed_signature(client: Client, endpoint, header: str) -> None:
    target, body = endpoint
    assert_refused(post(client, target, body, header=header))


def test_wrong_secret(client: Client, endpoint) -> None:
    target, body = endpoint
    assert_refused(post(client, target, body, secret="whsec_someone_else"))


def test_signature_in_a_scheme_we_do_not_know_is_ignored(client: Client, endpoint) -> None:
    target, body = endpoint
    header = f"t={NOW},v0={good_v1(body)}"
    assert_refused(post(client, target, body, header=header))


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-TOLERANCE, True), (TOLERANCE, True), (-TOLERANCE - 1, False), (TOLERANCE + 1, False)],
    ids=["-tolerance", "+tolerance", "stale", "future"],
)
def test_timestamp_tolerance_edges(client: Client, endpoint, offset: int, accepted: bool) -> None:
    target, body = endpoint
    response = post(client, target, body, timestamp=NOW + offset)
    if accepted:
        assert_logged(response)
    else:
        assert_refused(response)


def test_tampered_body(client: Client, endpoint) -> None:
    target, body = endpoint
    tampered = body.replace(b'"id"', b'"id" ')
    assert tampered != body
    assert_refused(post(client, target, tampered, sign_body=body))


def test_non_utf8_body_with_a_bad_signature_is_refused(client: Client, endpoint) -> None:
    target, _ = endpoint
    assert_refused(post(client, target, b"\xff\xfe{}", header=f"t={NOW},v1=" + "0" * 64))


def test_non_utf8_body_behind_a_valid_signature_is_logged_invalid(client: Client, endpoint) -> None:
    target, _ = endpoint
    body = b'{"id": "\xff\xfe", "status": "ready"}'
    delivery = assert_logged(post(client, target, body), outcome="invalid")
    assert delivery.detail == "body is not UTF-8"
    assert "\ufffd" in delivery.body


def in_digits(zero: int, number: int) -> str:
    """``number`` written with the Unicode digits starting at code point ``zero``."""
    return "".join(chr(zero + int(d)) for d in str(number))


@pytest.mark.parametrize(
    "digits",
    [in_digits(0x0660, NOW), in_digits(0xFF10, NOW), in_digits(0x1D7CE, NOW)],
    ids=["arabic-indic", "fullwidth", "mathematical-bold"],
)
def test_unicode_digit_timestamp(client: Client, endpoint, digits: str) -> None:
    target, body = endpoint
    assert int(digits) == NOW  # Python itself would read it as the right time
    assert_refused(post(client, target, body, header=f"t={digits},v1={good_v1(body)}"))


def test_non_ascii_v1(client: Client, endpoint) -> None:
    target, body = endpoint
    assert_refused(post(client, target, body, header=f"t={NOW},v1=" + "é" * 64))


def test_non_ascii_v1_beside_a_good_one(client: Client, endpoint) -> None:
    target, body = endpoint
    header = f"t={NOW},v1={'ü' * 64},v1={good_v1(body)}"
    assert_logged(post(client, target, body, header=header))


@pytest.mark.parametrize("good_position", ["first", "last"])
def test_repeated_v1(client: Client, endpoint, good_position: str) -> None:
    target, body = endpoint
    others = [good_v1(body, secret="whsec_other"), "0" * 64, "f" * 64]
    values = [good_v1(body), *others] if good_position == "first" else [*others, good_v1(body)]
    header = f"t={NOW}," + ",".join(f"v1={v}" for v in values)
    assert_logged(post(client, target, body, header=header))


def test_lenient_header_layout(client: Client, endpoint) -> None:
    target, body = endpoint
    header = f" v2=zzz , v1 = {good_v1(body).upper()} ,  t = {NOW} "
    assert_logged(post(client, target, body, header=header))


def test_second_secret_of_a_rotation(client: Client, endpoint) -> None:
    target, body = endpoint
    assert_logged(post(client, target, body, secret=SECONDARY), secret_index=1)


def test_single_secret_setting(client: Client, endpoint, settings) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_SECRETS": []}
    settings.PROMPTJUGGLER["WEBHOOK_SECRET"] = "whsec_only"
    target, body = endpoint
    assert_refused(post(client, target, body))
    assert_logged(post(client, target, body, secret="whsec_only"), secret_index=0)


def test_no_secret_configured_refuses_everything(client: Client, endpoint, settings) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_SECRETS": []}
    target, body = endpoint
    assert_refused(post(client, target, body), status=503)


def test_huge_body(client: Client, endpoint, settings) -> None:
    target, _ = endpoint
    limit = 256 * 1024
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_MAX_BODY_BYTES": limit}
    huge = b"{" + b" " * limit + b"}"
    assert_refused(post(client, target, huge), status=413)
    assert_refused(post(client, target, b"x" * (10 * limit)), status=413)


def test_body_at_the_limit_is_read(client: Client, endpoint, settings) -> None:
    target, body = endpoint
    limit = 2048
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_MAX_BODY_BYTES": limit}
    padded = body + b" " * (limit - len(body))
    delivery = assert_logged(post(client, target, padded))
    assert delivery.outcome != "invalid"


def test_understated_content_length_is_not_trusted_further(endpoint, settings) -> None:
    """The body is read only up to the declared length; the rest never counts as signed."""
    target, body = endpoint
    header = signature.sign(body + b"trailing", PRIMARY, NOW)
    response = Client().generic(
        "POST",
        target,
        body + b"trailing",
        content_type="application/json",
        headers={signature.HEADER: header},
        CONTENT_LENGTH=str(len(body)),
    )
    assert_refused(response)


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "trace"])
def test_wrong_methods(client: Client, endpoint, method: str) -> None:
    target, _ = endpoint
    response = getattr(client, method)(target)
    assert_refused(response, status=405)
    assert response.headers["Allow"] == "POST, HEAD, OPTIONS"


@pytest.mark.parametrize("method", ["head", "options"])
def test_head_and_options_are_answered(client: Client, endpoint, method: str) -> None:
    target, _ = endpoint
    response = getattr(client, method)(target)
    assert_refused(response, status=200)


def test_unknown_shape(client: Client, endpoint) -> None:
    target, _ = endpoint
    body = json.dumps({"event": "something.new", "data": {"id": str(uuid.uuid4())}}).encode()
    on_shared_url = target == url("webhook")
    expected = "unrecognised" if on_shared_url else "invalid"
    assert_logged(post(client, target, body), outcome=expected)


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"not json", b"[1, 2]", b'"ready"', b"null", b"[" * 100_000 + b"]" * 100_000],
    ids=["empty", "truncated", "text", "array", "string", "null", "deep"],
)
def test_invalid_json_behind_a_valid_signature(client: Client, endpoint, body: bytes) -> None:
    target, _ = endpoint
    assert_logged(post(client, target, body), outcome="invalid")


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "\u0000", "status": "ready"},
        {"id": "\ud800", "status": "ready"},
        {"status": "ready\u0000"},
        {"status": "x" * 33},
        {"status": 7},
        {"id": 12},
        {"id": "a" * 65},
        {"chunkCount": -1},
        {"chunkCount": True},
        {"chunkCount": 2**31},
        {"chunkCount": "3"},
        {"documentCount": 1.5},
    ],
)
def test_hostile_fields_behind_a_valid_signature(client: Client, endpoint, fields) -> None:
    """Values no column can hold (NUL, lone surrogates, huge counts) are refused as invalid."""
    target, body = endpoint
    payload = {**json.loads(body), **fields}
    assert_logged(post(client, target, payload), outcome="invalid")


def test_csrf_checks_do_not_apply(endpoint) -> None:
    target, body = endpoint
    assert_logged(post(Client(enforce_csrf_checks=True), target, body))


def test_public_under_login_required_middleware(client: Client, endpoint, settings) -> None:
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE,
        "django.contrib.auth.middleware.LoginRequiredMiddleware",
    ]
    target, body = endpoint
    assert_logged(post(client, target, body))


def test_the_signature_is_never_logged(client: Client, endpoint) -> None:
    target, body = endpoint
    header = signature.sign(body, PRIMARY, NOW)
    delivery = assert_logged(post(client, target, body, header=header, HTTP_USER_AGENT="PJ/1"))
    assert delivery.headers == {"Content-Type": "application/json", "User-Agent": "PJ/1"}
    stored = json.dumps(list(WebhookDelivery.objects.values()), default=str)
    assert header.split("v1=")[1] not in stored
    assert PRIMARY not in stored


def test_refusals_go_to_the_security_log_without_the_header(client: Client, endpoint, caplog):
    target, body = endpoint
    header = signature.sign(body, "whsec_wrong", NOW)
    with caplog.at_level(logging.ERROR, logger="django.security"):
        assert_refused(post(client, target, body, header=header))
    (record,) = [r for r in caplog.records if r.name.startswith("django.security")]
    assert record.name == "django.security.WebhookValidationError"
    assert "matches no configured webhook secret" in record.getMessage()
    assert header.split("v1=")[1] not in caplog.text


def test_clock_skew_is_explained(client: Client, endpoint, caplog) -> None:
    target, body = endpoint
    with caplog.at_level(logging.ERROR, logger="django.security"):
        assert_refused(post(client, target, body, timestamp=NOW - 3600))
        assert_refused(post(client, target, body, timestamp=NOW + 400))
    assert "3600 s behind this server's clock (tolerance 300 s)" in caplog.text
    assert "400 s ahead of this server's clock" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_not_wrapped_by_atomic_requests(client: Client, endpoint, monkeypatch) -> None:
    """Under ATOMIC_REQUESTS the view still owns its transactions (an error row must survive)."""
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    seen: list[bool] = []
    receive = deliveries.receive

    def spy(*args, **kwargs):
        seen.append(transaction.get_connection().in_atomic_block)
        return receive(*args, **kwargs)

    monkeypatch.setattr(deliveries, "receive", spy)
    target, body = endpoint
    assert_logged(post(client, target, body))
    assert seen == [False]
