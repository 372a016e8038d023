"""``promptjuggler_doctor``: after a deploy, say in plain words what is wrong, or that nothing is.

PromptJuggler is the bundled emulator over loopback; the webhook is the site's real endpoint on
``live_server``. Where the endpoint must disagree with the command (another secret, another
clock), its documented override points (``get_secrets``, ``current_time``) stand in for a site
configured differently.
"""

from __future__ import annotations

import io
import re
import socket
import time

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from promptjuggler_django.models import KnowledgeBase, WebhookDelivery
from promptjuggler_django.webhooks import WebhookView

pytestmark = pytest.mark.django_db(transaction=True)

COMMAND = "promptjuggler_doctor"


def doctor(*args: str) -> str:
    """Run the doctor expecting no problem; its output."""
    out = io.StringIO()
    call_command(COMMAND, *args, stdout=out)
    return out.getvalue()


def doctor_finds_problems(*args: str) -> tuple[str, str]:
    """Run the doctor expecting problems (exit status 1); its output and its last words."""
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command(COMMAND, *args, stdout=out)
    assert info.value.returncode == 1
    return out.getvalue(), str(info.value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def webhook_url(live_server) -> str:
    return live_server.url + reverse("promptjuggler_django:webhook")


def test_all_is_well(fake_promptjuggler, webhook_url) -> None:
    out = doctor("--webhook-url", webhook_url)
    assert "OK       kb_test (DEFAULT_KNOWLEDGE_BASE): status ready, 0 documents" in out
    assert "OK       a signed test delivery was accepted (outcome unknown_object)" in out
    assert "OK       this machine's clock is within " in out
    assert out.rstrip().endswith("No problem found.")
    head, get = fake_promptjuggler.requests
    assert (get.method, get.path) == ("GET", "/api/v1/knowledge-bases/kb_test")
    assert (head.method, head.path) == ("HEAD", "/")  # for the Date header, without the key
    assert "authorization" not in head.headers
    assert WebhookDelivery.objects.get().outcome == "unknown_object"
    assert fake_promptjuggler.api_key not in out


def test_every_knowledge_base_the_table_knows_is_checked(fake_promptjuggler) -> None:
    fake_promptjuggler.create_knowledge_base("kb_other")
    KnowledgeBase.objects.create(slug="kb_other")
    KnowledgeBase.objects.create(slug="kb_test")  # the default, checked once
    KnowledgeBase.objects.create(slug="kb_gone")
    out, last = doctor_finds_problems()
    assert "OK       kb_other (KnowledgeBase table)" in out
    assert out.count("kb_test") == 1
    assert (
        "PROBLEM  kb_gone (KnowledgeBase table): PromptJuggler has no knowledge base with this "
        "slug (404): check the slug, or delete the row"
    ) in out
    assert "Webhook: not checked (pass --webhook-url https://your.site/promptjuggler/webhook/)" in (
        out
    )
    assert last == "1 problem found."


def test_only_the_knowledge_bases_asked_for(fake_promptjuggler) -> None:
    KnowledgeBase.objects.create(slug="kb_gone")
    out = doctor("--knowledge-base", "kb_test")
    assert "kb_gone" not in out
    with pytest.raises(CommandError, match="empty"):
        doctor("--knowledge-base", "")


def test_a_wrong_api_key(fake_promptjuggler, settings) -> None:
    KnowledgeBase.objects.create(slug="kb_other")
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "API_KEY": "pj_live_wrong_key"}
    out, last = doctor_finds_problems()
    assert (
        "PROBLEM  kb_test (DEFAULT_KNOWLEDGE_BASE): PromptJuggler refused the API key (401): "
        'check settings.PROMPTJUGGLER["API_KEY"]'
    ) in out
    # The key is the same for every knowledge base: one request says it all.
    assert "kb_other (KnowledgeBase table): not checked (the API key was refused)" in out
    assert [r.method for r in fake_promptjuggler.requests] == ["HEAD", "GET"]
    assert "pj_live_wrong_key" not in out + last
    assert last == "1 problem found."


def test_a_key_without_access(fake_promptjuggler) -> None:
    fake_promptjuggler.set_fault("get_knowledge_base", status=403)
    out, _ = doctor_finds_problems()
    assert (
        "PROBLEM  kb_test (DEFAULT_KNOWLEDGE_BASE): the API key may not read this knowledge "
        "base (403)"
    ) in out


def test_promptjuggler_out_of_order(fake_promptjuggler) -> None:
    fake_promptjuggler.set_fault("get_knowledge_base", status=503)
    out, _ = doctor_finds_problems()
    assert "PROBLEM  kb_test (DEFAULT_KNOWLEDGE_BASE): PromptJuggler answered 503" in out
    assert "try again later" in out


def test_an_unreachable_base_url_names_the_host(settings) -> None:
    port = free_port()
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BASE_URL": f"http://127.0.0.1:{port}"}
    out, _ = doctor_finds_problems("--timeout", "2")
    assert f"could not connect to 127.0.0.1:{port} (BASE_URL): Connection refused" in out
    assert settings.PROMPTJUGGLER["API_KEY"] not in out


def test_no_api_key(settings, monkeypatch) -> None:
    monkeypatch.delenv("PROMPTJUGGLER_API_KEY", raising=False)
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "API_KEY": None}
    out, _ = doctor_finds_problems()
    assert 'PROBLEM  no API key: set settings.PROMPTJUGGLER["API_KEY"]' in out
    assert "kb_test (DEFAULT_KNOWLEDGE_BASE): not checked (no API key)" in out


def test_no_knowledge_base_to_check(fake_promptjuggler, settings) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "DEFAULT_KNOWLEDGE_BASE": None}
    out, _ = doctor_finds_problems()
    assert "PROBLEM  no knowledge base to check the API key against: set " in out
    assert [r.method for r in fake_promptjuggler.requests] == ["HEAD"]


def test_a_webhook_secret_mismatch(fake_promptjuggler, webhook_url, monkeypatch) -> None:
    monkeypatch.setattr(WebhookView, "get_secrets", lambda self: ["whsec_site_only"])
    out, last = doctor_finds_problems("--webhook-url", webhook_url)
    assert "PROBLEM  The endpoint answered 400 (mismatch): the signature did not verify" in out
    assert 'the first of settings.PROMPTJUGGLER["WEBHOOK_SECRETS"]' in out
    assert "whsec_site_only" not in out and "whsec_test_primary" not in out
    assert last == "1 problem found."
    assert not WebhookDelivery.objects.exists()


def test_clock_skew(fake_promptjuggler, webhook_url, monkeypatch) -> None:
    monkeypatch.setattr(WebhookView, "current_time", lambda self: time.time() + 3600)
    out, _ = doctor_finds_problems("--webhook-url", webhook_url)
    assert "(stale): the timestamp is outside the tolerance: check the clocks" in out
    assert "s ahead of this server's clock" not in out  # the doctor's clock is the one behind
    assert "s behind this server's clock (tolerance 300 s)" in out


def test_a_site_without_a_webhook_secret(fake_promptjuggler, webhook_url, monkeypatch) -> None:
    monkeypatch.setattr(WebhookView, "get_secrets", lambda self: [])
    out, _ = doctor_finds_problems("--webhook-url", webhook_url)
    assert "(not_configured): the endpoint has no webhook secret" in out


def test_no_webhook_secret_here(fake_promptjuggler, webhook_url, settings) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_SECRETS": []}
    out, _ = doctor_finds_problems("--webhook-url", webhook_url)
    assert 'PROBLEM  no webhook secret: set settings.PROMPTJUGGLER["WEBHOOK_SECRETS"]' in out
    assert not WebhookDelivery.objects.exists()


def test_a_wrong_webhook_url(fake_promptjuggler, live_server, settings) -> None:
    settings.DEBUG = True
    out, _ = doctor_finds_problems("--webhook-url", live_server.url + "/promptjuggler/hook/")
    assert "PROBLEM  The endpoint answered 404: no webhook at this URL" in out
    assert "<html" not in out.lower()


def test_an_unreachable_webhook_host(fake_promptjuggler) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/promptjuggler/webhook/"
    out, _ = doctor_finds_problems("--webhook-url", url, "--timeout", "2")
    assert (
        f"PROBLEM  No answer from {url}: could not connect to 127.0.0.1:{port} (--webhook-url): "
        "Connection refused."
    ) in out


def test_problems_are_counted(settings) -> None:
    port = free_port()
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BASE_URL": f"http://127.0.0.1:{port}"}
    url = f"http://127.0.0.1:{port}/promptjuggler/webhook/"
    _, last = doctor_finds_problems("--webhook-url", url, "--timeout", "2")
    assert last == "2 problems found."


@pytest.mark.parametrize(("offset", "words"), [(3600, "ahead of"), (-400, "behind")])
def test_this_machines_clock_against_promptjugglers(
    fake_promptjuggler, monkeypatch, offset: int, words: str
) -> None:
    """PromptJuggler signs with its clock: the site's own clock must agree within the tolerance."""
    from promptjuggler_django.management.commands import promptjuggler_doctor

    monkeypatch.setattr(promptjuggler_doctor, "current_time", lambda: time.time() + offset)
    out, last = doctor_finds_problems()
    found = re.search(
        rf"PROBLEM  this machine's clock is about (\d+) s {words} PromptJuggler's \(its Date "
        r"header\): deliveries signed by PromptJuggler are refused as stale beyond "
        r"WEBHOOK_TOLERANCE \(300 s\): check NTP \(timedatectl\)\.",
        out,
    )
    assert found, out
    assert abs(int(found.group(1)) - abs(offset)) <= 1  # the header has whole seconds
    assert last == "1 problem found."


def test_the_clock_is_left_alone_when_promptjuggler_cannot_be_reached(settings) -> None:
    port = free_port()
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BASE_URL": f"http://127.0.0.1:{port}"}
    out, last = doctor_finds_problems("--timeout", "2")
    assert "clock" not in out
    assert last == "1 problem found."
