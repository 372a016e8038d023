"""Secrets as operators really supply them: read from files, with whitespace, in odd encodings.

A key read from a mounted secret file keeps its trailing newline. The app strips surrounding
whitespace of the API key and of every webhook secret (a system check names the setting), refuses
a control character inside one (an error check), and redacts every form in which an error can
carry a secret: verbatim, escaped, as a bytes repr, percent- or JSON-encoded.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.urls import reverse

from promptjuggler_django import sync
from promptjuggler_django.checks import check_settings
from promptjuggler_django.client import PromptJugglerClient
from promptjuggler_django.conf import pj_settings
from promptjuggler_django.models import KnowledgeDocument, SyncState
from promptjuggler_django.redaction import REDACTED, redact, secret_forms
from promptjuggler_django.testing import sign_webhook
from tests.sync_support import *  # noqa: F403  (fixtures: pj, kb, …)
from tests.sync_support import make_doc

KEY = "pj_live_0123456789abcdef"


def with_settings(settings: Any, **values: Any) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, **values}


def check_ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


# -- surrounding whitespace is stripped, and a check says so ----------------------------------


@pytest.mark.parametrize("padding", ["\n", "\r\n", " ", "\t \n"])
def test_the_api_key_from_a_secret_file_is_stripped(settings: Any, padding: str) -> None:
    with_settings(settings, API_KEY=KEY + padding)
    assert pj_settings.API_KEY == KEY
    messages = check_settings()
    assert check_ids(messages) == ["promptjuggler_django.W002"]
    assert 'settings.PROMPTJUGGLER["API_KEY"]' in messages[0].msg
    assert KEY not in messages[0].msg + (messages[0].hint or "")


def test_the_api_key_from_the_environment_is_stripped(settings: Any, monkeypatch: Any) -> None:
    with_settings(settings, API_KEY=None)
    monkeypatch.setenv("PROMPTJUGGLER_API_KEY", f"{KEY}\n")
    assert pj_settings.API_KEY == KEY
    messages = check_settings()
    assert check_ids(messages) == ["promptjuggler_django.W002"]
    assert "PROMPTJUGGLER_API_KEY environment variable" in messages[0].msg


def test_webhook_secrets_are_stripped_and_each_padded_one_named(settings: Any) -> None:
    with_settings(settings, WEBHOOK_SECRETS=["whsec_a", "whsec_b\n"], WEBHOOK_SECRET=" whsec_c ")
    assert pj_settings.webhook_secrets == ["whsec_a", "whsec_b", "whsec_c"]
    messages = check_settings()
    assert check_ids(messages) == ["promptjuggler_django.W002", "promptjuggler_django.W002"]
    named = " ".join(m.msg for m in messages)
    assert 'settings.PROMPTJUGGLER["WEBHOOK_SECRETS"][1]' in named
    assert 'settings.PROMPTJUGGLER["WEBHOOK_SECRET"]' in named
    assert "whsec_b" not in named and "whsec_c" not in named


def test_a_whitespace_only_secret_is_no_secret(settings: Any) -> None:
    with_settings(settings, WEBHOOK_SECRETS=["whsec_a", " \n"])
    with pytest.raises(ImproperlyConfigured, match="a list of non-empty strings"):
        pj_settings.webhook_secrets  # noqa: B018


@pytest.mark.parametrize(
    ("key", "value", "label"),
    [
        ("API_KEY", "pj_live_abc\ndef", 'settings.PROMPTJUGGLER["API_KEY"]'),
        ("API_KEY", "pj_live_abc\x00", 'settings.PROMPTJUGGLER["API_KEY"]'),
        ("WEBHOOK_SECRET", "whsec_a\rb", 'settings.PROMPTJUGGLER["WEBHOOK_SECRET"]'),
        (
            "WEBHOOK_SECRETS",
            ["whsec_ok", "whsec_\x1b[0m"],
            'settings.PROMPTJUGGLER["WEBHOOK_SECRETS"][1]',
        ),
    ],
)
def test_a_control_character_inside_a_secret_is_an_error(
    settings: Any, key: str, value: Any, label: str
) -> None:
    with_settings(settings, **{key: value})
    messages = check_settings()
    assert check_ids(messages) == ["promptjuggler_django.E005"]
    assert label in messages[0].msg
    for text in (messages[0].msg, messages[0].hint or ""):
        assert "pj_live_abc" not in text and "whsec_" not in text.replace('"WEBHOOK_', "")


def test_a_padded_key_pushes_and_never_reaches_an_error(pj: Any, kb: Any, settings: Any) -> None:
    # Before: httpx refused the header and its message (the key, escaped) went into last_error.
    with_settings(settings, API_KEY=pj.api_key + "\n")
    doc = make_doc(kb)
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert (doc.sync_state, doc.last_error) == (SyncState.SYNCED, "")
    assert next(r.status_code for r in pj.requests if r.endpoint == "upload") < 300


def test_a_padded_webhook_secret_verifies(settings: Any, client: Any, db: Any) -> None:
    # Before: every delivery was a 400 with no hint, the secret compared with its newline.
    with_settings(settings, WEBHOOK_SECRETS=["whsec_from_a_file\n"])
    body = json.dumps({"event": "unknown.event", "data": {}}).encode()
    response = client.post(
        reverse("promptjuggler_django:webhook"),
        body,
        content_type="application/json",
        HTTP_PROMPTJUGGLER_SIGNATURE=sign_webhook(body, "whsec_from_a_file"),
    )
    assert response.status_code == 200


def test_the_client_strips_and_refuses_like_the_settings() -> None:
    client = PromptJugglerClient(api_key=f"  {KEY}\n", base_url="http://127.0.0.1:9")
    try:
        assert client._http.headers["authorization"] == f"Bearer {KEY}"
    finally:
        client.close()
    with pytest.raises(ValueError, match="control character") as caught:
        PromptJugglerClient(api_key="pj_live_a\nb")
    assert "pj_live_a" not in str(caught.value)


# -- redaction covers every form -------------------------------------------------------------


SECRET = 'pj_live_Ünïcode/+= "quoted"\n'


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        repr(SECRET)[1:-1],  # str escaped: \n as backslash-n
        repr(SECRET.encode())[2:-1],  # bytes repr: b'...\xc3\x9c...'
        repr(f"Bearer {SECRET}".encode()),  # the whole header as httpx prints it
        quote(SECRET, safe=""),
        quote(SECRET),
        quote_plus(SECRET),
        json.dumps(SECRET)[1:-1],
        json.dumps(SECRET, ensure_ascii=False)[1:-1],
        SECRET.strip(),
    ],
)
def test_redaction_covers_every_form_an_error_can_carry(form: str) -> None:
    text = f"Illegal header value {form} (and again: {form})"
    redacted = redact(text, [SECRET])
    assert REDACTED in redacted
    for variant in secret_forms(SECRET):
        assert variant not in redacted
    assert "Illegal header value" in redacted


def test_redaction_leaves_other_text_alone() -> None:
    assert redact("nothing to hide", ["pj_live_x"]) == "nothing to hide"
    assert redact("a pj_live_x b", []) == "a pj_live_x b"
    assert redact("a pj_live_x b", ["", "pj_live_x"]) == f"a {REDACTED} b"


class _EchoTransport(httpx.BaseTransport):
    """A transport that fails the way httpx does on a bad header: quoting the bytes."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        value = dict((k.lower(), v) for k, v in request.headers.raw)[b"authorization"]
        raise httpx.LocalProtocolError(f"Illegal header value {value!r}")


def test_a_client_error_quoting_the_header_is_redacted(caplog: Any) -> None:
    client = PromptJugglerClient(
        api_key=KEY, base_url="http://127.0.0.1:9", transport=_EchoTransport(), max_retries=1
    )
    client._sleep = lambda _s: None
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Exception) as caught:
        client.get_knowledge_base("kb_test")
    client.close()
    for text in (str(caught.value), repr(caught.value), caplog.text):
        assert KEY not in text
    assert REDACTED in str(caught.value)


@pytest.mark.django_db
def test_the_sync_command_never_prints_the_key(pj: Any, kb: Any, settings: Any) -> None:
    with_settings(settings, API_KEY=pj.api_key + "\n")
    make_doc(kb)
    out, err = io.StringIO(), io.StringIO()
    call_command("promptjuggler_sync", stdout=out, stderr=err)
    assert pj.api_key not in out.getvalue() + err.getvalue()
    assert KnowledgeDocument.objects.get().sync_state == SyncState.SYNCED
