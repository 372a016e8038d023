"""``promptjuggler_prune_webhooks`` and ``promptjuggler_send_test_webhook``."""

from __future__ import annotations

import io
import json
import socket
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from promptjuggler_django.models import WebhookDelivery

from .webhook_support import PRIMARY, make_documents, make_knowledge_base


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def log_deliveries(ages_in_days: list[float]) -> None:
    now = timezone.now()
    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            received_at=now - timedelta(days=age),
            event_type="unknown",
            dedupe_key=uuid.uuid4().hex * 2,
            outcome="unrecognised",
        )
        for age in ages_in_days
    )


@pytest.mark.django_db
def test_prune_deletes_old_deliveries_in_batches() -> None:
    log_deliveries([10, 9, 8, 8, 8, 2, 0])
    with CaptureQueriesContext(connection) as queries:
        out = run("promptjuggler_prune_webhooks", "--older-than", "7", "--batch-size", "2")
    assert out.strip() == "Deleted 5 webhook deliveries older than 7 days."
    deletes = [q for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 2 + 2 + 1
    assert WebhookDelivery.objects.count() == 2


@pytest.mark.django_db
def test_prune_defaults_to_the_retention_setting(settings) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_RETENTION_DAYS": 3}
    log_deliveries([4, 2])
    assert run("promptjuggler_prune_webhooks", "--dry-run").strip() == (
        "1 webhook deliveries older than 3 days."
    )
    assert WebhookDelivery.objects.count() == 2
    run("promptjuggler_prune_webhooks")
    assert WebhookDelivery.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("args", [["--older-than", "-1"], ["--batch-size", "0"]])
def test_prune_refuses_nonsense(args: list[str]) -> None:
    with pytest.raises(CommandError):
        run("promptjuggler_prune_webhooks", *args)


@pytest.mark.django_db(transaction=True)
def test_send_test_webhook_reaches_the_endpoint(live_server) -> None:
    endpoint = live_server.url + reverse("promptjuggler_django:webhook")
    out = run("promptjuggler_send_test_webhook", endpoint)
    assert '200 OK\n{"outcome": "unknown_object"}' in out
    assert PRIMARY not in out
    delivery = WebhookDelivery.objects.get()
    assert delivery.headers["User-Agent"] == "promptjuggler-django test webhook"
    assert delivery.secret_index == 0


@pytest.mark.django_db(transaction=True)
def test_send_test_webhook_moves_a_real_document(live_server) -> None:
    (document,) = make_documents(make_knowledge_base(), 1)
    endpoint = live_server.url + reverse("promptjuggler_django:webhook-document")
    out = run(
        "promptjuggler_send_test_webhook",
        endpoint,
        "--id",
        str(document.remote_id),
        "--status",
        "failed",
        "--chunk-count",
        "0",
        "--secret",
        "whsec_test_secondary",
    )
    assert '{"outcome": "applied"}' in out
    document.refresh_from_db()
    assert (document.remote_status, document.chunk_count) == ("failed", 0)
    assert WebhookDelivery.objects.get().secret_index == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("event", ["knowledge-base", "run"])
def test_send_test_webhook_other_events(live_server, event: str) -> None:
    endpoint = live_server.url + reverse("promptjuggler_django:webhook")
    out = run("promptjuggler_send_test_webhook", endpoint, "--event", event)
    sent = json.loads(out.splitlines()[1])
    expected_keys = {"knowledge-base": {"id", "status", "documentCount", "chunkCount"}}
    assert set(sent) == expected_keys.get(event, {"id", "status"})
    expected_type = {"knowledge-base": "knowledgebase.finished", "run": "run.finished"}[event]
    assert WebhookDelivery.objects.get().event_type == expected_type


@pytest.mark.django_db(transaction=True)
def test_send_test_webhook_reports_a_refusal(live_server) -> None:
    endpoint = live_server.url + reverse("promptjuggler_django:webhook")
    with pytest.raises(CommandError, match="answered 400"):
        run("promptjuggler_send_test_webhook", endpoint, "--secret", "whsec_wrong")
    with pytest.raises(CommandError, match="answered 400"):
        run("promptjuggler_send_test_webhook", endpoint, "--timestamp", "1000")
    assert not WebhookDelivery.objects.exists()


def test_send_test_webhook_needs_a_secret_and_an_answer(settings) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_SECRETS": []}
    with pytest.raises(CommandError, match="WEBHOOK_SECRETS"):
        run("promptjuggler_send_test_webhook", "http://127.0.0.1:9/")
    with pytest.raises(CommandError, match="No answer"):
        run(
            "promptjuggler_send_test_webhook",
            "http://127.0.0.1:9/",
            "--secret",
            "s",
            "--timeout",
            "2",
        )


def run_refused(*args: str) -> tuple[str, str]:
    """Run a command that must fail: its stdout and its error message."""
    out = io.StringIO()
    with pytest.raises(CommandError) as info:
        call_command(*args, stdout=out)
    return out.getvalue(), str(info.value)


@pytest.mark.django_db(transaction=True)
def test_send_test_webhook_explains_a_wrong_secret(live_server) -> None:
    endpoint = live_server.url + reverse("promptjuggler_django:webhook")
    out, message = run_refused("promptjuggler_send_test_webhook", endpoint, "--secret", "whsec_x")
    assert message.startswith("The endpoint answered 400 (mismatch): the signature did not ")
    assert "check that --secret matches a secret the endpoint uses" in message
    assert "whsec_x" not in out + message
    assert '"error": "mismatch"' in out


@pytest.mark.django_db(transaction=True)
def test_send_test_webhook_explains_clock_skew(live_server) -> None:
    endpoint = live_server.url + reverse("promptjuggler_django:webhook")
    _, message = run_refused("promptjuggler_send_test_webhook", endpoint, "--timestamp", "1000")
    assert "answered 400 (stale): the timestamp is outside the tolerance: check the clocks" in (
        message
    )
    assert "s behind this server's clock (tolerance 300 s)" in message  # the endpoint's detail


@pytest.mark.django_db(transaction=True)
def test_send_test_webhook_names_the_configured_secret(live_server, monkeypatch) -> None:
    from promptjuggler_django.webhooks import WebhookView

    monkeypatch.setattr(WebhookView, "get_secrets", lambda self: ["whsec_endpoint_only"])
    endpoint = live_server.url + reverse("promptjuggler_django:webhook")
    _, message = run_refused("promptjuggler_send_test_webhook", endpoint)
    assert 'check that the first of settings.PROMPTJUGGLER["WEBHOOK_SECRETS"] matches' in message


@pytest.mark.django_db(transaction=True)
def test_send_test_webhook_never_prints_an_html_page(live_server, settings) -> None:
    settings.DEBUG = True  # Django answers the unknown URL with its debug page
    endpoint = live_server.url + "/no-webhook-here/"
    out, message = run_refused("promptjuggler_send_test_webhook", endpoint)
    assert "404 Not Found" in out
    shown = (out + message).lower()
    assert "<html" not in shown and "<!doctype" not in shown and "page not found" not in shown
    assert "(a text/html body of " in out and " bytes, not shown)" in out
    assert message.startswith("The endpoint answered 404: no webhook at this URL")


@pytest.mark.django_db(transaction=True)
def test_send_test_webhook_names_an_unreachable_host() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    url_ = f"http://127.0.0.1:{port}/promptjuggler/webhook/"
    _, message = run_refused("promptjuggler_send_test_webhook", url_, "--timeout", "2")
    assert message == (
        f"No answer from {url_}: could not connect to 127.0.0.1:{port}: Connection refused."
    )


@pytest.mark.django_db(transaction=True)
def test_send_test_webhook_explains_a_redirect(live_server) -> None:
    endpoint = live_server.url + reverse("promptjuggler_django:webhook").rstrip("/")
    _, message = run_refused("promptjuggler_send_test_webhook", endpoint)
    assert message == (
        f"The endpoint answered 301 and redirects to {reverse('promptjuggler_django:webhook')}: "
        "use the final URL (a redirect may lose the body or the signature)."
    )


def answer(status: int, body: bytes, content_type: str = "application/json") -> Any:
    from promptjuggler_django.management.webhook_probe import read_answer

    response = httpx.Response(status, content=body, headers={"Content-Type": content_type})
    return read_answer(response, secret_source="--secret")


def test_a_code_of_a_newer_version_is_passed_on() -> None:
    read = answer(400, b'{"error": "replayed", "detail": "Seen \\u001b[31mbefore."}')
    assert read.refusal == "replayed"
    assert read.problem == "The endpoint answered 400 (replayed): Seen  [31mbefore."


def test_a_200_that_is_not_the_webhook_endpoint() -> None:
    read = answer(200, b"<html>Welcome</html>", "text/html; charset=utf-8")
    assert read.problem is not None and "not as the webhook endpoint does" in read.problem
    assert read.shown_body == "(a text/html body of 20 bytes, not shown)"
