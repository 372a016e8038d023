"""``PromptJuggler-Signature`` signing and verification over raw bytes."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptjuggler_django import signature
from promptjuggler_django.signature import VerifiedSignature, parse_header, sign, verify

T = 1_800_000_000
BODY = b'{"id":"5f0c","status":"ready","chunkCount":3}'
SECRETS = ["whsec_one", "whsec_two"]


def v1(body: bytes = BODY, secret: str = "whsec_one", timestamp: int = T) -> str:
    """The expected HMAC, computed here independently of the module."""
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def test_sign_matches_the_documented_scheme() -> None:
    assert sign(BODY, "whsec_one", T) == f"t={T},v1={v1()}"
    assert signature.compute(BODY, "whsec_one", T) == v1()


def test_sign_defaults_to_now(monkeypatch) -> None:
    monkeypatch.setattr(signature.time, "time", lambda: T + 0.9)
    assert sign(BODY, "whsec_one") == f"t={T},v1={v1()}"


def test_the_official_sdk_accepts_what_we_sign() -> None:
    sdk = pytest.importorskip("promptjuggler")
    header = sign(BODY, "whsec_one", T)
    assert sdk.verify_webhook_signature(BODY.decode(), header, "whsec_one", now=T)
    assert not sdk.verify_webhook_signature(BODY.decode(), header, "whsec_two", now=T)


def test_a_secret_is_used_whole_as_utf8() -> None:
    secret = "whsec_çà✓"
    assert verify(BODY, sign(BODY, secret, T), [secret], now=T) == VerifiedSignature(T, 0)
    assert v1(secret=secret) == signature.compute(BODY, secret, T)


@pytest.mark.parametrize("body", [BODY, bytearray(BODY)])
def test_verify_takes_bytes(body) -> None:
    assert verify(body, f"t={T},v1={v1()}", SECRETS, now=T) == VerifiedSignature(T, 0)


def test_verify_refuses_text_bodies() -> None:
    """A str body would be re-encoded; only the raw bytes prove anything."""
    assert verify(BODY.decode(), f"t={T},v1={v1()}", SECRETS, now=T) is None  # type: ignore[arg-type]


def test_rotation_reports_which_secret_matched() -> None:
    assert verify(BODY, sign(BODY, "whsec_two", T), SECRETS, now=T) == VerifiedSignature(T, 1)
    assert verify(BODY, sign(BODY, "whsec_two", T), ["", "whsec_two"], now=T).secret_index == 1
    assert verify(BODY, sign(BODY, "whsec_two", T), ["whsec_one"], now=T) is None
    assert verify(BODY, sign(BODY, "whsec_two", T), [], now=T) is None


@pytest.mark.parametrize(
    ("now", "ok"),
    [
        (T, True),
        (T + 300, True),
        (T - 300, True),
        (T + 300.5, False),
        (T + 301, False),
        (T - 301, False),
    ],
)
def test_tolerance_is_symmetric_and_inclusive(now: float, ok: bool) -> None:
    assert (verify(BODY, f"t={T},v1={v1()}", SECRETS, now=now) is not None) is ok


def test_custom_tolerance() -> None:
    header = f"t={T},v1={v1()}"
    assert verify(BODY, header, SECRETS, tolerance=10, now=T + 10)
    assert verify(BODY, header, SECRETS, tolerance=10, now=T + 11) is None


@pytest.mark.parametrize(
    "header",
    [
        f"t={T},v1={v1()}",
        f"v1={v1()},t={T}",
        f" t = {T} , v1 = {v1()} ",
        f"t={T},v1={v1().upper()}",
        f"t={T},v0=abc,v1={v1()},v2=zzz,x",
        f"t={T},v1={'0' * 64},v1={v1()}",
        f"t={T},v1={v1()},v1={'0' * 64}",
        f"t={T},t={T},v1={v1()}",
        f"t={T},v1={'é' * 64},v1={v1()}",
    ],
)
def test_lenient_parsing(header: str) -> None:
    assert verify(BODY, header, SECRETS, now=T) == VerifiedSignature(T, 0)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        f"t={T}",
        f"v1={v1()}",
        f"t={T},v1=",
        f"t={T},v1={v1()[:-1]}",
        f"t={T},v1={v1()}0",
        f"t={T},v1={'é' * 64}",
        f"t={T},v0={v1()}",
        f"t={T},t={T + 1},v1={v1()}",
        f"t= {T}x,v1={v1()}",
        f"t=+{T},v1={v1()}",
        f"t={T}.0,v1={v1()}",
        f"t={chr(0x0661) * 10},v1={v1()}",  # Arabic-Indic digits: isdigit() but not ASCII
        f"t={T},v1={v1()}" + "," * signature.MAX_HEADER_LENGTH,
    ],
)
def test_refusals(header) -> None:
    assert verify(BODY, header, SECRETS, now=T) is None


def test_parse_header() -> None:
    assert parse_header(f"t={T},v1={'A' * 64},v1={'b' * 64}") == (T, ["a" * 64, "b" * 64])
    assert parse_header(12) is None  # type: ignore[arg-type]
    assert parse_header(f"t={'9' * 13},v1={'a' * 64}") is None


def test_repr_reveals_nothing_secret() -> None:
    assert repr(VerifiedSignature(T, 1)) == f"VerifiedSignature(timestamp={T}, secret_index=1)"


@settings(max_examples=500, deadline=None)
@given(header=st.text(max_size=300), body=st.binary(max_size=200), now=st.floats(0, 1e11))
def test_hostile_headers_never_raise(header: str, body: bytes, now: float) -> None:
    assert verify(body, header, SECRETS, now=now) is None
    parse_header(header)  # no exception either


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=500),
    secret=st.text(min_size=1, max_size=60),
    timestamp=st.integers(0, 10**11),
    skew=st.integers(-300, 300),
)
def test_whatever_is_signed_verifies(body: bytes, secret: str, timestamp: int, skew: int) -> None:
    header = sign(body, secret, timestamp)
    assert verify(body, header, ["whsec_other", secret], now=timestamp + skew) == (
        VerifiedSignature(timestamp, 0 if secret == "whsec_other" else 1)
    )
    if body:
        assert verify(body[:-1], header, [secret], now=timestamp) is None
