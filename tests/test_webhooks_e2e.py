"""End to end: the emulator's real signed webhooks, over loopback HTTP, drive documents to ready.

The documents are created locally as if already pushed (remote ids set, receivers suppressed),
so only the webhook path moves them: emulator → HTTP → the full Django stack → the database.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, SyncState, WebhookDelivery
from promptjuggler_django.sync import suppress_sync

pytestmark = pytest.mark.django_db(transaction=True)

SLUG = "kb_test"  # tests.settings' DEFAULT_KNOWLEDGE_BASE: the fixture creates it remotely


def mirror(fake, count: int) -> list[KnowledgeDocument]:
    """Documents known to PromptJuggler and mirrored locally, still pending."""
    remote_kb = fake.knowledge_base(SLUG)
    with suppress_sync():
        kb = KnowledgeBase.objects.create(slug=SLUG, remote_id=remote_kb.id)
        documents = []
        for i in range(count):
            remote = fake.add_document(SLUG, f"note-{i}.txt", b"x" * (1500 * (i + 1)))
            documents.append(
                KnowledgeDocument.objects.create(
                    knowledge_base=kb,
                    file=f"notes/note-{i}.txt",
                    file_name=remote.file_name,
                    remote_id=remote.id,
                    remote_status=remote.status,
                    sync_state=SyncState.SYNCED,
                )
            )
    return documents


def assert_mirrors_the_emulator(fake, documents: list[KnowledgeDocument]) -> None:
    for document in documents:
        document.refresh_from_db()
        remote = fake.document(document.remote_id)
        assert (document.remote_status, document.chunk_count) == (
            remote.status,
            remote.chunk_count,
        )
    remote_kb = fake.knowledge_base(SLUG)
    kb = KnowledgeBase.objects.get(slug=SLUG)
    assert (kb.status, kb.document_count, kb.chunk_count) == (
        remote_kb.status,
        remote_kb.document_count,
        remote_kb.chunk_count,
    )


def test_emulator_webhooks_drive_documents_to_ready(fake_promptjuggler, live_server) -> None:
    fake = fake_promptjuggler
    fake.set_webhook(live_server.url + reverse("promptjuggler_django:webhook"))
    documents = mirror(fake, 3)
    fake.fail_files("note-2.txt")

    fake.finish()

    deliveries = fake.wait_for_webhooks(4)
    assert [d.status_code for d in deliveries] == [200] * 4
    assert_mirrors_the_emulator(fake, documents)
    assert [d.remote_status for d in documents] == ["ready", "ready", "failed"]
    assert documents[0].chunk_count > 0
    assert set(WebhookDelivery.objects.values_list("outcome", flat=True)) == {"applied"}
    assert KnowledgeBase.objects.get().status == "ready"


def test_duplicated_reordered_late_webhooks_end_in_the_same_state(
    fake_promptjuggler, live_server
) -> None:
    fake = fake_promptjuggler
    fake.set_webhook(live_server.url + reverse("promptjuggler_django:webhook"))
    # No delay: delayed deliveries run on threads of their own, and the live server shares
    # one in-memory SQLite connection between its threads (concurrency: test_webhooks_concurrent).
    fake.set_webhook_fault(duplicate=2, reorder=True, seed=3)
    documents = mirror(fake, 4)

    fake.finish()

    deliveries = fake.webhook_deliveries
    assert len(deliveries) == 5 * 3
    assert {d.status_code for d in deliveries} == {200}
    assert_mirrors_the_emulator(fake, documents)
    # Every delivery is accounted for: a row, or a duplicate of one. (The emulator signs each
    # copy as it sends it, so a copy sent a second later has a new t: a row of its own.)
    rows = WebhookDelivery.objects.values_list("duplicate_count", "outcome")
    assert sum(1 + duplicates for duplicates, _ in rows) == 15
    assert {outcome for _, outcome in rows} <= {"applied", "stale"}

    # A stale event replayed by PromptJuggler later (signed afresh) changes nothing.
    fake.clear_faults()
    fake.finish(documents[0].remote_id, status="pending", chunk_count=0)
    (late,) = fake.wait_for_webhooks(16)[15:]
    assert late.status_code == 200
    assert WebhookDelivery.objects.get(body=late.body.decode()).outcome == "stale"
    documents[0].refresh_from_db()
    assert documents[0].remote_status == "ready"


def test_a_wrong_secret_in_the_emulator_is_refused(fake_promptjuggler, live_server) -> None:
    fake = fake_promptjuggler
    fake.set_webhook(
        live_server.url + reverse("promptjuggler_django:webhook"), secret="whsec_not_ours"
    )
    documents = mirror(fake, 1)
    fake.finish()
    assert [d.status_code for d in fake.wait_for_webhooks(2)] == [400, 400]
    documents[0].refresh_from_db()
    assert documents[0].remote_status == "pending"
    assert not WebhookDelivery.objects.exists()
