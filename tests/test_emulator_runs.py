"""The emulator's run endpoints: published prompts and workflows, pending runs, finishing them,
the signed ``*.finished`` webhooks, and faults (including "timeout after the run was created")."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from promptjuggler_django.testing import ENDPOINTS, FakePromptJuggler
from tests.test_emulator import KEY, SECRET, WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


@pytest.fixture
def fake() -> Iterator[FakePromptJuggler]:
    with FakePromptJuggler(KEY, webhook_secret=SECRET) as f:
        f.add_prompt("ask", versions=(1, 2), tags={"production": 1}, inputs=("question",))
        f.add_workflow("triage", inputs=("ticket",), outputs={"label": "billing"})
        yield f


@pytest.fixture
def http(fake: FakePromptJuggler) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=fake.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=5
    ) as c:
        yield c


def test_every_run_endpoint_can_be_a_fault_target():
    assert {
        "create_prompt_run",
        "create_workflow_run",
        "get_prompt_run",
        "get_workflow_run",
    } <= set(ENDPOINTS)


def test_a_created_prompt_run_is_pending_with_the_documented_shape(fake, http):
    created = http.post(
        "/api/v1/prompts/ask/production/runs",
        json={"inputs": {"question": "Vacation?"}, "metadata": {"local_run": "7"}},
    )
    assert created.status_code == 200
    body = created.json()
    assert set(body) == {"id", "thread"}
    run = http.get(f"/api/v1/promptruns/{body['id']}").json()
    assert run["status"] == "pending"
    assert run["finishedAt"] is None and run["cost"] is None and run["tokenUsage"] is None
    assert run["createdAt"].endswith("Z")
    assert (run["output"], run["emitted"], run["transcript"], run["error"]) == (None, [], [], None)
    (stored,) = fake.runs()
    assert (stored.kind, stored.slug, stored.version) == ("prompt", "ask", 1)
    assert stored.metadata == {"local_run": "7"}
    assert (stored.priority, stored.channel) == ("normal", "default")
    assert str(stored.thread) == body["thread"]


def test_versions_resolve_by_number_tag_and_latest(fake, http):
    for version, revision in (("2", 2), ("production", 1), ("__latest__", 2)):
        created = http.post(
            f"/api/v1/prompts/ask/{version}/runs", json={"inputs": {"question": "q"}}
        )
        assert fake.run(created.json()["id"]).version == revision


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/v1/prompts/nope/1/runs", "Prompt not found"),
        ("/api/v1/prompts/ask/9/runs", "Prompt version not found"),
        ("/api/v1/prompts/ask/staging/runs", "Prompt version not found"),
        ("/api/v1/workflows/ask/1/runs", "Workflow not found"),  # a prompt is not a workflow
    ],
)
def test_unknown_prompts_workflows_and_versions_are_404(fake, http, path, message):
    answer = http.post(path, json={"inputs": {"question": "q", "ticket": "t"}})
    assert (answer.status_code, answer.json()) == (404, {"error": message})
    assert fake.runs() == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"inputs": ["question"]},
        {"inputs": {"question": 3}},
        {"inputs": {"other": "x"}},  # the required input is missing
        {"inputs": {"question": "q"}, "thread": "not-a-uuid"},
        {"inputs": {"question": "q"}, "priority": "urgent"},
        {"inputs": {"question": "q"}, "metadata": {"n": 1}},
        {"inputs": {"question": "q"}, "envVars": {"lower": "x"}},
        {"inputs": {"question": "q"}, "envVars": {f"K{i}": "v" for i in range(51)}},
        [],
    ],
)
def test_bad_bodies_are_422_and_start_nothing(fake, http, body):
    answer = http.post("/api/v1/prompts/ask/1/runs", json=body)
    assert answer.status_code == 422
    assert answer.json()["error"]
    assert fake.runs() == []


def test_a_body_that_is_not_json_is_422(fake, http):
    answer = http.post(
        "/api/v1/prompts/ask/1/runs", content=b"inputs=1", headers={"Content-Type": "text/plain"}
    )
    assert answer.status_code == 422
    answer = http.post(
        "/api/v1/prompts/ask/1/runs", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 422


def test_a_workflow_run_has_no_channel(fake, http):
    answer = http.post(
        "/api/v1/workflows/triage/1/runs", json={"inputs": {"ticket": "t"}, "channel": "x"}
    )
    assert answer.status_code == 422


def test_runs_need_the_key_and_the_kind_of_the_run(fake, http):
    created = http.post("/api/v1/prompts/ask/1/runs", json={"inputs": {"question": "q"}}).json()
    assert http.get(f"/api/v1/workflowruns/{created['id']}").status_code == 404
    assert http.get("/api/v1/promptruns/not-a-uuid").status_code == 404
    anonymous = httpx.get(f"{fake.url}/api/v1/promptruns/{created['id']}")
    assert anonymous.status_code == 401
    assert http.get("/api/v1/prompts/ask/1/runs").status_code == 405


def test_finish_run_completes_it_and_sends_a_signed_webhook(fake, http, receiver):
    fake.set_webhook(receiver.url)
    created = http.post(
        "/api/v1/prompts/ask/1/runs", json={"inputs": {"question": "Vacation?"}}
    ).json()
    fake.finish_run(created["id"], output="25 days.", emitted=[{"tool": "cite", "payload": {}}])
    (delivery,) = receiver.wait(1)
    assert delivery.verified
    assert json.loads(delivery.body) == {"id": created["id"], "status": "completed"}
    assert fake.webhook_deliveries[0].event == "promptrun.finished"
    run = http.get(f"/api/v1/promptruns/{created['id']}").json()
    assert run["status"] == "completed" and run["finishedAt"]
    assert run["output"] == "25 days."
    assert run["emitted"] == [{"tool": "cite", "payload": {}}]
    assert [item["type"] for item in run["transcript"]] == ["text", "data"]
    assert run["tokenUsage"]["total"] == run["tokenUsage"]["input"] + run["tokenUsage"]["output"]
    assert run["cost"]["total"] == pytest.approx(run["cost"]["success"]["total"])
    assert run["cost"]["total"] > 0


def test_a_failed_workflow_run(fake, http, receiver):
    fake.set_webhook(receiver.url)
    created = http.post("/api/v1/workflows/triage/1/runs", json={"inputs": {"ticket": "t"}}).json()
    fake.finish_run(created["id"], status="failed", error="node 'label' timed out")
    assert json.loads(receiver.wait(1)[0].body) == {"id": created["id"], "status": "failed"}
    assert fake.webhook_deliveries[0].event == "workflowrun.finished"
    run = http.get(f"/api/v1/workflowruns/{created['id']}").json()
    assert run["status"] == "failed"
    assert run["outputs"] == {} and run["errors"] == ["node 'label' timed out"]
    assert "output" not in run and "transcript" not in run


def test_default_outputs_come_from_the_prompt_or_workflow(fake, http):
    fake.add_prompt("shout", output=lambda inputs: inputs["text"].upper())
    shout = http.post("/api/v1/prompts/shout/1/runs", json={"inputs": {"text": "hi"}}).json()
    flow = http.post("/api/v1/workflows/triage/1/runs", json={"inputs": {"ticket": "t"}}).json()
    fake.finish_run()  # every pending run
    assert http.get(f"/api/v1/promptruns/{shout['id']}").json()["output"] == "HI"
    assert http.get(f"/api/v1/workflowruns/{flow['id']}").json()["outputs"] == {"label": "billing"}


def test_finishing_again_resends_the_event_and_an_unknown_run_is_a_key_error(fake, receiver):
    fake.set_webhook(receiver.url)
    with httpx.Client(base_url=fake.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        created = http.post("/api/v1/prompts/ask/1/runs", json={"inputs": {"question": "q"}})
    run_id = created.json()["id"]
    fake.finish_run(run_id)
    fake.finish_run(run_id, status="cancelled")  # any string, e.g. one the app does not know
    assert [json.loads(r.body)["status"] for r in receiver.wait(2)] == ["completed", "cancelled"]
    with pytest.raises(KeyError):
        fake.finish_run(uuid.uuid4())


def test_run_delay_finishes_runs_by_itself(receiver):
    with FakePromptJuggler(KEY, webhook_secret=SECRET, run_delay=0.05) as fake:
        fake.add_prompt("ask")
        fake.set_webhook(receiver.url)
        with httpx.Client(base_url=fake.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            created = http.post("/api/v1/prompts/ask/1/runs", json={"inputs": {}}).json()
        (delivery,) = receiver.wait(1)
        assert json.loads(delivery.body) == {"id": created["id"], "status": "completed"}
        assert fake.run(created["id"]).status == "completed"


def test_reset_forgets_runs_and_cancels_their_timers(receiver):
    with FakePromptJuggler(KEY, webhook_secret=SECRET, run_delay=0.2) as fake:
        fake.add_prompt("ask")
        fake.set_webhook(receiver.url)
        with httpx.Client(base_url=fake.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
            http.post("/api/v1/prompts/ask/1/runs", json={"inputs": {}})
            fake.reset()
            assert fake.runs() == []
            time.sleep(0.4)
            assert receiver.received == []
            # prompts are the account's setup: they stay
            assert http.post("/api/v1/prompts/ask/1/runs", json={"inputs": {}}).status_code == 200


def test_a_timeout_after_the_run_was_created_leaves_exactly_one_run(fake, http):
    fake.set_fault("create_prompt_run", read_timeout=2, after_effect=True, times=1)
    with pytest.raises(httpx.ReadTimeout):
        http.post("/api/v1/prompts/ask/1/runs", json={"inputs": {"question": "q"}}, timeout=0.3)
    assert len(fake.runs()) == 1
    assert fake.requests[-1].faulted == "read_timeout"


def test_a_fault_without_effect_creates_nothing(fake, http):
    fake.set_fault("create_workflow_run", status=503, times=1)
    answer = http.post("/api/v1/workflows/triage/1/runs", json={"inputs": {"ticket": "t"}})
    assert answer.status_code == 503
    assert fake.runs() == []
    assert http.post("/api/v1/workflows/triage/1/runs", json={"inputs": {"ticket": "t"}}).is_success
    assert len(fake.runs("workflow")) == 1


def test_publishing_checks_its_arguments(fake):
    with pytest.raises(ValueError):
        fake.add_prompt("a/b")
    with pytest.raises(ValueError):
        fake.add_prompt("p", versions=(1,), tags={"production": 2})


def test_env_vars_are_kept_for_assertions_but_not_in_reprs(fake, http):
    http.post(
        "/api/v1/prompts/ask/1/runs",
        json={"inputs": {"question": "q"}, "envVars": {"TOKEN": "tok_SECRET"}},
    )
    (run,) = fake.runs()
    assert run.env_vars == {"TOKEN": "tok_SECRET"}
    assert "tok_SECRET" not in repr(run)
