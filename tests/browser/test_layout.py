"""The pages at the widths people use them, filled with realistic rows (long file names, UUIDs,
every state): nothing is wider than the window, and the screenshots the docs show are taken from
these checked pages.

``PJ_SAVE_SCREENSHOTS=docs python -m pytest tests/browser/test_layout.py`` refreshes
``docs/screenshot-*.png``; without the variable nothing is written.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone

from promptjuggler_django.models import (
    KnowledgeBase,
    KnowledgeDocument,
    SyncState,
    WebhookDelivery,
)

from .conftest import log_in, save_screenshot
from .test_documents import assert_accessible

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LIST = reverse("promptjuggler_django:document_list")
UPLOAD = reverse("promptjuggler_django:document_upload")
ADMIN_DOCUMENTS = reverse("admin:promptjuggler_django_knowledgedocument_changelist")
ADMIN_DELIVERIES = reverse("admin:promptjuggler_django_webhookdelivery_changelist")
SAMPLES = Path(__file__).resolve().parents[2] / "example_project" / "sample_documents"
#: A name with no place to break a line: the usual cause of a table wider than the screen.
LONG_NAME = "Quarterly-financial-report-2026-Q3-final-revised-v12-approved-by-the-board.pdf"
#: Chosen in the upload form (not yet sent) when the upload page is shown.
CHOSEN = ["onboarding-checklist.html", "expenses-faq.md"]


def assert_fits(page: Any) -> None:
    """Nothing on the page is wider than the window (no sideways scrolling), and the admin's
    results table is not cut off inside its own scrolling box either."""
    width = page.evaluate("window.innerWidth")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{overflow}px of horizontal overflow at {width}px on {page.url}"
    hidden = page.evaluate(
        "[...document.querySelectorAll('#changelist-form .results')]"
        ".map(box => box.scrollWidth - box.clientWidth)"
    )
    assert all(px <= 0 for px in hidden), f"the results table scrolls by {hidden}px on {page.url}"


@pytest.fixture
def documents(django_user_model) -> list[KnowledgeDocument]:
    """Ann's documents in each state a reader meets, newest first, as the demo leaves them."""
    ann = django_user_model.objects.create_user("ann", password="ann-pw")
    handbook = KnowledgeBase.objects.create(
        slug="kb_handbook", name="Handbook", remote_id=uuid.uuid4(), status="ready"
    )
    now = timezone.now()
    rows = [
        # (file name, sync state, remote status, chunks, last error)
        ("benefits-overview.pdf", SyncState.NEEDS_REVIEW, "", None, "The upload timed out"),
        ("employee-handbook.md", SyncState.SYNCED, "ready", 12, ""),
        ("travel-policy.txt", SyncState.SYNCED, "ready", 3, ""),
        (LONG_NAME, SyncState.SYNCED, "sealed", None, ""),
        (
            "office-locations.csv",
            SyncState.RETRYING,
            "",
            None,
            "PromptJuggler answered 503: Service Unavailable",
        ),
    ]
    created = []
    for age, (name, state, status, chunks, error) in enumerate(rows):
        sample = SAMPLES / name
        content = sample.read_bytes() if sample.exists() else b"%PDF-1.7 " + name.encode() * 40
        document = KnowledgeDocument.objects.create(
            knowledge_base=handbook,
            owner=ann,
            file=ContentFile(content, name=name),
            file_name=name,
            file_size=len(content),
            content_type="text/plain",
            sync_state=state,
            remote_id=uuid.uuid4() if state == SyncState.SYNCED else None,
            remote_status=status,
            chunk_count=chunks,
            last_error=error,
            next_attempt_at=now + timedelta(minutes=4) if state == SyncState.RETRYING else None,
        )
        KnowledgeDocument.objects.filter(pk=document.pk).update(
            created_at=now - timedelta(minutes=10 * (len(rows) - age))
        )
        created.append(document)
    return created


@pytest.fixture
def deliveries(documents) -> None:
    """A webhook log with each outcome, full UUIDs and the longest event names."""
    now = timezone.now()
    examples = [
        ("knowledgedocument.finished", "ready", WebhookDelivery.Outcome.APPLIED, 0),
        ("knowledgedocument.finished", "ready", WebhookDelivery.Outcome.DUPLICATE, 2),
        ("knowledgedocument.finished", "failed", WebhookDelivery.Outcome.STALE, 0),
        ("knowledgebase.finished", "ready", WebhookDelivery.Outcome.APPLIED, 0),
        ("knowledgedocument.finished", "ready", WebhookDelivery.Outcome.UNKNOWN_OBJECT, 0),
        ("workflowrun.finished", "completed", WebhookDelivery.Outcome.ERROR, 0),
        ("unknown", "", WebhookDelivery.Outcome.UNRECOGNISED, 0),
    ]
    for i, (event, status, outcome, duplicates) in enumerate(examples):
        object_id = str(documents[i % len(documents)].remote_id or uuid.uuid4())
        WebhookDelivery.objects.create(
            received_at=now - timedelta(minutes=i),
            event_type=event,
            object_id=object_id,
            status=status,
            signature_timestamp=now - timedelta(minutes=i),
            secret_index=i % 2,
            dedupe_key=hashlib.sha256(f"{i}.{object_id}".encode()).hexdigest(),
            body=f'{{"event": "{event}", "data": {{"id": "{object_id}"}}}}',
            outcome=outcome,
            detail="Traceback (most recent call last): " * 5 if outcome == "error" else "",
            duplicate_count=duplicates,
            processed_at=now - timedelta(minutes=i),
        )


@pytest.mark.parametrize("width", [390, 1280])
def test_upload_page_and_list_fit_the_screen(new_page, documents, width):
    from playwright.sync_api import expect

    page = new_page()
    page.set_viewport_size({"width": width, "height": 844 if width < 768 else 800})
    log_in(page, "ann", "ann-pw", UPLOAD)
    # Files chosen but not sent yet: the form lists them under the drop zone.
    page.set_input_files("input[type=file]", [str(SAMPLES / name) for name in CHOSEN])
    expect(page.locator(".pj-file-list li")).to_have_count(len(CHOSEN))
    expect(page.locator("tr[data-pj-document]")).to_have_count(len(documents))
    assert_fits(page)
    assert_accessible(page)
    if width == 1280:
        save_screenshot(page, "screenshot-upload.png", full_page=True)

    page.goto(LIST)
    rows = page.locator("tr[data-pj-document]")
    expect(rows).to_have_count(len(documents))
    expect(rows.locator("[data-pj-badge]")).to_have_text(
        ["Waiting to retry", "Processing", "Ready", "Ready", "Checking"]
    )
    assert_fits(page)
    if width == 390:
        save_screenshot(page, "screenshot-list-phone.png", full_page=True)


@pytest.mark.parametrize("sidebar", ["open", "closed"])
def test_admin_changelists_fit_1280_px(new_page, django_user_model, documents, deliveries, sidebar):
    from playwright.sync_api import expect

    django_user_model.objects.create_superuser("root", "root@example.com", "root-pw")
    page = new_page()
    page.set_viewport_size({"width": 1280, "height": 720})
    log_in(page, "root", "root-pw", ADMIN_DOCUMENTS)
    # Django opens the navigation sidebar by default; closed, it is remembered (localStorage).
    expect(page.locator("#nav-sidebar")).to_be_visible()
    if sidebar == "closed":
        page.click("#toggle-nav-sidebar")
        expect(page.locator("#nav-sidebar")).to_be_hidden()

    expect(page.locator("#result_list tbody tr")).to_have_count(len(documents))
    expect(page.locator("#result_list")).to_contain_text(LONG_NAME)
    assert_fits(page)
    if sidebar == "closed":
        save_screenshot(page, "screenshot-admin.png")

    page.goto(ADMIN_DELIVERIES)
    expect(page.locator("#result_list tbody tr")).to_have_count(7)
    expect(page.get_by_text("2 duplicates")).to_be_visible()
    expect(page.locator("th.column-secret_number")).to_be_in_viewport()  # the last column
    assert_fits(page)
