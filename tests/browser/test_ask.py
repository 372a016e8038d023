"""Asking the documents in Chromium: upload a handbook, watch it become ready, ask, and see the
answer quoting it arrive without a reload; a follow-up continues the same thread.

The emulator processes documents and answers runs on timers and sends signed webhooks to the
live server, so everything completes by itself, as with the real service.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.urls import reverse

from promptjuggler_django.models import KnowledgeBase, Run, RunSendState
from promptjuggler_django.testing import FakePromptJuggler

from ..test_ask_views import answered, make_run
from .conftest import log_in, save_screenshot
from .test_documents import assert_accessible, text_file

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ASK = reverse("promptjuggler_django:ask")
LIST = reverse("promptjuggler_django:document_list")
UPLOAD = reverse("promptjuggler_django:document_upload")
PROMPT = "ask-handbook"  # tests/settings.py's ASK_PROMPT

HANDBOOK = (
    "Core hours are 10:00 to 16:00.\n\n"
    "Everyone has 27 vacation days a year, plus public holidays.\n\n"
    "New starters get a laptop and a headset.\n"
)


@pytest.fixture
def knowledge_base() -> KnowledgeBase:
    return KnowledgeBase.objects.create(slug="kb_test", name="Handbook")


@pytest.fixture
def answering_emulator(live_server: Any, settings: Any) -> Iterator[FakePromptJuggler]:
    """The emulator with timers: documents are ready a second after upload, questions are
    answered a second after they are asked, from the knowledge base's ready documents."""
    config = settings.PROMPTJUGGLER
    emulator = FakePromptJuggler(
        config["API_KEY"],
        webhook_url=live_server.url + reverse("promptjuggler_django:webhook"),
        webhook_secret=config["WEBHOOK_SECRETS"][0],
        processing_delay=1.0,
        run_delay=1.0,
        knowledge_bases=[config["DEFAULT_KNOWLEDGE_BASE"]],
    )
    emulator.add_prompt(PROMPT, knowledge_base=config["DEFAULT_KNOWLEDGE_BASE"])
    with emulator:
        settings.PROMPTJUGGLER = {**config, "BASE_URL": emulator.url}
        yield emulator


def test_upload_ask_and_follow_up(
    new_page, answering_emulator: FakePromptJuggler, knowledge_base, django_user_model
):
    from playwright.sync_api import expect

    django_user_model.objects.create_user("ann", password="ann-pw")
    page = new_page()
    log_in(page, "ann", "ann-pw", UPLOAD)

    # Upload the handbook; it becomes ready by itself.
    page.set_input_files("input[type=file]", [text_file("handbook.txt", HANDBOOK)])
    page.click("form.pj-form [type=submit]")
    page.wait_for_url(f"**{LIST}")
    expect(page.locator("tr[data-pj-document] [data-pj-badge]")).to_have_text("Ready")

    # Ask, from the navigation.
    page.get_by_role("link", name="Ask", exact=True).click()
    page.wait_for_url(f"**{ASK}")
    page.get_by_label("Your question").fill("How many vacation days?")
    page.get_by_role("button", name="Ask").click()
    page.wait_for_url(re.compile(r"/ask/\d+/#pj-run-\d+$"))
    page.evaluate("window.__pjSamePage = true")
    first = page.locator("[data-pj-run]").first
    expect(first.locator(".pj-turn__question p")).to_have_text("How many vacation days?")

    # The answer lands (webhook, then the stored result) and the page shows it in place.
    expect(first.locator("[data-pj-badge]")).to_have_text("Answered")
    expect(first.locator("[data-pj-answer]")).to_contain_text("27 vacation days")
    expect(first.locator("[data-pj-answer]")).to_contain_text("handbook.txt")
    expect(first.locator("[data-pj-source-list] li")).to_have_text(["handbook.txt"])
    expect(page.locator("[data-pj-announce]")).to_contain_text("27 vacation days")
    expect(page.locator("[data-pj-reload-hint]")).to_be_hidden()
    assert page.evaluate("window.__pjSamePage") is True  # never reloaded
    save_screenshot(page, "screenshot-ask.png", full_page=True)

    # A follow-up continues the same conversation.
    expect(page.get_by_role("button", name="Ask")).to_be_enabled()
    page.get_by_label("Ask a follow-up question").fill("Are public holidays among the days?")
    page.get_by_role("button", name="Ask").click()
    turns = page.locator("[data-pj-run]")
    expect(turns).to_have_count(2)
    expect(turns.nth(1).locator("[data-pj-badge]")).to_have_text("Answered")
    expect(turns.nth(1).locator("[data-pj-answer]")).to_contain_text("public holidays")
    expect(turns.nth(0).locator("[data-pj-answer]")).to_contain_text("27 vacation days")

    first_run, second_run = Run.objects.order_by("created_at", "pk")
    assert first_run.thread is not None and second_run.thread == first_run.thread
    assert [r.slug for r in (first_run, second_run)] == [PROMPT, PROMPT]
    remote = answering_emulator.runs()
    assert [r.thread for r in remote] == [first_run.thread, first_run.thread]
    assert [r.id for r in remote] == [first_run.remote_id, second_run.remote_id]


def seed_conversation(owner: Any) -> Run:
    """An answer citing a long file name, and a follow-up in review."""
    name = "a-rather-long-file-name-for-a-phone-screen.txt"
    text = f'According to {name}: "Everyone has 27 vacation days a year." ({name})'
    first = answered(
        owner,
        "How many vacation days do I get in a year, all told?",
        output=text,
        transcript=[{"type": "text", "content": text, "citations": [{"title": name}]}],
    )
    make_run(owner, "And sick days?", send_state=RunSendState.NEEDS_REVIEW, thread=first.thread)
    return first


@pytest.mark.parametrize("width", [390, 1280])
def test_ask_page_fits_the_screen_and_is_accessible(new_page, django_user_model, width):
    from playwright.sync_api import expect

    ann = django_user_model.objects.create_user("ann", password="ann-pw")
    page = new_page()
    page.set_viewport_size({"width": width, "height": 800})
    log_in(page, "ann", "ann-pw", ASK)
    expect(page.get_by_label("Your question")).to_be_visible()
    assert_accessible(page)

    first = seed_conversation(ann)
    page.goto(reverse("promptjuggler_django:ask_conversation", args=[first.pk]))
    expect(page.locator("[data-pj-run]")).to_have_count(2)
    expect(page.locator("[data-pj-source-list] li")).to_have_count(1)
    expect(page.locator("[data-pj-message]").nth(1)).to_contain_text("could not confirm")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{overflow}px of horizontal overflow at {width}px"
    assert_accessible(page)
