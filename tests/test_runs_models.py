"""The run mirror (``Run``) and its read-only admin."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse

from promptjuggler_django.models import Run, RunKind, RunSendState

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:promptjuggler_django_run_changelist"


def make_run(**fields) -> Run:
    fields.setdefault("kind", RunKind.PROMPT)
    fields.setdefault("slug", "ask")
    return Run.objects.create(**fields)


def test_a_new_run_is_queued_with_neutral_defaults():
    run = make_run(inputs={"question": "Vacation?"})
    run.refresh_from_db()
    assert run.send_state == RunSendState.QUEUED
    assert (run.version, run.remote_id, run.remote_status, run.attempts) == (
        "__latest__",
        None,
        "",
        0,
    )
    assert (run.output, run.outputs, run.errors, run.emitted, run.transcript) == (
        "",
        {},
        [],
        [],
        [],
    )
    assert (run.token_usage, run.total_tokens, run.cost) == (None, None, None)
    assert run.inputs == {"question": "Vacation?"}
    assert not run.is_finished
    assert str(run) == f"prompt ask@__latest__ #{run.pk}"


def test_a_run_keeps_its_result_usage_and_cost_exactly():
    thread = uuid.uuid4()
    run = make_run(
        kind=RunKind.WORKFLOW,
        version="3",
        thread=thread,
        metadata={"local_run": "1", "tags": ["a", "b"]},
        remote_id=uuid.uuid4(),
        remote_status="completed",
        outputs={"label": "billing", "note": None},
        errors=["node 'check' warned"],
        token_usage={"input": 120, "output": 9, "total": 129},
        total_tokens=129,
        cost=Decimal("0.00160000"),
    )
    run.refresh_from_db()
    assert run.thread == thread and run.is_finished
    assert run.outputs == {"label": "billing", "note": None}
    assert run.metadata["tags"] == ["a", "b"]
    assert run.cost == Decimal("0.0016")


def test_an_unknown_remote_status_is_kept_verbatim_and_not_finished():
    run = make_run(remote_status="cancelled")
    run.refresh_from_db()
    assert run.remote_status == "cancelled" and not run.is_finished


def test_a_remote_run_is_mirrored_once():
    remote = uuid.uuid4()
    make_run(remote_id=remote)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_run(remote_id=remote)
    make_run()  # runs not started yet have no remote id: no conflict
    make_run()


def test_a_deleted_owner_leaves_the_run():
    owner = User.objects.create_user("asker")
    run = make_run(owner=owner)
    owner.delete()
    run.refresh_from_db()
    assert run.owner is None


def test_admin_lists_runs_with_an_output_preview(admin_client: Client):
    make_run(output="You get 25 vacation days. " * 10, remote_status="completed", total_tokens=9)
    make_run(kind=RunKind.WORKFLOW, slug="triage", outputs={"label": "billing"})
    make_run(slug="broken", send_state=RunSendState.FAILED, error="Prompt not found")
    page = admin_client.get(reverse(CHANGELIST))
    assert page.status_code == 200
    html = page.content.decode()
    assert "You get 25 vacation days." in html and "…" in html
    assert "label: billing" in html and "Prompt not found" in html
    assert "?send_state__exact=needs_review" in html  # the send-state filter lists every state
    assert admin_client.get(reverse(CHANGELIST), {"kind__exact": "workflow"}).status_code == 200


def test_admin_is_read_only(admin_client: Client):
    run = make_run(inputs={"question": "q"})
    change = reverse("admin:promptjuggler_django_run_change", args=[run.pk])
    page = admin_client.get(change)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    admin_client.post(change, {"slug": "other", "send_state": "started"})
    run.refresh_from_db()
    assert (run.slug, run.send_state) == ("ask", RunSendState.QUEUED)
    assert admin_client.get(reverse("admin:promptjuggler_django_run_add")).status_code == 403


def _act(client: Client, action: str, runs: list[Run], confirm: bool) -> str:
    data = {"action": action, "_selected_action": [r.pk for r in runs]}
    if confirm:
        data["confirm"] = "yes"
    response = client.post(reverse(CHANGELIST), data, follow=True)
    assert response.status_code == 200
    return response.content.decode()


def test_resending_a_run_in_review_asks_first_and_says_what_it_risks(
    admin_client: Client, django_capture_on_commit_callbacks
):
    review = make_run(send_state=RunSendState.NEEDS_REVIEW, last_error="timed out", attempts=1)
    started = make_run(send_state=RunSendState.STARTED, remote_id=uuid.uuid4())
    page = _act(admin_client, "resend_runs", [review, started], confirm=False)
    assert "second run, and both are billed" in page and "django_run_id" in page
    assert "1 selected run is left alone" in page
    review.refresh_from_db()
    assert review.send_state == RunSendState.NEEDS_REVIEW  # nothing until confirmed
    with django_capture_on_commit_callbacks() as callbacks:
        page = _act(admin_client, "resend_runs", [review, started], confirm=True)
    assert "1 run queued to be sent again." in page
    review.refresh_from_db()
    started.refresh_from_db()
    assert (review.send_state, review.attempts) == (RunSendState.QUEUED, 0)
    assert started.send_state == RunSendState.STARTED
    assert len(callbacks) == 1  # the send is triggered after commit


def test_the_confirmation_page_leads_back_to_the_run_list(admin_client: Client) -> None:
    review = make_run(send_state=RunSendState.NEEDS_REVIEW)
    page = _act(admin_client, "abandon_runs", [review], confirm=False)
    crumbs = page.split('<div class="breadcrumbs">', 1)[1].split("</div>", 1)[0]
    assert f'href="{reverse(CHANGELIST)}"' in crumbs and "Runs" in crumbs
    assert 'href="/admin/promptjuggler_django/"' in crumbs


def test_abandoning_a_run_in_review(admin_client: Client, admin_user):
    review = make_run(send_state=RunSendState.NEEDS_REVIEW)
    page = _act(admin_client, "abandon_runs", [review], confirm=False)
    assert "still runs and is billed" in page
    page = _act(admin_client, "abandon_runs", [review], confirm=True)
    assert "1 run abandoned." in page
    review.refresh_from_db()
    assert review.send_state == RunSendState.FAILED
    assert review.last_error == f"Abandoned: by {admin_user.username} in the admin"


def test_view_only_staff_cannot_resolve_runs(client: Client):
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_run"))
    client.force_login(viewer)
    review = make_run(send_state=RunSendState.NEEDS_REVIEW)
    page = client.get(reverse(CHANGELIST)).content.decode()
    assert "resend_runs" not in page and "abandon_runs" not in page
    client.post(
        reverse(CHANGELIST),
        {"action": "resend_runs", "_selected_action": [review.pk], "confirm": "yes"},
    )
    review.refresh_from_db()
    assert review.send_state == RunSendState.NEEDS_REVIEW
