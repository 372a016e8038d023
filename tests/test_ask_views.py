"""The Ask page and its status endpoint: login, the configured prompt only, owner-scoped
conversations, the flood guard, and runs worded for the asking user.

Runs are recorded here but never sent (the test's transaction never commits); a run's later
states are written on the row as the runs engine would leave them. End to end with the emulator:
``tests/test_ask_api.py`` and the browser test.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from promptjuggler_django import asking
from promptjuggler_django.models import Run, RunKind, RunSendState
from promptjuggler_django.views import AskView

pytestmark = pytest.mark.django_db

ASK = reverse("promptjuggler_django:ask")
STATUS = reverse("promptjuggler_django:ask_status")
PROMPT = "ask-handbook"  # tests/settings.py's ASK_PROMPT

TRANSCRIPT = [
    {
        "type": "tool",
        "name": "knowledge_search",
        "status": "ok",
        "queries": ["vacation days"],
        "citations": [{"title": "handbook.txt", "url": "https://x.invalid/1"}],
    },
    {
        "type": "text",
        "content": "27 days.",
        "citations": [
            {"title": "handbook.txt", "url": "https://x.invalid/1"},
            {"title": "faq.md", "url": "https://x.invalid/2"},
        ],
    },
    {"type": "data", "tool": "x", "payload": {"citations": [{"title": "not a source"}]}},
]


def conversation_url(run: Run) -> str:
    return reverse("promptjuggler_django:ask_conversation", args=[run.pk])


def make_run(owner, question="How many vacation days?", **fields) -> Run:
    values = {
        "kind": RunKind.PROMPT,
        "slug": PROMPT,
        "inputs": {"question": question},
        "owner": owner,
        **fields,
    }
    return Run.objects.create(**values)


def answered(owner, question="How many vacation days?", **fields) -> Run:
    values = {
        "send_state": RunSendState.STARTED,
        "remote_id": uuid.uuid4(),
        "thread": uuid.uuid4(),
        "remote_status": "completed",
        "output": "Everyone has 27 vacation days.",
        "transcript": TRANSCRIPT,
        "result_fetched_at": timezone.now(),
        **fields,
    }
    return make_run(owner, question, **values)


@pytest.mark.parametrize("name", ["ask", "ask_status"])
def test_the_page_needs_a_login(client, name):
    response = client.get(reverse(f"promptjuggler_django:{name}"))
    if name == "ask_status":
        assert response.status_code == 403
    else:
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_without_ask_prompt_the_page_and_its_status_are_404(client, ann, settings):
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "ASK_PROMPT": None}
    client.force_login(ann)
    assert client.get(ASK).status_code == 404
    assert client.post(ASK, {"question": "Hi?"}).status_code == 404
    assert client.get(STATUS, {"ids": "1"}).status_code == 404
    assert not Run.objects.exists()
    # The navigation leaves the link out.
    list_page = client.get(reverse("promptjuggler_django:document_list")).content.decode()
    assert f'href="{ASK}"' not in list_page


def test_the_navigation_links_the_page(client, ann):
    client.force_login(ann)
    page = client.get(reverse("promptjuggler_django:document_list")).content.decode()
    assert f'href="{ASK}"' in page


def test_a_question_starts_the_configured_prompt_and_shows_the_conversation(client, ann, settings):
    settings.PROMPTJUGGLER = {
        **settings.PROMPTJUGGLER,
        "ASK_PROMPT_VERSION": "production",
        "ASK_INPUT": "query",
    }
    client.force_login(ann)
    page = client.get(ASK)
    assert page.status_code == 200
    assert "Your question" in page.content.decode()

    # Whatever else the request names, it starts ASK_PROMPT at ASK_PROMPT_VERSION.
    response = client.post(
        ASK, {"question": "  How many vacation days?  ", "slug": "expensive", "version": "9"}
    )
    run = Run.objects.get()
    assert (run.kind, run.slug, run.version, run.inputs) == (
        RunKind.PROMPT,
        PROMPT,
        "production",
        {"query": "How many vacation days?"},
    )
    assert run.owner == ann and run.send_state == RunSendState.QUEUED
    assert response.status_code == 302
    assert response["Location"] == f"{conversation_url(run)}#pj-run-{run.pk}"

    page = client.get(conversation_url(run)).content.decode()
    assert "How many vacation days?" in page
    assert "Sending your question…" in page
    # Without the script the page says a reload shows the answer; the button waits.
    assert "reload the page to see an answer that has come since" in page
    assert "disabled>Waiting for the answer…</button>" in page
    assert 'data-pj-final="false"' in page


def test_an_answer_with_its_sources(client, ann):
    run = answered(ann)
    client.force_login(ann)
    page = client.get(conversation_url(run)).content.decode()
    assert "Everyone has 27 vacation days." in page
    assert "<li>handbook.txt</li><li>faq.md</li>" in page  # each source once, in order
    assert "not a source" not in page
    assert 'data-pj-final="true"' in page
    assert ">Ask</button>" in page
    assert f'name="previous" value="{run.pk}"' in page  # the next question follows it up


def test_a_follow_up_continues_the_thread(client, ann):
    first = answered(ann)
    client.force_login(ann)
    response = client.post(
        conversation_url(first), {"question": "And in the first year?", "previous": first.pk}
    )
    follow_up = Run.objects.exclude(pk=first.pk).get()
    assert follow_up.thread == first.thread
    assert follow_up.slug == PROMPT and follow_up.owner == ann
    assert response["Location"] == f"{conversation_url(follow_up)}#pj-run-{follow_up.pk}"

    # Both questions are one conversation, from either run's page.
    for run in (first, follow_up):
        page = client.get(conversation_url(run)).content.decode()
        assert page.index("How many vacation days?") < page.index("And in the first year?")


def test_someone_elses_conversation_is_404_and_cannot_be_continued(client, ann, bob):
    theirs = answered(bob)
    client.force_login(ann)
    assert client.get(conversation_url(theirs)).status_code == 404
    response = client.post(ASK, {"question": "Their thread?", "previous": theirs.pk})
    assert response.status_code == 404
    assert Run.objects.filter(owner=ann).count() == 0
    assert client.get(STATUS, {"ids": str(theirs.pk)}).json()["runs"] == []


def test_a_run_of_another_prompt_is_not_a_conversation(client, ann):
    other = answered(ann, slug="other-prompt")
    client.force_login(ann)
    assert client.get(conversation_url(other)).status_code == 404
    assert client.post(ASK, {"question": "?", "previous": other.pk}).status_code == 404


def test_one_question_at_a_time(client, ann, bob):
    client.force_login(ann)
    client.post(ASK, {"question": "First?"})
    response = client.post(ASK, {"question": "Second?"})
    assert response.status_code == 200
    assert "still waiting for its answer" in response.content.decode()
    assert Run.objects.count() == 1

    # Another user is not held up by it.
    client.force_login(bob)
    assert client.post(ASK, {"question": "Mine?"}).status_code == 302

    # Answered, or waiting longer than BUSY_FOR: the next question goes.
    Run.objects.filter(owner=ann).update(created_at=timezone.now() - asking.BUSY_FOR)
    client.force_login(ann)
    assert client.post(ASK, {"question": "Third?"}).status_code == 302
    assert Run.objects.filter(owner=ann).count() == 2


@pytest.mark.parametrize(
    ("question", "error"),
    [("   ", "Type a question."), ("x" * 4001, "at most 4000 characters")],
)
def test_bad_questions_are_refused(client, ann, question, error):
    client.force_login(ann)
    response = client.post(ASK, {"question": question})
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not Run.objects.exists()


def test_a_follow_up_before_the_thread_is_known_waits(client, ann):
    queued = make_run(ann)
    Run.objects.filter(pk=queued.pk).update(created_at=timezone.now() - timedelta(hours=1))
    client.force_login(ann)
    response = client.post(conversation_url(queued), {"question": "?", "previous": queued.pk})
    assert "has not reached PromptJuggler yet" in response.content.decode()
    assert Run.objects.count() == 1


@pytest.mark.parametrize(
    ("fields", "phase", "final", "message"),
    [
        ({}, "sending", False, "Sending your question…"),
        (
            {
                "send_state": RunSendState.QUEUED,
                "next_attempt_at": timezone.now() + timedelta(hours=1),
            },
            "sending",
            False,
            "PromptJuggler is busy: the question goes out at",
        ),
        (
            {"send_state": RunSendState.STARTED, "remote_status": "pending"},
            "waiting",
            False,
            "Looking through the documents…",
        ),
        (
            {
                "send_state": RunSendState.STARTED,
                "remote_status": "failed",
                "result_fetched_at": timezone.now(),
                "error": "model overloaded",
            },
            "no_answer",
            True,
            "Something went wrong while answering.",
        ),
        (
            {"send_state": RunSendState.FAILED, "last_error": "PromptJuggler answered 422"},
            "not_sent",
            True,
            "The question could not be sent.",
        ),
        (
            {"send_state": RunSendState.NEEDS_REVIEW, "last_error": "read timeout"},
            "checking",
            True,
            "We could not confirm that the question was received.",
        ),
        (
            {
                "send_state": RunSendState.STARTED,
                "remote_status": "completed",
                "result_fetched_at": timezone.now(),
            },
            "answered",
            True,
            "The answer came back without any text.",
        ),
    ],
)
def test_every_state_in_the_users_words(client, ann, fields, phase, final, message):
    run = make_run(ann, **fields)
    client.force_login(ann)
    [item] = client.get(STATUS, {"ids": str(run.pk)}).json()["runs"]
    assert (item["phase"], item["final"]) == (phase, final)
    assert item["message"].startswith(message)
    assert item["answer"] == "" and item["sources"] == []
    page = client.get(conversation_url(run)).content.decode()
    assert message in page
    # Technical reasons stay in the admin.
    assert "422" not in item["message"] and "timeout" not in page and "overloaded" not in page


def test_the_status_endpoint_answers_with_the_answer_and_sources(client, ann):
    run = answered(ann)
    waiting = make_run(ann, "Later?")
    client.force_login(ann)
    data = client.get(STATUS, {"ids": f"{run.pk},{waiting.pk},999"}).json()
    by_id = {item["id"]: item for item in data["runs"]}
    assert set(by_id) == {run.pk, waiting.pk}
    assert by_id[run.pk]["answer"] == "Everyone has 27 vacation days."
    assert by_id[run.pk]["sources"] == ["handbook.txt", "faq.md"]
    assert by_id[run.pk]["label"] == "Answered"
    assert by_id[waiting.pk]["question"] == "Later?"
    assert data["poll_interval_ms"] == 2000


@pytest.mark.parametrize("ids", ["1,x", ",".join(str(i) for i in range(101))])
def test_the_status_endpoint_refuses_bad_ids(client, ann, ids):
    client.force_login(ann)
    response = client.get(STATUS, {"ids": ids})
    assert response.status_code == 400


def test_the_page_lists_my_recent_questions_once_per_conversation(client, ann, bob):
    first = answered(ann, "First question?")
    answered(ann, "Its follow-up?", thread=first.thread)
    answered(ann, "Another question?")
    answered(bob, "Bob's question?")
    client.force_login(ann)
    page = client.get(ASK).content.decode()
    recent = page[page.index("Your recent questions") :]
    assert "Another question?" in recent and "Its follow-up?" in recent
    assert "First question?" not in recent  # its conversation is listed by its latest turn
    assert "Bob" not in recent


def test_a_subclass_may_choose_the_prompt_per_user_never_the_request(rf, ann):
    class PerUserAskView(AskView):
        def get_ask_config(self):
            return asking.AskConfig(f"ask-{self.request.user.username}", 2, "q")

    request = rf.post(ASK, {"question": "Mine?", "slug": "expensive"})
    request.user = ann
    response = PerUserAskView.as_view()(request)
    assert response.status_code == 302
    run = Run.objects.get()
    assert (run.slug, run.version, run.inputs) == ("ask-ann", "2", {"q": "Mine?"})
