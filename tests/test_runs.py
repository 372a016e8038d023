"""Runs started from Django, end to end against the emulator over loopback HTTP.

The row is recorded in the caller's transaction and sent after commit (the Immediate backend
runs the task inside the commit); the emulator's signed webhooks arrive at the live server;
the result is fetched by a task. The money rule is checked by counting the emulator's runs: a
create request that may have reached PromptJuggler is never sent again by the app.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from promptjuggler_django import runs, signals
from promptjuggler_django.client import PromptJugglerClient
from promptjuggler_django.models import Run, RunSendState, WebhookDelivery
from promptjuggler_django.runs import _send

from .webhook_support import Received, post, run_body

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = "ask-handbook"


@pytest.fixture
def fake(fake_promptjuggler, live_server):
    fake_promptjuggler.add_prompt(PROMPT, inputs=("question",), output="25 days.")
    fake_promptjuggler.add_workflow("summarise", outputs={"summary": "Short."})
    fake_promptjuggler.set_webhook(live_server.url + reverse("promptjuggler_django:webhook"))
    return fake_promptjuggler


@pytest.fixture
def no_client_retries(settings):
    """The engine, not the client, decides about sending again."""
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "MAX_RETRIES": 0}


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def reloaded(run: Run) -> Run:
    return Run.objects.get(pk=run.pk)


def finished(run: Run) -> Run:
    """``run`` once its result is stored (the webhook, then the fetch task, ran)."""
    return wait_for(lambda: Run.objects.filter(pk=run.pk, result_fetched_at__isnull=False).first())


# -- starting ----------------------------------------------------------------------------------


def test_a_run_is_recorded_then_sent_after_commit(fake) -> None:
    with transaction.atomic():
        run = runs.start_prompt_run(PROMPT, {"question": "Vacation days?"}, version=1)
        assert run.send_state == RunSendState.QUEUED
        assert fake.runs() == []  # nothing remote inside the transaction
    run = reloaded(run)
    (remote,) = fake.runs()
    assert run.send_state == RunSendState.STARTED
    assert (run.remote_id, run.thread, run.remote_status) == (remote.id, remote.thread, "pending")
    assert run.attempts == 1 and run.sent_at is not None
    assert remote.inputs == {"question": "Vacation days?"} and remote.version == 1
    assert remote.metadata == {runs.METADATA_KEY: str(run.pk)}


def test_a_rolled_back_transaction_starts_nothing(fake) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        runs.start_prompt_run(PROMPT, {"question": "?"})
        raise RuntimeError
    assert fake.runs() == [] and not Run.objects.exists()


def test_options_reach_promptjuggler(fake) -> None:
    thread = uuid.uuid4()
    run = runs.start_prompt_run(
        PROMPT,
        {"question": "?"},
        version=1,
        thread=thread,
        priority="low",
        environment="staging",
        metadata={"team": "hr", "tags": ["a", "b"]},
        channel="support",
    )
    (remote,) = fake.runs()
    assert (remote.thread, remote.priority, remote.environment, remote.channel) == (
        thread,
        "low",
        "staging",
        "support",
    )
    assert remote.metadata == {"team": "hr", "tags": ["a", "b"], runs.METADATA_KEY: str(run.pk)}
    assert reloaded(run).thread == thread


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"inputs": {"question": 3}}, TypeError),
        ({"inputs": ["question"]}, TypeError),
        ({"version": ""}, ValueError),
        ({"version": 0}, ValueError),
        ({"priority": "urgent"}, ValueError),
        ({"metadata": {"n": 1}}, TypeError),
        ({"slug": " "}, ValueError),
    ],
)
def test_what_promptjuggler_would_refuse_is_refused_before_anything_is_recorded(
    kwargs, error
) -> None:
    arguments = {"slug": PROMPT, "inputs": {"question": "?"}, **kwargs}
    with pytest.raises(error):
        runs.start_prompt_run(arguments.pop("slug"), arguments.pop("inputs"), **arguments)
    assert not Run.objects.exists()


# -- completing --------------------------------------------------------------------------------


def test_the_webhook_completes_the_run_and_a_task_stores_the_result(fake) -> None:
    stored = Received(signals.run_result_stored)
    changed = Received(signals.run_status_changed)
    foreign = Received(signals.run_finished)
    try:
        run = runs.start_prompt_run(PROMPT, {"question": "Vacation days?"})
        fake.finish_run(reloaded(run).remote_id)
        wait_for(lambda: stored.calls)
    finally:
        stored.close(), changed.close(), foreign.close()
    run = reloaded(run)
    assert (run.remote_status, run.output) == ("completed", "25 days.")
    assert run.total_tokens == run.token_usage["total"] > 0
    assert run.cost is not None and run.cost > Decimal(0)
    assert run.finished_at is not None and run.result_fetched_at is not None
    assert [c["run"].pk for c in stored.calls] == [run.pk]
    assert stored.calls[0]["run"].output == "25 days."
    assert [(c["old_status"], c["new_status"]) for c in changed.calls] == [("pending", "completed")]
    assert foreign.calls == []  # a run the app started is not relayed as a foreign one
    assert WebhookDelivery.objects.get().outcome == "applied"


def test_a_workflow_run_stores_its_outputs(fake) -> None:
    run = runs.start_workflow_run("summarise", {"text": "long"})
    fake.finish_run(reloaded(run).remote_id)
    run = finished(run)
    assert (run.kind, run.remote_status, run.outputs) == (
        "workflow",
        "completed",
        {"summary": "Short."},
    )


def test_a_failed_run_keeps_promptjuggler_s_error(fake) -> None:
    run = runs.start_prompt_run(PROMPT, {"question": "?"})
    fake.finish_run(reloaded(run).remote_id, status="failed", error="model overloaded")
    run = finished(run)
    assert (run.remote_status, run.error, run.output) == ("failed", "model overloaded", "")


def test_a_follow_up_continues_the_thread(fake) -> None:
    first = runs.start_prompt_run(PROMPT, {"question": "Vacation days?"}, version=1)
    follow_up = runs.continue_run(reloaded(first), {"question": "And sick days?"})
    first_remote, second_remote = fake.runs()
    assert second_remote.thread == first_remote.thread == reloaded(follow_up).thread
    assert second_remote.version == 1


def test_a_follow_up_needs_a_started_run() -> None:
    run = Run.objects.create(kind="prompt", slug=PROMPT)
    with pytest.raises(ValueError, match="not started"):
        runs.continue_run(run, {"question": "?"})


# -- the money rule: never send a create request twice blindly ---------------------------------


def test_a_timeout_after_the_run_was_created_needs_review_and_is_not_sent_again(
    fake, settings, no_client_retries
) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "READ_TIMEOUT": 0.3}
    fake.set_fault("create_prompt_run", read_timeout=2, after_effect=True, times=1)
    run = runs.start_prompt_run(PROMPT, {"question": "?"})
    run = reloaded(run)
    assert run.send_state == RunSendState.NEEDS_REVIEW
    assert "may have reached PromptJuggler" in run.last_error
    assert runs.METADATA_KEY in run.last_error
    runs.run_runs()
    assert len(fake.runs()) == 1  # exactly one remote run: nothing was sent twice
    assert reloaded(run).send_state == RunSendState.NEEDS_REVIEW


@pytest.mark.parametrize(
    "fault", [{"status": 503}, {"status": 500, "after_effect": True}, {"reset": True}]
)
def test_a_failure_after_sending_needs_review(fake, no_client_retries, fault) -> None:
    fake.set_fault("create_prompt_run", times=1, **fault)
    run = reloaded(runs.start_prompt_run(PROMPT, {"question": "?"}))
    assert run.send_state == RunSendState.NEEDS_REVIEW
    runs.run_runs()
    assert reloaded(run).send_state == RunSendState.NEEDS_REVIEW
    assert len(fake.runs()) == (1 if fault.get("after_effect") else 0)


def test_rate_limited_sends_are_retried_and_the_run_is_created_once(
    fake, no_client_retries
) -> None:
    fake.set_fault("create_prompt_run", status=429, retry_after=0, times=2)
    run = runs.start_prompt_run(PROMPT, {"question": "?"})
    assert reloaded(run).send_state == RunSendState.QUEUED  # waiting out its backoff
    assert "429" in reloaded(run).last_error
    for _ in range(2):
        Run.objects.filter(pk=run.pk).update(next_attempt_at=timezone.now())
        runs.run_runs()
    run = reloaded(run)
    assert (run.send_state, run.attempts) == (RunSendState.STARTED, 3)
    assert len(fake.runs()) == 1


def test_a_connection_that_never_opened_is_retried(fake, settings, no_client_retries) -> None:
    reachable = settings.PROMPTJUGGLER["BASE_URL"]
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BASE_URL": "http://127.0.0.1:9"}
    run = reloaded(runs.start_prompt_run(PROMPT, {"question": "?"}))
    assert (run.send_state, run.next_attempt_at is not None) == (RunSendState.QUEUED, True)
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BASE_URL": reachable}
    Run.objects.filter(pk=run.pk).update(next_attempt_at=timezone.now())
    summary = runs.run_runs()
    assert summary.send.started == 1
    assert len(fake.runs()) == 1


def test_sends_that_never_left_give_up_after_the_attempts(settings, no_client_retries) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "RUN_MAX_ATTEMPTS": 2}
    run = runs.start_prompt_run(PROMPT, {"question": "?"})  # BASE_URL: a closed port
    Run.objects.filter(pk=run.pk).update(next_attempt_at=timezone.now())
    runs.run_runs()
    run = reloaded(run)
    assert (run.send_state, run.attempts) == (RunSendState.FAILED, 2)
    assert "no run was started" in run.last_error


@pytest.mark.parametrize(
    ("slug", "inputs", "code"),
    [("no-such-prompt", {"question": "?"}, "404"), (PROMPT, {"other": "?"}, "422")],
)
def test_a_definite_refusal_fails_the_run(fake, slug, inputs, code) -> None:
    run = reloaded(runs.start_prompt_run(slug, inputs))
    assert run.send_state == RunSendState.FAILED and code in run.last_error
    assert fake.runs() == []


def test_a_send_whose_worker_died_goes_to_review(fake) -> None:
    run = Run.objects.create(
        kind="prompt",
        slug=PROMPT,
        send_state=RunSendState.SENDING,
        next_attempt_at=timezone.now() - timedelta(seconds=1),
    )
    assert runs.run_runs().leases_expired == 1
    run = reloaded(run)
    assert run.send_state == RunSendState.NEEDS_REVIEW and "lease expired" in run.last_error
    assert fake.runs() == []


def test_resend_and_abandon_only_touch_runs_in_review(fake) -> None:
    in_review = Run.objects.create(
        kind="prompt",
        slug=PROMPT,
        inputs={"question": "?"},
        send_state=RunSendState.NEEDS_REVIEW,
        attempts=1,
    )
    started = Run.objects.create(
        kind="prompt", slug=PROMPT, send_state=RunSendState.STARTED, remote_id=uuid.uuid4()
    )
    assert runs.resend(Run.objects.all()) == 1
    assert reloaded(in_review).send_state == RunSendState.STARTED  # sent at once after commit
    assert reloaded(started).send_state == RunSendState.STARTED
    again = Run.objects.create(kind="prompt", slug=PROMPT, send_state=RunSendState.NEEDS_REVIEW)
    assert runs.abandon(Run.objects.all(), "checked by ops") == 1
    assert reloaded(again).send_state == RunSendState.FAILED
    assert reloaded(again).last_error == "Abandoned: checked by ops"
    assert len(fake.runs()) == 1


# -- webhooks in any order ---------------------------------------------------------------------


def test_a_webhook_before_the_start_answer_was_stored_is_applied_afterwards(fake) -> None:
    fake.run_delay = 0.05  # the run finishes (and its webhook lands) while the answer waits
    fake.set_fault("create_prompt_run", latency=1.0, times=1)
    run = runs.start_prompt_run(PROMPT, {"question": "?"})
    run = finished(run)
    assert (run.remote_status, run.output) == ("completed", "25 days.")
    delivery = WebhookDelivery.objects.get()
    assert (delivery.outcome, delivery.replay_count) == ("applied", 1)


def test_duplicates_and_late_events_change_nothing(fake) -> None:
    run = runs.start_prompt_run(PROMPT, {"question": "?"})
    remote_id = reloaded(run).remote_id
    fake.finish_run(remote_id)
    stored = wait_for(
        lambda: Run.objects.filter(pk=run.pk, result_fetched_at__isnull=False).first()
    )
    fake.finish_run(remote_id, status="pending")  # a late, lower status: stale
    fake.finish_run(remote_id, status="failed")  # a terminal status is final
    wait_for(lambda: WebhookDelivery.objects.count() == 3)
    assert sorted(WebhookDelivery.objects.values_list("outcome", flat=True)) == [
        "applied",
        "stale",
        "stale",
    ]
    run = reloaded(run)
    assert (run.remote_status, run.result_fetched_at) == ("completed", stored.result_fetched_at)


# -- polling when the webhook never comes ------------------------------------------------------


def test_promptjuggler_sync_polls_a_run_whose_webhook_never_came(fake, settings) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "RUN_POLL_AFTER": 0.01}
    fake.set_webhook(None)
    run = runs.start_prompt_run(PROMPT, {"question": "?"})
    fake.finish_run(reloaded(run).remote_id)
    time.sleep(0.05)
    call_command("promptjuggler_sync", stdout=_Sink())
    run = reloaded(run)
    assert (run.remote_status, run.output) == ("completed", "25 days.")
    assert run.result_fetched_at is not None


def test_a_run_still_pending_is_polled_and_left_pending(fake, settings) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "RUN_POLL_AFTER": 0.01}
    run = runs.start_prompt_run(PROMPT, {"question": "?"})
    time.sleep(0.05)
    report = runs.poll_runs()
    assert (report.checked, report.results_stored) == (1, 0)
    assert reloaded(run).remote_status == "pending"


class _Sink:
    def write(self, *args, **kwargs) -> None:
        pass

    def flush(self) -> None:
        pass


# -- every order of the same events ends in the same stored result -----------------------------

ORDERS = {
    "in order": ["pending", "completed"],
    "out of order": ["completed", "pending"],
    "duplicated": ["completed", "completed", "pending", "completed"],
    "before the start answer": ["early:completed"],
    "early and again": ["early:pending", "completed", "completed"],
}


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
def test_webhook_permutations_end_in_the_same_stored_result(
    fake_promptjuggler, client, order
) -> None:
    """Signed deliveries in any order, duplicated, or before the run's id was stored: the run
    ends ``completed`` with the emulator's result, fetched once."""
    fake_promptjuggler.add_prompt(PROMPT, inputs=("question",), output="25 days.")
    stored = Received(signals.run_result_stored)
    try:
        early = [s.split(":", 1)[1] for s in order if s.startswith("early:")]
        if early:
            # The run exists remotely and its webhooks land before the start answer is stored.
            with transaction.atomic():
                run = runs.start_prompt_run(PROMPT, {"question": "?"})
                created = _remote_run_now(fake_promptjuggler)
                fake_promptjuggler.finish_run(created.id)  # a fast run
                for step, status in enumerate(early):
                    _deliver(client, created.id, status, step)
                Run.objects.filter(pk=run.pk).update(send_state=RunSendState.SENDING)
            _store_start(run, created)
        else:
            run = runs.start_prompt_run(PROMPT, {"question": "?"})
        remote_id = reloaded(run).remote_id
        if not early:
            fake_promptjuggler.finish_run(remote_id)  # the result GET finds it finished
        for step, status in enumerate(s for s in order if not s.startswith("early:")):
            _deliver(client, remote_id, status, 10 + step)
        run = finished(run)
    finally:
        stored.close()
    assert (run.remote_status, run.output) == ("completed", "25 days.")
    assert len(stored.calls) == 1 and len(fake_promptjuggler.runs()) == 1


def _remote_run_now(fake):
    """Create the run remotely the way the send would, without storing the answer."""
    with PromptJugglerClient.from_settings() as api:
        return api.create_prompt_run(PROMPT, "__latest__", {"question": "?"})


def _store_start(run: Run, created) -> None:
    """What the send does with the answer (the engine's own step, called late on purpose)."""
    _send._store_started(reloaded(run), reloaded(run).next_attempt_at, created)


def _deliver(client, remote_id, status: str, step: int) -> None:
    response = post(
        client,
        reverse("promptjuggler_django:webhook-prompt-run"),
        run_body(str(remote_id), status),
        timestamp=int(time.time()) - 100 + step,
    )
    assert response.status_code == 200, response.content


def test_a_result_the_get_does_not_have_yet_is_fetched_again_later(fake) -> None:
    """The webhook says completed, the GET still says pending: nothing empty is stored, and the
    fetch is tried again (here by promptjuggler_sync's poll) once PromptJuggler has it."""
    run = runs.start_prompt_run(PROMPT, {"question": "?"})
    remote_id = reloaded(run).remote_id
    _deliver(Client(), remote_id, "completed", 0)  # before the emulator finished the run
    run = wait_for(lambda: Run.objects.filter(pk=run.pk, remote_status="completed").first())
    assert (run.result_fetched_at, run.output) == (None, "")
    fake.finish_run(remote_id)
    runs.poll_runs()
    assert (reloaded(run).output, reloaded(run).remote_status) == ("25 days.", "completed")


def test_without_an_api_key_a_run_waits_and_names_the_setting(fake, settings) -> None:
    key = settings.PROMPTJUGGLER["API_KEY"]
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "API_KEY": None}
    run = reloaded(runs.start_prompt_run(PROMPT, {"question": "?"}))
    assert (run.send_state, run.attempts) == (RunSendState.QUEUED, 0)
    assert "API_KEY" in run.last_error
    summary = runs.run_runs()  # no crash, nothing in review
    assert (summary.needs_review, summary.queued) == (0, 1)
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "API_KEY": key}
    runs.run_runs()
    assert reloaded(run).send_state == RunSendState.STARTED and len(fake.runs()) == 1
