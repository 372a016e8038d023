"""The client's run endpoints: create prompt/workflow runs, read them back.

Creating a run is not idempotent (a second POST starts a second, billed run), so the retry rules
differ from every other call: the scripted loopback server shows what the client does on a real
socket for each failure, and the emulator shows the wire format end to end.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from promptjuggler_django.client import (
    InvalidResponse,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    RemoteRun,
    RequestNotSent,
    RunCreated,
    ServerError,
    UnprocessableEntity,
)
from tests.test_client import (
    API_KEY,
    LoopbackServer,
    answer,
    make_client,
    refused_url,
    reset_after_body,
    slow_answer,
)

RUN_ID = "0b5c1f8e-2d3a-4e6f-9a1b-7c8d9e0f1a2b"
THREAD_ID = "6e7f8a9b-0c1d-4e2f-8a3b-4c5d6e7f8a9b"
CREATED = {"id": RUN_ID, "thread": THREAD_ID}


def prompt_run_json(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": RUN_ID,
        "status": "completed",
        "createdAt": "2026-12-06T10:00:00Z",
        "finishedAt": "2026-12-06T10:00:03.250+00:00",
        "output": "You get 25 vacation days.",
        "emitted": [{"tool": "answer", "payload": {"days": 25}}],
        "transcript": [
            {
                "type": "tool",
                "name": "knowledge_search",
                "status": "ok",
                "queries": [],
                "citations": [],
            },
            {
                "type": "text",
                "content": "You get 25 vacation days.",
                "citations": [{"title": "employee-handbook.md", "url": ""}],
            },
        ],
        "error": None,
        "tokenUsage": {
            "input": 120,
            "inputCached": 0,
            "output": 9,
            "reasoning": 0,
            "total": 129,
            "serviceTier": "default",
        },
        "cost": {
            "success": {
                "input": 0.0012,
                "cachedInput": 0,
                "cacheWrite": 0,
                "output": 0.0004,
                "webSearch": 0,
                "total": 0.0016,
            },
            "retries": {
                "input": 0,
                "cachedInput": 0,
                "cacheWrite": 0,
                "output": 0,
                "webSearch": 0,
                "total": 0,
            },
            "total": 0.0016,
        },
    }
    data.update(overrides)
    return data


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


@pytest.fixture
def client(server):
    c = make_client(server.url, max_retries=3)
    c.sleeps = []  # type: ignore[attr-defined]
    c._sleep = c.sleeps.append  # type: ignore[attr-defined]
    yield c
    c.close()


# -- the request -------------------------------------------------------------------------------


def test_create_prompt_run_sends_the_documented_json_body(server, client):
    server.push(answer(200, CREATED))
    created = client.create_prompt_run(
        "support-answer",
        3,
        {"question": "How many vacation days?"},
        thread=uuid.UUID(THREAD_ID),
        priority="low",
        environment="prod-eu",
        metadata={"local_run": "17", "tags": ("a", "b")},
        channel="support",
    )
    assert created == RunCreated(id=uuid.UUID(RUN_ID), thread=uuid.UUID(THREAD_ID))
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/api/v1/prompts/support-answer/3/runs")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert json.loads(request.body or b"") == {
        "inputs": {"question": "How many vacation days?"},
        "thread": THREAD_ID,
        "priority": "low",
        "environment": "prod-eu",
        "metadata": {"local_run": "17", "tags": ["a", "b"]},
        "channel": "support",
    }


def test_create_workflow_run_leaves_out_what_was_not_given(server, client):
    server.push(answer(200, CREATED))
    client.create_workflow_run("triage flow", "__latest__", {})
    (request,) = server.requests
    assert request.path == "/api/v1/workflows/triage%20flow/__latest__/runs"
    assert json.loads(request.body or b"") == {"inputs": {}}


def test_version_may_be_a_tag_and_slugs_are_one_segment(server, client):
    server.push(answer(200, CREATED))
    client.create_prompt_run("a/b", "production", {"q": "x"})
    assert server.requests[0].path == "/api/v1/prompts/a%2Fb/production/runs"


@pytest.mark.parametrize("version", [True, "", None, 1.5])
def test_a_version_that_cannot_be_one_is_refused_without_a_request(server, client, version):
    with pytest.raises(ValueError, match="version"):
        client.create_prompt_run("p", version, {})
    assert server.requests == []


def test_a_thread_that_is_not_a_uuid_is_refused_without_a_request(server, client):
    with pytest.raises(ValueError, match="thread"):
        client.create_prompt_run("p", 1, {}, thread="yesterday")
    assert server.requests == []


def test_create_answer_without_a_thread_keeps_the_run(server, client):
    server.push(answer(200, {"id": RUN_ID, "thread": "not-a-uuid", "extra": 1}))
    assert client.create_prompt_run("p", 1, {}) == RunCreated(uuid.UUID(RUN_ID), None)


def test_create_answer_without_an_id_is_an_invalid_response(server, client):
    server.push(answer(200, {"thread": THREAD_ID}))
    with pytest.raises(InvalidResponse):
        client.create_prompt_run("p", 1, {})
    assert len(server.requests) == 1


# -- retries: a POST that may have started a run is never sent again -----------------------


def test_create_timeout_after_sending_is_outcome_unknown_and_not_retried(server, client):
    server.push(slow_answer(5, 200, CREATED))
    with pytest.raises(OutcomeUnknown):
        client.create_prompt_run("p", 1, {"q": "x"})
    assert len(server.requests) == 1
    assert client.sleeps == []


def test_create_reset_after_sending_is_outcome_unknown_and_not_retried(server, client):
    server.push(reset_after_body, answer(200, CREATED))
    with pytest.raises(OutcomeUnknown):
        client.create_workflow_run("w", 1, {"q": "x"})
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_create_5xx_and_408_are_not_retried(server, client, status):
    server.default = answer(status, {"error": "upstream"}, {"Retry-After": "1"})
    with pytest.raises(ServerError if status >= 500 else Exception) as info:
        client.create_prompt_run("p", 1, {})
    assert info.value.status_code == status  # type: ignore[attr-defined]
    assert len(server.requests) == 1
    assert client.sleeps == []


def test_create_429_is_retried_with_retry_after(server, client):
    server.push(answer(429, {"error": "slow down"}, {"Retry-After": "2"}), answer(200, CREATED))
    assert client.create_prompt_run("p", 1, {}).id == uuid.UUID(RUN_ID)
    assert len(server.requests) == 2
    assert len(client.sleeps) == 1 and client.sleeps[0] >= 2


def test_create_429_gives_up_after_max_retries_or_a_long_retry_after(server, client):
    server.default = answer(429, {"error": "slow down"})
    with pytest.raises(RateLimited):
        client.create_prompt_run("p", 1, {})
    assert len(server.requests) == 4  # 1 + max_retries
    server.requests.clear()
    server.default = answer(429, {"error": "slow down"}, {"Retry-After": "3600"})
    with pytest.raises(RateLimited) as info:
        client.create_prompt_run("p", 1, {})
    assert info.value.retry_after == 3600
    assert len(server.requests) == 1  # the caller's scheduler waits, not a worker asleep


def test_create_connection_refused_is_retried_and_then_succeeds():
    url = refused_url()
    port = int(url.rsplit(":", 1)[1])
    client = make_client(url, max_retries=2)
    started: list[LoopbackServer] = []

    def sleep(_seconds: float) -> None:
        if not started:  # PromptJuggler comes back during the backoff
            srv = LoopbackServer(port)
            srv.push(answer(200, CREATED))
            started.append(srv)

    client._sleep = sleep
    try:
        assert client.create_prompt_run("p", 1, {}).id == uuid.UUID(RUN_ID)
        assert len(started[0].requests) == 1
    finally:
        client.close()
        for srv in started:
            srv.close()


def test_create_connection_refused_every_time_is_request_not_sent():
    client = make_client(refused_url(), max_retries=2)
    sleeps: list[float] = []
    client._sleep = sleeps.append
    with pytest.raises(RequestNotSent) as info:
        client.create_prompt_run("p", 1, {})
    assert info.value.nothing_sent
    assert len(sleeps) == 2


@pytest.mark.parametrize(("status", "cls"), [(404, NotFound), (422, UnprocessableEntity)])
def test_create_definite_refusals_are_typed(server, client, status, cls):
    server.push(answer(status, {"error": "Prompt not found"}))
    with pytest.raises(cls, match="Prompt not found"):
        client.create_prompt_run("p", 1, {})


def test_env_vars_never_appear_in_an_error(server, client):
    server.push(answer(422, {"error": "bad"}))
    with pytest.raises(UnprocessableEntity) as info:
        client.create_prompt_run("p", 1, {}, env_vars={"MY_TOKEN": "tok_SECRET_123"})
    assert "tok_SECRET_123" not in repr(info.value.__dict__) + str(info.value)


# -- reading runs back -------------------------------------------------------------------------


def test_get_prompt_run_parses_every_documented_field(server, client):
    server.push(answer(200, prompt_run_json()))
    run = client.get_prompt_run(RUN_ID)
    assert server.requests[0].path == f"/api/v1/promptruns/{RUN_ID}"
    assert isinstance(run, RemoteRun)
    assert run.id == uuid.UUID(RUN_ID)
    assert run.status == "completed"
    assert run.created_at == datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    assert run.finished_at == datetime(2026, 12, 6, 10, 0, 3, 250000, tzinfo=UTC)
    assert run.output == "You get 25 vacation days."
    assert run.emitted == ({"tool": "answer", "payload": {"days": 25}},)
    assert [item["type"] for item in run.transcript] == ["tool", "text"]
    assert run.token_usage is not None and run.token_usage["total"] == 129
    assert run.service_tier == "default"
    assert run.cost == pytest.approx(0.0016)
    assert run.cost_breakdown is not None and run.cost_breakdown["success"]["output"] == 0.0004
    assert run.outputs == {} and run.errors == () and run.error is None


def test_get_workflow_run_parses_outputs_and_errors(server, client):
    body = {
        "id": RUN_ID,
        "status": "pending",
        "createdAt": "2026-12-06T10:00:00",
        "finishedAt": None,
        "outputs": {"summary": "partial", "answer": None},
        "errors": ["node 'check' warned"],
        "tokenUsage": None,
        "cost": None,
    }
    server.push(answer(200, body))
    run = client.get_workflow_run(uuid.UUID(RUN_ID))
    assert server.requests[0].path == f"/api/v1/workflowruns/{RUN_ID}"
    assert run.status == "pending"
    assert run.created_at == datetime(2026, 12, 6, 10, 0, tzinfo=UTC)  # naive read as UTC
    assert run.finished_at is None
    assert run.outputs == {"summary": "partial", "answer": None}
    assert run.errors == ("node 'check' warned",)
    assert (run.token_usage, run.cost, run.cost_breakdown) == (None, None, None)


def test_a_run_with_only_id_and_status_and_odd_fields_is_read(server, client):
    server.push(
        answer(
            200,
            {
                "id": RUN_ID,
                "status": "cancelled",  # not documented yet: kept verbatim
                "createdAt": "yesterday",
                "output": 42,
                "emitted": "nope",
                "transcript": [{"type": "text", "content": "hi"}, "junk"],
                "tokenUsage": {"input": -1, "output": 3, "total": True},
                "cost": {"total": -2},
                "newField": {"x": 1},
            },
        )
    )
    run = client.get_prompt_run(RUN_ID)
    assert run.status == "cancelled"
    assert (run.created_at, run.output, run.emitted) == (None, None, ())
    assert run.transcript == ({"type": "text", "content": "hi"},)
    assert run.token_usage == {"output": 3}
    assert run.cost is None


@pytest.mark.parametrize("body", [[], {"status": "pending"}, {"id": RUN_ID, "status": "x" * 200}])
def test_a_run_without_an_id_or_with_an_impossible_status_is_invalid(server, client, body):
    server.push(answer(200, body))
    with pytest.raises(InvalidResponse):
        client.get_prompt_run(RUN_ID)


def test_get_run_is_retried_like_every_get(server, client):
    server.push(answer(503, ""), slow_answer(5), answer(200, prompt_run_json()))
    assert client.get_prompt_run(RUN_ID).status == "completed"
    assert len(server.requests) == 3


def test_get_run_with_a_malformed_id_makes_no_request(server, client):
    with pytest.raises(ValueError, match="run id"):
        client.get_workflow_run("../knowledge-bases/kb")
    assert server.requests == []


# -- against the emulator ----------------------------------------------------------------------


@pytest.fixture
def fake():
    from promptjuggler_django.testing import FakePromptJuggler

    with FakePromptJuggler(API_KEY) as f:
        f.add_prompt("ask", tags={"production": 1}, inputs=("question",))
        f.add_workflow("triage", outputs={"label": "billing"})
        yield f


@pytest.fixture
def fake_client(fake):
    c = make_client(fake.url, max_retries=3)
    c.sleeps = []  # type: ignore[attr-defined]
    c._sleep = c.sleeps.append  # type: ignore[attr-defined]
    yield c
    c.close()


def test_emulator_prompt_run_round_trip(fake, fake_client):
    created = fake_client.create_prompt_run(
        "ask", "production", {"question": "Vacation?"}, metadata={"local_run": "1"}
    )
    assert fake_client.get_prompt_run(created.id).status == "pending"
    fake.finish_run(created.id, output="25 days.")
    run = fake_client.get_prompt_run(created.id)
    assert (run.status, run.output) == ("completed", "25 days.")
    assert run.finished_at is not None and run.created_at is not None
    assert run.cost is not None and run.cost > 0
    assert run.token_usage is not None and run.token_usage["total"] > 0
    assert fake.run(created.id).metadata == {"local_run": "1"}  # type: ignore[union-attr]
    again = fake_client.create_prompt_run(
        "ask", 1, {"question": "And sick days?"}, thread=created.thread
    )
    assert again.thread == created.thread


def test_emulator_workflow_run_round_trip(fake, fake_client):
    created = fake_client.create_workflow_run("triage", "__latest__", {"ticket": "refund"})
    fake.finish_run(created.id)
    run = fake_client.get_workflow_run(created.id)
    assert (run.status, dict(run.outputs), run.errors) == ("completed", {"label": "billing"}, ())
    with pytest.raises(NotFound):
        fake_client.get_prompt_run(created.id)  # a workflow run is not a prompt run


def test_emulator_refusals_are_typed_and_start_nothing(fake, fake_client):
    with pytest.raises(NotFound, match="Prompt not found"):
        fake_client.create_prompt_run("nope", 1, {})
    with pytest.raises(UnprocessableEntity, match="question"):
        fake_client.create_prompt_run("ask", 1, {})
    with pytest.raises(UnprocessableEntity, match="priority"):
        fake_client.create_prompt_run("ask", 1, {"question": "q"}, priority="urgent")
    assert fake.runs() == []


def test_emulator_timeout_after_the_run_was_created_is_outcome_unknown_once(fake):
    client = make_client(fake.url, max_retries=3)  # read timeout 0.5 s
    fake.set_fault("create_prompt_run", read_timeout=3, after_effect=True, times=1)
    try:
        with pytest.raises(OutcomeUnknown):
            client.create_prompt_run("ask", 1, {"question": "q"})
    finally:
        client.close()
    assert len(fake.runs()) == 1  # exactly one remote run, and the POST was not sent again
    assert fake.request_count("create_prompt_run") == 1


def test_emulator_5xx_after_effect_is_not_retried(fake, fake_client):
    fake.set_fault("create_workflow_run", status=502, after_effect=True, times=1)
    with pytest.raises(ServerError):
        fake_client.create_workflow_run("triage", 1, {})
    assert len(fake.runs()) == 1
    assert fake.request_count("create_workflow_run") == 1


def test_emulator_429_is_retried_and_the_run_created_once(fake, fake_client):
    fake.set_fault("create_prompt_run", status=429, retry_after=1, times=2)
    created = fake_client.create_prompt_run("ask", 1, {"question": "q"})
    assert [r.id for r in fake.runs()] == [created.id]
    assert fake.request_count("create_prompt_run") == 3
    assert len(fake_client.sleeps) == 2


def test_emulator_get_run_rides_out_transient_faults(fake, fake_client):
    created = fake_client.create_prompt_run("ask", 1, {"question": "q"})
    fake.set_fault("get_prompt_run", reset=True, times=1)
    fake.set_fault("get_prompt_run", status=503, times=1)
    assert fake_client.get_prompt_run(created.id).id == created.id
    assert fake.request_count("get_prompt_run") == 3


def test_nothing_sent_survives_pickling_for_task_queues():
    import pickle

    client = make_client(refused_url(), max_retries=0)
    try:
        with pytest.raises(RequestNotSent) as info:
            client.create_workflow_run("w", 1, {})
    finally:
        client.close()
    restored = pickle.loads(pickle.dumps(info.value))
    assert restored.nothing_sent and str(restored) == str(info.value)


def test_a_remote_runs_mappings_are_read_only(server, client):
    server.push(answer(200, prompt_run_json(outputs={"a": "b"})))
    run = client.get_prompt_run(RUN_ID)
    with pytest.raises(TypeError):
        run.outputs["a"] = "c"  # type: ignore[index]
    with pytest.raises(TypeError):
        run.token_usage["total"] = 0  # type: ignore[index]
