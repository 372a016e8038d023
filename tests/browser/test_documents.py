"""A person using the pages in Chromium, against the live server and the emulator on loopback.

The emulator sends real signed webhooks to the live server; nothing is mocked between the
browser, the app and the emulator.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse

from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, SyncState
from promptjuggler_django.sync import push_due
from promptjuggler_django.testing import FakePromptJuggler

from .conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LIST = reverse("promptjuggler_django:document_list")
UPLOAD = reverse("promptjuggler_django:document_upload")
ADMIN_DOCUMENTS = reverse("admin:promptjuggler_django_knowledgedocument_changelist")


def text_file(name: str, text: str) -> dict[str, Any]:
    return {"name": name, "mimeType": "text/plain", "buffer": text.encode()}


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def knowledge_base() -> KnowledgeBase:
    return KnowledgeBase.objects.create(slug="kb_test", name="Handbook")


@pytest.fixture
def hold_tasks(settings: Any) -> Callable[[bool], None]:
    """``hold_tasks(True)``: enqueued pushes wait (a worker that has not picked them up yet)."""
    tasks_module = next(iter(settings.TASKS.values()))["BACKEND"].split(".backends.")[0]
    settings.TASKS = {
        **settings.TASKS,
        "held": {"BACKEND": f"{tasks_module}.backends.dummy.DummyBackend"},
    }

    def hold(on: bool) -> None:
        settings.PROMPTJUGGLER = {
            **settings.PROMPTJUGGLER,
            "TASK_BACKEND": "held" if on else "default",
        }

    return hold


def test_upload_live_status_delete_and_privacy(
    new_page, emulator: FakePromptJuggler, knowledge_base, hold_tasks, django_user_model
):
    from playwright.sync_api import expect

    django_user_model.objects.create_user("ann", password="ann-pw")
    django_user_model.objects.create_user("bob", password="bob-pw")

    page = new_page()
    log_in(page, "ann", "ann-pw", LIST)
    expect(page.get_by_text("You have not uploaded any documents yet.")).to_be_visible()

    # Upload two files at once; the push waits for a worker, so they show as queued.
    hold_tasks(True)
    page.goto(UPLOAD)
    page.set_input_files(
        "input[type=file]",
        [
            text_file("handbook.txt", "Core hours are 10:00 to 16:00. " * 40),
            text_file("travel.txt", "Book trains for short journeys. " * 30),
        ],
    )
    expect(page.locator(".pj-file-list li")).to_have_count(2)  # the chosen files are listed
    page.click("form.pj-form [type=submit]")
    page.wait_for_url(f"**{LIST}")
    expect(page.locator(".pj-messages")).to_contain_text("2 documents uploaded.")
    badges = page.locator("tr[data-pj-document] [data-pj-badge]")
    expect(badges).to_have_text(["Queued", "Queued"])
    page.evaluate("window.__pjSamePage = true")

    # A worker pushes them; the page follows without a reload.
    hold_tasks(False)
    push_due()
    assert sorted(d.file_name for d in emulator.documents("kb_test")) == [
        "handbook.txt",
        "travel.txt",
    ]
    expect(badges).to_have_text(["Processing", "Processing"])

    # PromptJuggler finishes processing and sends signed webhooks to the live server.
    emulator.finish()
    expect(badges).to_have_text(["Ready", "Ready"])
    expect(page.locator("tr[data-pj-document]").first).to_have_attribute("data-pj-final", "true")
    expect(page.locator("[data-pj-chunks]").first).not_to_have_text("—")
    assert page.evaluate("window.__pjSamePage") is True  # never reloaded
    assert set(KnowledgeDocument.objects.values_list("remote_status", flat=True)) == {"ready"}

    # Delete one: it goes from the page and from PromptJuggler.
    handbook = KnowledgeDocument.objects.get(file_name="handbook.txt")
    travel = KnowledgeDocument.objects.get(file_name="travel.txt")
    page.get_by_role("link", name="Delete handbook.txt").click()
    expect(page.get_by_text("Delete “handbook.txt”?")).to_be_visible()
    page.get_by_role("button", name="Yes, delete it").click()
    page.wait_for_url(f"**{LIST}")
    expect(page.locator(".pj-messages")).to_contain_text("“handbook.txt” was deleted.")
    expect(page.locator("tr[data-pj-document]")).to_have_count(1)
    wait_until(lambda: [d.file_name for d in emulator.documents("kb_test")] == ["travel.txt"])
    assert emulator.document(handbook.remote_id) is None

    # Another user sees none of it and cannot delete it.
    other = new_page()
    log_in(other, "bob", "bob-pw", LIST)
    expect(other.get_by_text("You have not uploaded any documents yet.")).to_be_visible()
    detail = reverse("promptjuggler_django:document_detail", args=[travel.pk])
    delete = reverse("promptjuggler_django:document_delete", args=[travel.pk])
    assert other.goto(detail).status == 404
    assert other.goto(delete).status == 404
    csrf = next(c["value"] for c in other.context.cookies() if c["name"] == "csrftoken")
    forged = other.request.post(delete, headers={"X-CSRFToken": csrf, "Referer": other.url})
    assert forged.status == 404
    status = other.request.get(
        reverse("promptjuggler_django:document_status") + f"?ids={travel.pk}"
    )
    assert status.json()["documents"] == []
    assert KnowledgeDocument.objects.filter(pk=travel.pk).exists()
    assert [d.file_name for d in emulator.documents("kb_test")] == ["travel.txt"]


def test_admin_uploads_and_pushes_a_failed_document_again(
    new_page, emulator: FakePromptJuggler, knowledge_base, django_user_model
):
    from playwright.sync_api import expect

    django_user_model.objects.create_superuser("root", "root@example.com", "root-pw")
    emulator.set_fault("upload", status=422)  # PromptJuggler refuses the upload

    page = new_page()
    log_in(page, "root", "root-pw", ADMIN_DOCUMENTS)
    page.get_by_role("link", name="Upload files").click()
    page.set_input_files(
        "input[type=file]",
        [text_file("policy.txt", "Expenses within 30 days."), text_file("faq.md", "# FAQ")],
    )
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(f"**{ADMIN_DOCUMENTS}")
    expect(page.locator(".messagelist")).to_contain_text("2 documents uploaded")
    states = page.locator("[data-pj-sync-state]")
    expect(states).to_have_text(["Failed", "Failed"])
    assert set(KnowledgeDocument.objects.values_list("sync_state", flat=True)) == {SyncState.FAILED}
    assert emulator.documents("kb_test") == []

    # The change page explains why.
    page.get_by_role("link", name="policy.txt").click()
    expect(page.locator(".field-last_error")).to_contain_text("Unprocessable")  # 422
    page.go_back()

    # PromptJuggler accepts again: push the failed one again from the changelist.
    emulator.clear_faults()
    row = page.locator("#result_list tr", has_text="policy.txt")
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "push_again")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text("1 document queued to be pushed again.")
    expect(page.locator("#result_list tr", has_text="policy.txt")).to_contain_text("Synced")
    expect(page.locator("#result_list tr", has_text="policy.txt")).to_contain_text("Pending")
    expect(page.locator("#result_list tr", has_text="faq.md")).to_contain_text("Failed")
    assert [d.file_name for d in emulator.documents("kb_test")] == ["policy.txt"]


def test_upload_warns_before_submit_shows_progress_and_keeps_the_good_files(
    new_page, knowledge_base, hold_tasks, django_user_model, settings
):
    from playwright.sync_api import expect

    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "MAX_UPLOAD_SIZE": 2 * 1024 * 1024}
    django_user_model.objects.create_user("ann", password="ann-pw")
    hold_tasks(True)
    page = new_page()
    log_in(page, "ann", "ann-pw", UPLOAD)

    # Only refused files: the form comes back with the reasons, in place, and nothing is saved.
    page.set_input_files("input[type=file]", [text_file("tool.exe", "MZ")])
    expect(page.locator(".pj-file-list li")).to_contain_text("Not a supported type")
    page.click("form.pj-form [type=submit]")
    expect(page.locator("form.pj-form .pj-errors")).to_contain_text(
        "“tool.exe” is not a supported file type."
    )
    assert page.url.endswith(UPLOAD)
    assert not KnowledgeDocument.objects.exists()

    # Each chosen file is listed with its size; the ones the form will refuse say so first.
    page.set_input_files(
        "input[type=file]",
        [
            {"name": "handbook.txt", "mimeType": "text/plain", "buffer": b"x" * 1_500_000},
            text_file("tool.exe", "MZ"),
            {"name": "huge.txt", "mimeType": "text/plain", "buffer": b"y" * (3 * 1024 * 1024)},
        ],
    )
    items = page.locator(".pj-file-list li")
    expect(items).to_have_count(3)
    expect(items.nth(0).locator("[data-pj-file-warning]")).to_have_count(0)
    expect(items.nth(1)).to_contain_text("Not a supported type: it will not be uploaded.")
    expect(items.nth(2)).to_contain_text("the whole upload will be refused")
    page.set_input_files(
        "input[type=file]",
        [
            {"name": "handbook.txt", "mimeType": "text/plain", "buffer": b"x" * 1_500_000},
            text_file("tool.exe", "MZ"),
        ],
    )
    expect(items).to_have_count(2)

    # A slow connection: while the request runs, the button is disabled and a bar moves.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 20, "downloadThroughput": -1, "uploadThroughput": 400_000},
    )
    button = page.locator("form.pj-form [type=submit]")
    button.click()
    expect(button).to_be_disabled()
    expect(button).to_have_text("Uploading…")
    bar = page.locator("[data-pj-upload-progress]")
    expect(bar).to_be_visible()
    page.wait_for_function(
        "() => document.querySelector('[data-pj-upload-progress]').value > 0", timeout=10_000
    )
    page.wait_for_url(f"**{LIST}", timeout=30_000)
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    messages = page.locator(".pj-messages")
    expect(messages).to_contain_text("1 document uploaded.")
    expect(messages).to_contain_text("Not uploaded: “tool.exe” is not a supported file type.")
    assert list(KnowledgeDocument.objects.values_list("file_name", flat=True)) == ["handbook.txt"]


@pytest.mark.parametrize("width", [390, 1280])
def test_list_fits_the_screen_and_says_why_a_document_waits(
    new_page, knowledge_base, django_user_model, width
):
    from datetime import timedelta

    from django.utils import timezone
    from playwright.sync_api import expect

    ann = django_user_model.objects.create_user("ann", password="ann-pw")
    page = new_page()
    page.set_viewport_size({"width": width, "height": 800})
    log_in(page, "ann", "ann-pw", LIST)
    # The empty state invites the first upload.
    expect(page.get_by_role("link", name="Upload your first document")).to_be_visible()

    KnowledgeDocument.objects.create(
        knowledge_base=knowledge_base,
        owner=ann,
        file_name="a-rather-long-file-name-for-a-phone-screen.txt",
        file_size=9,
        sync_state=SyncState.RETRYING,
        last_error="PromptJuggler answered 503: Service Unavailable",
        next_attempt_at=timezone.now() + timedelta(minutes=5),
    )
    page.reload()
    status = page.locator("tr[data-pj-document] td.pj-status")
    expect(status).to_be_visible()
    expect(status).to_contain_text("Waiting to retry — PromptJuggler answered 503, next try at")
    box = status.bounding_box()
    assert box is not None and box["x"] + box["width"] <= width  # the status is on screen
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{overflow}px of horizontal overflow at {width}px"
    # The script runs: the "reload to see the latest" hint is for pages without it.
    expect(page.locator("[data-pj-reload-hint]")).to_be_hidden()
    assert_accessible(page)
    page.goto(UPLOAD)
    assert_accessible(page)


def assert_accessible(page: Any) -> None:
    """axe-core (bundled in axe-playwright-python, no network): no serious or critical issue."""
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:  # a venv from before the `test` extra listed it; CI requires it
        if os.environ.get("PJ_REQUIRE_BROWSER"):
            raise
        pytest.skip("axe-playwright-python is missing: pip install -e '.[test]'")

    results = Axe().run(page)
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in results.response["violations"]
        if v.get("impact") in ("serious", "critical")
    ]
    assert not bad, bad
