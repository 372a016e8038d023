"""The delivery log's admin: read-only, filterable, and a Replay action behind a permission."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from promptjuggler_django.models import KnowledgeDocument, WebhookDelivery

from .webhook_support import (
    document_body,
    fixed_clock,  # noqa: F401  (fixture)
    make_document,
    post,
    url,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fixed_clock")]

CHANGELIST = "admin:promptjuggler_django_webhookdelivery_changelist"


def logged(client: Client, payload) -> WebhookDelivery:
    assert post(client, url(), payload).status_code == 200
    return WebhookDelivery.objects.latest("pk")


@pytest.fixture
def viewer() -> Client:
    """A staff user who may look at the log but not replay it."""
    user = User.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_webhookdelivery"))
    client = Client()
    client.force_login(user)
    return client


def test_changelist_lists_and_filters(admin_client: Client) -> None:
    document = make_document("pending")
    applied = logged(admin_client, document_body(document.remote_id, "ready"))
    unknown = logged(admin_client, document_body(uuid.uuid4()))
    page = admin_client.get(reverse(CHANGELIST))
    assert page.status_code == 200
    html = page.content.decode()
    assert applied.object_id in html and unknown.object_id in html
    assert "?outcome__exact=unknown_object" in html  # the outcome filter
    assert "?event_type__exact=knowledgedocument.finished" in html
    filtered = admin_client.get(reverse(CHANGELIST), {"outcome__exact": "unknown_object"})
    assert list(filtered.context["cl"].result_list) == [unknown]
    searched = admin_client.get(reverse(CHANGELIST), {"q": applied.object_id})
    assert list(searched.context["cl"].result_list) == [applied]


def test_changelist_columns_are_short_and_plain(admin_client: Client) -> None:
    """Short ids (the full one in the tooltip) and plain column names keep it within 1280 px."""
    document = make_document("pending")
    applied = logged(admin_client, document_body(document.remote_id, "ready"))
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert f'<code title="{applied.object_id}">{applied.object_id[:8]}</code>' in html
    assert f">{applied.object_id}<" not in html  # no four-line UUID in a cell
    assert "Secret #" in html and "Secret index" not in html
    # The widest event name may break after its dot.
    assert "knowledgedocument.<wbr>finished" in html


def test_repeats_are_told_with_the_outcome(admin_client: Client) -> None:
    """Duplicates and replays are a note under the outcome, not two columns of zeros."""
    document = make_document("pending")
    applied = logged(admin_client, document_body(document.remote_id, "ready"))
    logged(admin_client, document_body(uuid.uuid4()))  # seen once
    WebhookDelivery.objects.filter(pk=applied.pk).update(duplicate_count=2, replay_count=1)
    page = admin_client.get(reverse(CHANGELIST))
    html = page.content.decode()
    assert "column-duplicate_count" not in html and "column-replay_count" not in html
    assert '<small class="pj-repeats">2 duplicates, 1 replay</small>' in html
    assert html.count('class="pj-repeats"') == 1  # nothing under a delivery seen once


def test_nothing_can_be_added_or_edited(admin_client: Client) -> None:
    delivery = logged(admin_client, document_body(uuid.uuid4()))
    add = reverse("admin:promptjuggler_django_webhookdelivery_add")
    assert admin_client.get(add).status_code == 403
    change = reverse("admin:promptjuggler_django_webhookdelivery_change", args=[delivery.pk])
    page = admin_client.get(change)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    admin_client.post(change, {"outcome": "applied", "status": "failed"})
    delivery.refresh_from_db()
    assert (delivery.outcome, delivery.status) == ("unknown_object", "ready")


def test_detail_shows_the_body_even_when_it_is_hostile(admin_client: Client) -> None:
    delivery = logged(admin_client, b"[" * 3000 + b"<script>")
    change = reverse("admin:promptjuggler_django_webhookdelivery_change", args=[delivery.pk])
    page = admin_client.get(change)
    assert page.status_code == 200
    assert "&lt;script&gt;" in page.content.decode()


def test_replay_action(admin_client: Client) -> None:
    remote_id = uuid.uuid4()
    early = logged(admin_client, document_body(remote_id, "ready", 8))  # before the id was known
    document = make_document("")
    KnowledgeDocument.objects.filter(pk=document.pk).update(remote_id=remote_id)
    response = admin_client.post(
        reverse(CHANGELIST), {"action": "replay", "_selected_action": [early.pk]}, follow=True
    )
    assert "Replayed 1 delivery: 1 applied." in response.content.decode()
    early.refresh_from_db()
    assert (early.outcome, early.replay_count) == ("applied", 1)
    document.refresh_from_db()
    assert (document.remote_status, document.chunk_count) == ("ready", 8)


def test_replay_needs_the_change_permission(viewer: Client) -> None:
    delivery = logged(viewer, document_body(uuid.uuid4()))
    page = viewer.get(reverse(CHANGELIST))
    assert page.status_code == 200
    assert 'value="replay"' not in page.content.decode()
    viewer.post(reverse(CHANGELIST), {"action": "replay", "_selected_action": [delivery.pk]})
    delivery.refresh_from_db()
    assert delivery.replay_count == 0
