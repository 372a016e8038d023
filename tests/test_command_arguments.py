"""Management command arguments: empty and out-of-range values are refused while parsing.

Each refusal is a ``CommandError`` (a usage message on the command line) that says what is
allowed, raised before the command does anything: no traceback, no work on a wrong scope.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, WebhookDelivery

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_sync_refuses_an_empty_knowledge_base(fake_promptjuggler) -> None:
    # An unset shell variable ("--knowledge-base $KB") must not sync every knowledge base.
    KnowledgeBase.objects.create(slug="kb_test")
    with pytest.raises(CommandError, match="empty; name a knowledge base") as caught:
        run("promptjuggler_sync", "--knowledge-base", "", "--delete-orphans")
    assert "--knowledge-base" in str(caught.value)
    with pytest.raises(CommandError, match="empty"):
        run("promptjuggler_sync", "--knowledge-base", "  ")
    assert fake_promptjuggler.requests == []  # refused before anything was asked


@pytest.mark.parametrize(
    ("command", "args", "allowed"),
    [
        ("promptjuggler_prune_webhooks", ["--older-than", "99999999"], "0 to 36500 days"),
        ("promptjuggler_prune_webhooks", ["--older-than", "-1"], "0 to 36500 days"),
        ("promptjuggler_prune_webhooks", ["--older-than", "ten"], "not a whole number"),
        ("promptjuggler_prune_webhooks", ["--batch-size", "0"], "1 to 100000 rows"),
        (
            "promptjuggler_send_test_webhook",
            ["http://127.0.0.1:9/", "--timeout", "-1"],
            "more than 0 to 600 seconds",
        ),
        (
            "promptjuggler_send_test_webhook",
            ["http://127.0.0.1:9/", "--timeout", "nan"],
            "more than 0 to 600 seconds",
        ),
        (
            "promptjuggler_send_test_webhook",
            ["http://127.0.0.1:9/", "--timeout", "0"],
            "more than 0",
        ),
        ("promptjuggler_emulator", ["--port", "99999"], "0 to 65535"),
        ("promptjuggler_emulator", ["--port", "-5"], "0 to 65535"),
        ("promptjuggler_emulator", ["--processing-delay", "inf"], "0 to 86400 seconds"),
        ("promptjuggler_emulator", ["--processing-delay", "-1"], "0 to 86400 seconds"),
    ],
)
@pytest.mark.django_db
def test_out_of_range_arguments_say_what_is_allowed(command, args, allowed) -> None:
    WebhookDelivery.objects.create(event_type="unknown", dedupe_key="k" * 64, outcome="invalid")
    with pytest.raises(CommandError) as caught:
        run(command, *args)
    message = str(caught.value)
    assert allowed in message
    assert args[-2] in message  # names the option
    assert WebhookDelivery.objects.count() == 1  # nothing pruned


@pytest.mark.django_db
def test_the_edges_of_each_range_are_accepted(fake_promptjuggler) -> None:
    out = run("promptjuggler_prune_webhooks", "--older-than", "36500", "--dry-run")
    assert out.strip() == "0 webhook deliveries older than 36500 days."
    assert "0 webhook" in run("promptjuggler_prune_webhooks", "--older-than", "0", "--dry-run")
    KnowledgeBase.objects.create(slug="kb_test")
    assert KnowledgeDocument.objects.count() == 0
    run("promptjuggler_sync", "--knowledge-base", "kb_test")


def test_the_command_line_prints_usage_not_a_traceback() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "tests.settings"}
    result = subprocess.run(
        [sys.executable, "-m", "django", "promptjuggler_emulator", "--port", "99999"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "argument --port: 99999 is out of range: allowed is 0 to 65535." in result.stderr
