"""The REST API's runs: ask (only ``ASK_PROMPT``), follow up the user's own thread, read the
answer with its sources, cost and tokens. End to end against the emulator over loopback: the
question is sent after commit, the emulator's signed webhook completes it, a task stores it."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from promptjuggler_django.models import Run

from .test_ask_views import answered
from .test_runs import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

RUNS = reverse("promptjuggler_django_rest:run-list")
PROMPT = "ask-handbook"  # tests/settings.py's ASK_PROMPT


def detail(pk: int) -> str:
    return reverse("promptjuggler_django_rest:run-detail", args=[pk])


def answer(inputs) -> str:
    return f"You asked: {inputs['question']}"


@pytest.fixture
def fake(fake_promptjuggler, live_server):
    fake_promptjuggler.add_prompt(PROMPT, inputs=("question",), output=answer)
    fake_promptjuggler.add_prompt("expensive", inputs=("question",))
    fake_promptjuggler.set_webhook(live_server.url + reverse("promptjuggler_django:webhook"))
    return fake_promptjuggler


@pytest.fixture
def api(ann) -> APIClient:
    client = APIClient()
    client.force_authenticate(ann)
    return client


def stored(pk: int) -> Run:
    return wait_for(lambda: Run.objects.filter(pk=pk, result_fetched_at__isnull=False).first())


def test_ask_then_follow_up_in_the_same_thread(fake, api, ann) -> None:
    response = api.post(RUNS, {"question": "How many vacation days?"}, format="json")
    assert response.status_code == 201, response.content
    first = response.json()
    # Sent after commit, before the answer to this request: PromptJuggler has it.
    assert first["status"] == "waiting" and first["question"] == "How many vacation days?"
    (remote,) = fake.runs()
    assert (remote.slug, remote.inputs) == (PROMPT, {"question": "How many vacation days?"})

    fake.finish_run(remote.id)
    stored(first["id"])
    shown = api.get(detail(first["id"])).json()
    assert shown["status"] == "answered" and shown["status_label"] == "Answered"
    assert shown["output"] == "You asked: How many vacation days?"
    assert shown["tokens"] > 0 and float(shown["cost"]) > 0
    assert shown["thread"] == str(remote.thread)
    assert shown["sources"] == []  # a prompt without a knowledge search cites nothing

    response = api.post(
        RUNS, {"question": "And in the first year?", "previous": first["id"]}, format="json"
    )
    assert response.status_code == 201, response.content
    follow_up = response.json()
    assert follow_up["thread"] == shown["thread"]
    second = fake.runs()[1]
    assert second.thread == remote.thread and second.slug == PROMPT
    assert Run.objects.get(pk=follow_up["id"]).thread == remote.thread

    listed = api.get(RUNS).json()
    assert [r["id"] for r in listed["results"]] == [follow_up["id"], first["id"]]


def test_the_request_cannot_choose_what_runs(fake, api) -> None:
    response = api.post(
        RUNS,
        {
            "question": "?",
            "slug": "expensive",
            "version": 7,
            "inputs": {"question": "x"},
            "priority": "onsite",
        },
        format="json",
    )
    assert response.status_code == 201
    (remote,) = fake.runs()
    assert (remote.slug, remote.priority, remote.inputs) == (PROMPT, "normal", {"question": "?"})


def test_one_question_at_a_time_then_429(fake, api) -> None:
    assert api.post(RUNS, {"question": "First?"}, format="json").status_code == 201
    response = api.post(RUNS, {"question": "Second?"}, format="json")
    assert response.status_code == 429
    assert "still waiting for its answer" in response.json()["detail"]
    assert len(fake.runs()) == 1  # nothing more was started, nothing more billed


def test_only_my_runs(fake, api, ann, bob) -> None:
    theirs = answered(bob, "Bob's?")
    assert api.get(detail(theirs.pk)).status_code == 404
    assert api.get(RUNS).json()["results"] == []
    response = api.post(RUNS, {"question": "?", "previous": theirs.pk}, format="json")
    assert response.status_code == 400
    assert "previous" in response.json()
    assert fake.runs() == []


def test_sources_come_from_the_transcripts_citations(api, ann) -> None:
    run = answered(
        ann,
        transcript=[
            {"type": "tool", "name": "knowledge_search", "citations": [{"title": "handbook.md"}]},
            {"type": "text", "content": "27 days.", "citations": [{"title": "handbook.md"}]},
        ],
    )
    assert api.get(detail(run.pk)).json()["sources"] == ["handbook.md"]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"question": "  "}, "question"), ({"question": "x" * 4001}, "question"), ({}, "question")],
)
def test_bad_questions_are_400(api, body, field) -> None:
    response = api.post(RUNS, body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Run.objects.exists()


def test_without_ask_prompt_every_request_is_404(api, settings) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "ASK_PROMPT": None}
    assert api.get(RUNS).status_code == 404
    assert api.post(RUNS, {"question": "?"}, format="json").status_code == 404
    assert not Run.objects.exists()


def test_signed_out_is_refused(client) -> None:
    assert client.get(RUNS).status_code == 403
    assert client.post(RUNS, {"question": "?"}, content_type="application/json").status_code == 403
