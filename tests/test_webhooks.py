"""Webhook behaviour: telling events apart, applying them forward-only, the log, deduplication,
errors and retries, deferred processing, replay and the query budget."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, OperationalError, connection
from django.db.models import signals as models_signals
from django.test import Client
from django.test.utils import CaptureQueriesContext

from promptjuggler_django import signals, status, webhooks
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, WebhookDelivery
from promptjuggler_django.webhooks import WebhookView

from .webhook_support import (
    NOW,
    Received,
    at,
    document_body,
    fixed_clock,  # noqa: F401  (fixture)
    knowledge_base_body,
    make_document,
    make_knowledge_base,
    post,
    run_body,
    url,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fixed_clock")]


@pytest.fixture
def received():
    listeners: list[Received] = []

    def listen(signal) -> Received:
        listener = Received(signal)
        listeners.append(listener)
        return listener

    yield listen
    for listener in listeners:
        listener.close()


def deliver(client: Client, payload, *, name: str = "webhook", timestamp: int = NOW, **kw):
    response = post(client, url(name), payload, timestamp=timestamp, **kw)
    assert response.status_code == 200, response.content
    return response.json()["outcome"]


# Telling events apart ---------------------------------------------------------------------------


def test_document_event_moves_the_document_forward(
    client, received, django_capture_on_commit_callbacks
) -> None:
    document = make_document("pending")
    changes = received(signals.document_status_changed)
    with django_capture_on_commit_callbacks(execute=True):
        outcome = deliver(client, document_body(document.remote_id, "ready", 12))
    assert outcome == "applied"
    document.refresh_from_db()
    assert (document.remote_status, document.chunk_count) == ("ready", 12)
    assert document.status_changed_at == at(NOW)
    delivery = WebhookDelivery.objects.get()
    assert delivery.event_type == "knowledgedocument.finished"
    assert (delivery.object_id, delivery.status) == (str(document.remote_id), "ready")
    assert delivery.processed_at is not None
    (call,) = changes.calls
    assert call["sender"] is KnowledgeDocument
    assert call["document"].pk == document.pk
    assert call["document"].file_name == document.file_name  # a complete row
    assert (call["old_status"], call["new_status"]) == ("pending", "ready")
    assert call["delivery"].pk == delivery.pk


def test_knowledge_base_event_updates_status_and_counts(
    client, received, django_capture_on_commit_callbacks
) -> None:
    kb = make_knowledge_base(remote_id=uuid.uuid4())
    changes = received(signals.knowledge_base_status_changed)
    with django_capture_on_commit_callbacks(execute=True):
        outcome = deliver(client, knowledge_base_body(kb.remote_id, "ready", 4, 40))
    assert outcome == "applied"
    kb.refresh_from_db()
    assert (kb.status, kb.document_count, kb.chunk_count) == ("ready", 4, 40)
    assert WebhookDelivery.objects.get().event_type == "knowledgebase.finished"
    (call,) = changes.calls
    assert (call["knowledge_base"].pk, call["old_status"], call["new_status"]) == (
        kb.pk,
        "",
        "ready",
    )


@pytest.mark.parametrize(
    ("name", "event_type"),
    [
        ("webhook", "run.finished"),
        ("webhook-prompt-run", "promptrun.finished"),
        ("webhook-workflow-run", "workflowrun.finished"),
    ],
)
def test_run_events_are_signalled_after_commit(
    client, received, django_capture_on_commit_callbacks, name, event_type
) -> None:
    runs = received(signals.run_finished)
    run_id = str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert deliver(client, run_body(run_id, "failed"), name=name) == "applied"
    assert runs.calls == []  # not before commit
    for callback in callbacks:
        callback()
    (call,) = runs.calls
    delivery = WebhookDelivery.objects.get()
    assert call == {
        "sender": None,
        "signal": signals.run_finished,
        "event_type": event_type,
        "run_id": run_id,
        "status": "failed",
        "delivery": delivery,
    }
    assert delivery.event_type == event_type


def test_run_urls_accept_extra_fields_the_shared_url_does_not(client) -> None:
    body = {**run_body(), "createdAt": "2026-01-01T00:00:00Z"}
    assert deliver(client, body, name="webhook-prompt-run") == "applied"
    assert deliver(client, body, name="webhook", timestamp=NOW + 1) == "unrecognised"


def test_the_same_delivery_on_two_urls_is_a_duplicate(client) -> None:
    """Users who configure both the shared URL and a per-event URL get each event once."""
    body = run_body()
    assert deliver(client, body, name="webhook-prompt-run") == "applied"
    assert deliver(client, body, name="webhook") == "duplicate"


def test_document_events_tolerate_new_fields_and_null_counts(client) -> None:
    document = make_document("pending")
    KnowledgeDocument.objects.filter(pk=document.pk).update(chunk_count=5)
    body = {**document_body(document.remote_id, "failed", None), "reason": "new field"}
    assert deliver(client, body) == "applied"
    document.refresh_from_db()
    # A new status without a count leaves the count unknown (5 was the pending count).
    assert (document.remote_status, document.chunk_count) == ("failed", None)


@pytest.mark.parametrize(
    ("name", "payload", "detail"),
    [
        ("webhook-document", knowledge_base_body(uuid.uuid4()), "knowledge base body on the"),
        ("webhook-knowledge-base", document_body(uuid.uuid4()), "document body on the"),
        ("webhook-prompt-run", document_body(uuid.uuid4()), "document body on the"),
        ("webhook-workflow-run", {"id": "r1"}, "unknown body on the"),
        ("webhook-document", {"id": "not-a-uuid", "status": "ready", "chunkCount": 1}, "id is"),
    ],
)
def test_wrong_shape_on_a_per_event_url_is_logged_invalid(client, name, payload, detail) -> None:
    assert deliver(client, payload, name=name) == "invalid"
    delivery = WebhookDelivery.objects.get()
    assert delivery.detail.startswith(detail)
    assert delivery.processed_at is not None


def test_a_per_event_view_must_name_a_known_event() -> None:
    with pytest.raises(ImproperlyConfigured, match="event_type"):
        WebhookView.as_view(event_type="knowledgedocument.done")


def test_unknown_status_strings_are_stored(client) -> None:
    document = make_document("pending")
    assert deliver(client, document_body(document.remote_id, "embedding", 1)) == "applied"
    document.refresh_from_db()
    assert document.remote_status == "embedding"


# Forward-only -----------------------------------------------------------------------------------


def test_unknown_object_is_logged(client) -> None:
    assert deliver(client, document_body(uuid.uuid4())) == "unknown_object"
    assert deliver(client, knowledge_base_body(uuid.uuid4())) == "unknown_object"
    assert WebhookDelivery.objects.filter(outcome="unknown_object").count() == 2


def test_a_lower_status_never_undoes_a_higher_one(client) -> None:
    document = make_document("pending")
    assert deliver(client, document_body(document.remote_id, "ready", 7), timestamp=NOW - 5) == (
        "applied"
    )
    assert deliver(client, document_body(document.remote_id, "sealed", 0)) == "stale"
    assert deliver(client, document_body(document.remote_id, "failed", 0)) == "stale"
    document.refresh_from_db()
    assert (document.remote_status, document.chunk_count) == ("ready", 7)
    assert document.status_changed_at == at(NOW - 5)


def test_a_newer_but_lower_status_is_stale(client) -> None:
    """A redelivery signed afresh carries a newer ``t``: the rank still wins."""
    document = make_document("pending")
    assert deliver(client, document_body(document.remote_id, "sealed", 4), timestamp=NOW - 5) == (
        "applied"
    )
    assert deliver(client, document_body(document.remote_id, "pending", 0)) == "stale"
    document.refresh_from_db()
    assert (document.remote_status, document.chunk_count) == ("sealed", 4)


def test_an_older_observation_never_overwrites_a_newer_one(client) -> None:
    document = make_document("pending")
    assert deliver(client, document_body(document.remote_id, "sealed", 9)) == "applied"
    assert deliver(client, document_body(document.remote_id, "sealed", 2), timestamp=NOW - 1) == (
        "stale"
    )
    assert deliver(client, document_body(document.remote_id, "sealed", 11), timestamp=NOW + 1) == (
        "applied"
    )
    document.refresh_from_db()
    assert document.chunk_count == 11


def test_events_for_a_replaced_remote_id_are_ignored(client) -> None:
    document = make_document("ready")
    old_remote_id = document.remote_id
    KnowledgeDocument.objects.filter(pk=document.pk).update(
        remote_id=uuid.uuid4(), remote_status="pending", status_changed_at=None
    )
    assert deliver(client, document_body(old_remote_id, "failed", 0)) == "unknown_object"
    document.refresh_from_db()
    assert document.remote_status == "pending"


def test_knowledge_base_events_are_ordered_by_time_only(client) -> None:
    kb = make_knowledge_base(remote_id=uuid.uuid4())
    assert deliver(client, knowledge_base_body(kb.remote_id, "ready", 2, 20)) == "applied"
    assert deliver(
        client, knowledge_base_body(kb.remote_id, "pending", 1, 5), timestamp=NOW - 1
    ) == ("stale")
    # A new upload makes a ready knowledge base pending again: newer, so it applies.
    assert deliver(
        client, knowledge_base_body(kb.remote_id, "pending", 3, 20), timestamp=NOW + 1
    ) == ("applied")
    kb.refresh_from_db()
    assert (kb.status, kb.document_count) == ("pending", 3)


# Deduplication, errors, retries -----------------------------------------------------------------


def test_a_duplicate_changes_nothing(client, received, django_capture_on_commit_callbacks) -> None:
    document = make_document("pending")
    changes = received(signals.document_status_changed)
    body = document_body(document.remote_id, "ready", 3)
    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(client, body) == "applied"
        assert deliver(client, body) == "duplicate"
        assert deliver(client, body, secret="whsec_test_secondary") == "duplicate"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.outcome, delivery.duplicate_count) == ("applied", 2)
    assert len(changes.calls) == 1


def test_a_duplicate_run_is_signalled_once(client, received, django_capture_on_commit_callbacks):
    runs = received(signals.run_finished)
    body = run_body()
    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(client, body) == "applied"
        assert deliver(client, body) == "duplicate"
    assert len(runs.calls) == 1


def test_same_body_at_another_time_is_another_delivery(client) -> None:
    body = run_body()
    assert deliver(client, body) == "applied"
    assert deliver(client, body, timestamp=NOW + 1) == "applied"
    assert WebhookDelivery.objects.count() == 2


def test_a_failed_effect_is_logged_apart_and_its_retry_applied(
    client, monkeypatch, received, django_capture_on_commit_callbacks
) -> None:
    document = make_document("pending")
    changes = received(signals.document_status_changed)
    real = status.apply_document_status

    def failing(**kwargs):
        real(**kwargs)  # the update happens, then the transaction fails
        raise OperationalError("database is locked")

    monkeypatch.setattr(status, "apply_document_status", failing)
    body = document_body(document.remote_id, "ready", 3)
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, url(), body)
    assert response.status_code == 500
    assert response.json() == {"outcome": "error"}
    document.refresh_from_db()
    assert document.remote_status == "pending"  # rolled back
    delivery = WebhookDelivery.objects.get()
    assert delivery.outcome == "error"
    assert delivery.detail == "OperationalError: database is locked"
    assert changes.calls == []

    monkeypatch.setattr(status, "apply_document_status", real)
    with django_capture_on_commit_callbacks(execute=True):
        assert deliver(client, body) == "applied"  # the retry is applied, not deduplicated
        assert deliver(client, body) == "duplicate"
    document.refresh_from_db()
    assert document.remote_status == "ready"
    delivery.refresh_from_db()
    assert (delivery.outcome, delivery.duplicate_count, delivery.detail) == ("applied", 2, "")
    assert len(changes.calls) == 1
    assert changes.calls[0]["delivery"].pk == delivery.pk


def test_an_integrity_error_from_the_effect_is_an_error_not_a_duplicate(client, monkeypatch):
    document = make_document("pending")

    def failing(**kwargs):
        raise IntegrityError("CHECK constraint failed: chunk_count")

    with monkeypatch.context() as patched:  # both ways: the transaction and, on PostgreSQL,
        patched.setattr(status, "apply_document_status", failing)  # the one statement
        patched.setattr(status, "document_status_as_sql", failing)
        body = document_body(document.remote_id, "ready", 3)
        assert post(client, url(), body).status_code == 500
    delivery = WebhookDelivery.objects.get()
    assert delivery.outcome == "error"
    assert delivery.detail.startswith("IntegrityError: CHECK constraint failed")
    assert deliver(client, body) == "applied"


def test_a_taken_key_rolls_back_an_effect_that_would_apply(client) -> None:
    """The effect and the log row are written together or not at all: a redelivery whose
    key is taken leaves the document as it finds it, even where its effect would apply."""
    document = make_document("pending")
    body = document_body(document.remote_id, "ready", 3)
    assert deliver(client, body) == "applied"
    KnowledgeDocument.objects.filter(pk=document.pk).update(
        remote_status="pending", chunk_count=None, status_changed_at=None
    )
    assert deliver(client, body) == "duplicate"
    document.refresh_from_db()
    assert (document.remote_status, document.chunk_count, document.status_changed_at) == (
        "pending",
        None,
        None,
    )


def test_receivers_of_the_delivery_log_see_each_row_saved(client) -> None:
    """The log row is saved as a model (its signals sent) while anything listens to them."""
    document = make_document("pending")
    saved = []

    def receiver(sender, instance, created, **kwargs):
        saved.append((instance.pk, instance.outcome, created))

    models_signals.post_save.connect(receiver, sender=WebhookDelivery)
    try:
        assert deliver(client, document_body(document.remote_id, "ready", 3)) == "applied"
    finally:
        models_signals.post_save.disconnect(receiver, sender=WebhookDelivery)
    delivery = WebhookDelivery.objects.get()
    assert saved == [(delivery.pk, "applied", True)]


def test_a_failing_signal_receiver_does_not_fail_the_delivery(
    client, django_capture_on_commit_callbacks, caplog
) -> None:
    document = make_document("pending")

    def broken(**kwargs):
        raise RuntimeError("receiver bug")

    signals.document_status_changed.connect(broken, dispatch_uid="broken")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert deliver(client, document_body(document.remote_id)) == "applied"
    finally:
        signals.document_status_changed.disconnect(dispatch_uid="broken")
    assert "receiver bug" in caplog.text


# The log ----------------------------------------------------------------------------------------


def test_the_logged_body_is_capped(client, settings) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_LOG_BODY_BYTES": 9}
    assert deliver(client, '{"id": "é"}'.encode()) == "unrecognised"
    delivery = WebhookDelivery.objects.get()
    # 9 bytes end inside "é" (2 bytes): the split character is dropped, not mangled.
    assert (delivery.body, delivery.body_truncated) == ('{"id": "', True)


def test_log_copy_replaces_what_a_database_cannot_hold() -> None:
    assert webhooks.log_copy(b"a\x00b\xffc", 100) == ("a\ufffdb\ufffdc", False)
    assert webhooks.log_copy(b"abc", 0) == ("", True)


# Deferred processing ----------------------------------------------------------------------------


@pytest.fixture
def deferred(settings):
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_PROCESSING": "deferred"}


@pytest.mark.usefixtures("deferred")
def test_deferred_mode_answers_then_applies_in_a_task(
    client, django_capture_on_commit_callbacks
) -> None:
    document = make_document("pending")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert deliver(client, document_body(document.remote_id, "ready", 4)) == "received"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.outcome, delivery.processed_at) == ("received", None)
    document.refresh_from_db()
    assert document.remote_status == "pending"
    with django_capture_on_commit_callbacks(execute=True):
        for callback in callbacks:  # enqueue → the Immediate backend runs the task now
            callback()
    document.refresh_from_db()
    delivery.refresh_from_db()
    assert (document.remote_status, document.chunk_count) == ("ready", 4)
    assert delivery.outcome == "applied"


@pytest.mark.usefixtures("deferred")
def test_deferred_processing_is_idempotent(
    client, received, django_capture_on_commit_callbacks
) -> None:
    document = make_document("pending")
    changes = received(signals.document_status_changed)
    with django_capture_on_commit_callbacks(execute=False):
        deliver(client, document_body(document.remote_id, "ready", 4))
        assert deliver(client, document_body(document.remote_id, "ready", 4)) == "duplicate"
    delivery = WebhookDelivery.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        assert webhooks.process_delivery(delivery.pk) == "applied"
        assert webhooks.process_delivery(delivery.pk) == "applied"
        assert webhooks.process_pending_deliveries() == 0
    assert len(changes.calls) == 1
    assert webhooks.process_delivery(delivery.pk + 1000) is None


@pytest.mark.usefixtures("deferred")
def test_deferred_mode_keeps_the_whole_body_and_lost_tasks_are_caught_up(client, settings):
    settings.PROMPTJUGGLER["WEBHOOK_LOG_BODY_BYTES"] = 0
    document = make_document("pending")
    deliver(client, document_body(document.remote_id, "ready", 4))
    delivery = WebhookDelivery.objects.get()
    assert not delivery.body_truncated
    assert webhooks.process_pending_deliveries() == 1
    document.refresh_from_db()
    assert document.chunk_count == 4


@pytest.mark.usefixtures("deferred")
def test_deferred_mode_logs_bad_bodies_at_once(client) -> None:
    assert deliver(client, b"nonsense") == "invalid"
    assert webhooks.process_pending_deliveries() == 0


# Replay -----------------------------------------------------------------------------------------


def test_replay_reapplies_through_the_same_rules(client) -> None:
    document = make_document("pending")
    deliver(client, document_body(document.remote_id, "ready", 3))
    delivery = WebhookDelivery.objects.get()
    assert webhooks.replay_delivery(delivery.pk) == "stale"
    delivery.refresh_from_db()
    assert (delivery.outcome, delivery.replay_count) == ("stale", 1)

    # The row was reset (say, by hand): the replay moves it forward again.
    KnowledgeDocument.objects.filter(pk=document.pk).update(
        remote_status="pending", chunk_count=None, status_changed_at=None
    )
    assert webhooks.replay_delivery(delivery.pk) == "applied"
    document.refresh_from_db()
    delivery.refresh_from_db()
    assert (document.remote_status, document.chunk_count) == ("ready", 3)
    assert (delivery.outcome, delivery.replay_count) == ("applied", 2)
    assert webhooks.replay_delivery(delivery.pk + 1000) is None


def test_replay_of_an_unknown_object_after_the_upload_response_arrived(client) -> None:
    """A webhook can beat the upload response; once the remote id is stored, replay applies it."""
    remote_id = uuid.uuid4()
    assert deliver(client, document_body(remote_id, "ready", 5)) == "unknown_object"
    document = make_document("")
    KnowledgeDocument.objects.filter(pk=document.pk).update(remote_id=remote_id)
    delivery = WebhookDelivery.objects.get()
    assert webhooks.replay_delivery(delivery.pk) == "applied"
    document.refresh_from_db()
    assert (document.remote_status, document.chunk_count) == ("ready", 5)


def test_replay_of_a_truncated_body_uses_the_logged_columns(client, settings) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_LOG_BODY_BYTES": 8}
    document = make_document("pending")
    deliver(client, document_body(document.remote_id, "sealed", 3))
    KnowledgeDocument.objects.filter(pk=document.pk).update(
        remote_status="pending", status_changed_at=None, chunk_count=1
    )
    delivery = WebhookDelivery.objects.get()
    assert delivery.body_truncated
    assert webhooks.replay_delivery(delivery.pk) == "applied"
    document.refresh_from_db()
    assert (document.remote_status, document.chunk_count) == ("sealed", None)  # count unknown


def test_replay_of_an_invalid_body_stays_invalid(client) -> None:
    deliver(client, b"{oops", name="webhook-document")
    delivery = WebhookDelivery.objects.get()
    assert webhooks.replay_delivery(delivery.pk) == "invalid"
    delivery.refresh_from_db()
    assert (delivery.replay_count, delivery.detail) == (1, "body is not JSON")


def test_replay_records_a_failure(client, monkeypatch) -> None:
    document = make_document("pending")
    deliver(client, document_body(document.remote_id, "ready", 3))

    def failing(**kwargs):
        raise OperationalError("gone")

    monkeypatch.setattr(status, "apply_document_status", failing)
    delivery = WebhookDelivery.objects.get()
    assert webhooks.replay_delivery(delivery.pk) == "error"
    delivery.refresh_from_db()
    assert (delivery.outcome, delivery.replay_count) == ("error", 1)
    assert delivery.detail == "OperationalError: gone"


# Query budget -----------------------------------------------------------------------------------

TRANSACTION_CONTROL = ("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT")


def counted(queries) -> list[str]:
    return [q["sql"] for q in queries if not q["sql"].upper().startswith(TRANSACTION_CONTROL)]


@pytest.mark.parametrize("kind", ["document", "knowledge_base", "run"])
def test_an_applied_delivery_costs_at_most_four_queries(client, kind) -> None:
    kb = make_knowledge_base(remote_id=uuid.uuid4())
    document = make_document("pending")
    payload = {
        "document": document_body(document.remote_id, "ready", 2),
        "knowledge_base": knowledge_base_body(kb.remote_id),
        "run": run_body(),
    }[kind]
    with CaptureQueriesContext(connection) as queries:
        assert deliver(client, payload) == "applied"
    assert len(counted(queries.captured_queries)) <= 4, counted(queries.captured_queries)


def test_a_duplicate_and_a_refusal_are_cheap(client) -> None:
    document = make_document("pending")
    payload = document_body(document.remote_id, "ready", 2)
    deliver(client, payload)
    with CaptureQueriesContext(connection) as queries:
        assert deliver(client, payload) == "duplicate"
    assert len(counted(queries.captured_queries)) <= 4
    with CaptureQueriesContext(connection) as queries:
        assert post(client, url(), payload, secret="whsec_nope").status_code == 400
    assert counted(queries.captured_queries) == []


def test_observed_time_comes_from_the_signature(client) -> None:
    document = make_document("pending")
    deliver(client, document_body(document.remote_id, "sealed", 1), timestamp=NOW - 200)
    document.refresh_from_db()
    assert document.status_changed_at == at(NOW) - timedelta(seconds=200)
    assert KnowledgeBase.objects.count() == 1
