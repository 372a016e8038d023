"""Pushing many documents fast: oversized batches, robust after-commit hooks, few writes."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from promptjuggler_django import sync
from promptjuggler_django.models import KnowledgeDocument, SyncState
from tests.sync_support import *  # noqa: F403  (fixtures: pj, kb, …)
from tests.sync_support import make_doc, remote_state

pytestmark = pytest.mark.django_db


def test_a_413_batch_is_halved_until_it_fits(pj: Any, kb: Any, settings: Any) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BATCH_MAX_FILES": 16}
    for i in range(24):
        make_doc(kb, f"part-{i:02}.txt", b"x" * 1000)
    pj.max_request_bytes = 5500  # four files and their part headers fit, eight do not
    report = sync.push_due()
    # 16 → 413, 8 → 413, 4 + 4, 8 → 413, 4 + 4; then the last 8 are claimed four at a time.
    assert (report.synced, report.failed, report.requests, report.batches) == (24, 0, 9, 3)
    uploads = [r for r in pj.requests if r.endpoint == "upload"]
    # A 413 is answered unread (no file names recorded), so tell the sizes by Content-Length.
    assert [r.status_code for r in uploads] == [413, 413, 200, 200, 413, 200, 200, 200, 200]
    lengths = [int(r.headers["content-length"]) for r in uploads]
    assert lengths[0] > lengths[1] > 5500 >= max(lengths[2:4] + lengths[5:])
    assert [len(r.file_names) for r in uploads if r.status_code == 200] == [4] * 6
    assert {d.sync_state for d in KnowledgeDocument.objects.all()} == {SyncState.SYNCED}
    assert set(remote_state(pj)) == {f"part-{i:02}.txt" for i in range(24)}


def test_a_single_file_too_large_fails_and_the_rest_of_its_batch_goes(pj: Any, kb: Any) -> None:
    small = [make_doc(kb, f"s{i}.txt", b"y" * 100) for i in range(3)]
    big = make_doc(kb, "big.txt", b"z" * 6000)
    pj.max_request_bytes = 5000
    report = sync.push_due()
    assert (report.synced, report.failed) == (3, 1)
    big.refresh_from_db()
    assert big.sync_state == SyncState.FAILED and "too large" in big.last_error.lower()
    assert set(remote_state(pj)) == {d.file_name for d in small}


@pytest.mark.parametrize("stored", ["listed", "all"])
def test_files_missing_from_the_answer_are_adopted_or_sent_again_in_batches_that_fit(
    pj: Any, kb: Any, settings: Any, monkeypatch: Any, stored: str
) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BATCH_MAX_FILES": 10}
    docs = [make_doc(kb, f"n{i:02}.txt", f"note {i}".encode()) for i in range(14)]
    store_upload = pj._store_upload

    def answer_first_four(kb_id: Any, files: list[Any]) -> Any:
        if stored == "listed":  # like PHP past max_file_uploads: dropped, no error
            return store_upload(kb_id, files[:4])
        return store_upload(kb_id, files)[:4]  # created, but the answer is cut short

    monkeypatch.setattr(pj, "_store_upload", answer_first_four)
    report = sync.push_due()
    uploads = [len(r.file_names) for r in pj.requests if r.endpoint == "upload"]
    # 10 sent, 4 listed: the 6 others are queued again; the claims read on (the last 4 go
    # first, four at a time), then from the start: one fresh listing of the knowledge base
    # adopts the 6 that were created, or they are sent again, four at a time.
    if stored == "listed":
        assert (report.synced, report.adopted) == (14, 0) and uploads == [10, 4, 4, 2]
    else:
        assert (report.synced, report.adopted) == (14, 6) and uploads == [10, 4]
    assert (report.requeued, report.needs_review) == (6, 0)
    assert pj.request_count("get_knowledge_base") == 1
    assert {d.sync_state for d in KnowledgeDocument.objects.all()} == {SyncState.SYNCED}
    assert set(remote_state(pj)) == {d.file_name for d in docs}  # no duplicate either way


def test_a_batch_refused_for_its_file_count_is_sent_smaller_after_isolation(
    pj: Any, kb: Any, settings: Any
) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BATCH_MAX_FILES": 8}
    for i in range(16):
        make_doc(kb, f"c{i:02}.txt")
    pj.max_files_per_request = 4  # answered with 422, like a bad file would be
    report = sync.push_due()
    # 8 → 422, then each alone: no file was at fault, so the next batches take 4.
    assert (report.synced, report.failed) == (16, 0)
    uploads = [len(r.file_names) for r in pj.requests if r.endpoint == "upload"]
    assert uploads == [8] + [1] * 8 + [4, 4]


# -- hooks that run after commit -------------------------------------------------------------
# Django logs a failing robust on_commit hook by its __qualname__; a functools.partial has
# none, so the logging itself used to raise AttributeError once the work was committed.


def _failing(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("the broker is down")


def _assert_logged(caplog: Any, name: str) -> None:
    messages = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(name in m and "the broker is down" in m for m in messages), messages


def test_a_batch_of_mixed_outcomes_stores_each_row_its_own_values(pj: Any, kb: Any) -> None:
    """The store writes what the batch shares once and the rest per row: remote ids, sizes
    and types that differ, and a failed row's empty remote id beside the synced rows' ids.
    On PostgreSQL it is one statement (``UPDATE … FROM unnest(…)``), not one per row."""
    docs = [
        make_doc(kb, f"mixed-{i}.{ext}", b"m" * (10 + i))
        for i, ext in enumerate(["txt", "md", "txt", "csv", "txt"])
    ]
    KnowledgeDocument.objects.update(file_size=None, content_type="")  # the push fills them in
    gone = docs[2]
    gone.file.storage.delete(gone.file.name)
    with CaptureQueriesContext(connection) as queries:
        report = sync.push_due()
    assert (report.synced, report.failed, report.requests) == (4, 1, 1)
    remote = {d.file_name: d for d in pj.documents("kb_test")}
    for i, doc in enumerate(docs):
        row = KnowledgeDocument.objects.get(pk=doc.pk)
        if doc == gone:
            assert row.sync_state == SyncState.FAILED and "missing" in row.last_error
            assert (row.remote_id, row.remote_status, row.pushed_at) == (None, "", None)
            continue
        sent = remote[row.file_name]
        assert (row.sync_state, row.remote_id, row.remote_status, row.last_error) == (
            SyncState.SYNCED,
            sent.id,
            sent.status,
            "",
        )
        assert (row.file_size, row.content_type) == (10 + i, sent.mime_type)
        assert row.pushed_at is not None and row.next_attempt_at is None
    stored = [q["sql"] for q in queries if "UPDATE" in q["sql"] and "unnest(" in q["sql"]]
    per_row = [q["sql"] for q in queries if " times: UPDATE " in q["sql"]]
    if connection.vendor == "postgresql":
        assert (len(stored), per_row) == (1, [])
    else:
        assert (stored, len(per_row)) == ([], 1)


def test_a_failing_hook_after_storing_uploads_is_logged(
    pj: Any, kb: Any, monkeypatch: Any, caplog: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from promptjuggler_django.sync import _outcomes as outcomes

    monkeypatch.setattr(outcomes, "replay_early_webhooks", _failing)
    doc = make_doc(kb, "kept.txt")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        report = sync.push_documents([doc.pk])
    assert report.synced == 1 and callbacks
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.SYNCED
    _assert_logged(caplog, "_after_store")


def test_a_failing_hook_after_an_adoption_is_logged(
    pj: Any, kb: Any, monkeypatch: Any, caplog: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from promptjuggler_django.sync import _reconcile as reconcile

    monkeypatch.setattr(reconcile, "replay_early_webhooks", _failing)
    doc = make_doc(kb, "unsure.txt", b"zz")
    KnowledgeDocument.objects.filter(pk=doc.pk).update(
        sync_state=SyncState.NEEDS_REVIEW, attempts=1
    )
    remote = pj.add_document("kb_test", "unsure.txt", b"zz")  # the unknown outcome did land
    with django_capture_on_commit_callbacks(execute=True):
        report = sync.reconcile(enqueue=False)
    assert report.adopted == 1
    doc.refresh_from_db()
    assert (doc.sync_state, doc.remote_id) == (SyncState.SYNCED, remote.id)
    _assert_logged(caplog, "_failing")


def test_a_failing_hook_after_draining_tombstones_is_logged(
    pj: Any, kb: Any, monkeypatch: Any, caplog: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from promptjuggler_django.models import RemoteDeletion
    from promptjuggler_django.sync import _tombstones as tombstones

    doc = make_doc(kb, "gone.txt")
    sync.push_documents([doc.pk])
    doc.delete()
    monkeypatch.setattr(tombstones, "_after_drain", _failing)
    with django_capture_on_commit_callbacks(execute=True):
        report = sync.drain_tombstones()
    assert report.deleted == 1 and RemoteDeletion.objects.count() == 0
    assert pj.documents("kb_test") == []
    _assert_logged(caplog, "_failing")


def test_a_failing_enqueue_hook_after_a_save_is_logged(
    kb: Any, monkeypatch: Any, caplog: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from promptjuggler_django.sync import _outbox as outbox

    monkeypatch.setattr(outbox, "_flush", _failing)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        doc = make_doc(kb, "queued.txt")
    assert callbacks
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.QUEUED  # promptjuggler_sync will push it
    assert any("the broker is down" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def _watch_the_wire(
    settings: Any, kb: Any, monkeypatch: pytest.MonkeyPatch, wait: float
) -> tuple[Any, list[threading.Thread], list[bool]]:
    """Six documents in three batches; a client recording the thread of each request, and a
    store that waits up to ``wait`` s for the next batch's request to start (whether it did)."""
    from promptjuggler_django.client import PromptJugglerClient
    from promptjuggler_django.sync import _push

    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BATCH_MAX_FILES": 2}
    for i in range(6):
        make_doc(kb, f"doc-{i}.txt", b"x" * 100)
    started = [threading.Event() for _ in range(4)]
    senders: list[threading.Thread] = []
    overlapped: list[bool] = []

    class Watched(PromptJugglerClient):
        def upload_documents(self, slug: str, files: Any) -> Any:
            senders.append(threading.current_thread())
            started[len(senders) - 1].set()
            return super().upload_documents(slug, files)

    store_outcomes = _push.store_outcomes

    def watched_store(claim: Any, *args: Any, **kwargs: Any) -> Any:
        overlapped.append(started[len(overlapped) + 1].wait(timeout=wait))
        return store_outcomes(claim, *args, **kwargs)

    monkeypatch.setattr(_push, "store_outcomes", watched_store)
    return Watched.from_settings(), senders, overlapped


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("dummy_tasks")  # committed uploads wait for this test's push
def test_each_batch_is_stored_while_the_next_is_on_the_wire(
    pj: Any, kb: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In autocommit (a task, a command) storing batch N waits here until batch N + 1's
    request has started: a run that stored before sending on would never start it."""
    client, senders, overlapped = _watch_the_wire(settings, kb, monkeypatch, wait=2)
    with client:
        report = sync.push_due(client=client)
    assert (report.synced, report.batches) == (6, 3)
    assert overlapped == [True, True, False]  # the last batch has no next one
    assert threading.current_thread() not in senders and len(set(senders)) == 1


def test_inside_a_transaction_each_batch_is_sent_and_stored_in_turn(
    pj: Any, kb: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside the caller's transaction (this test's) the requests go out from the caller's
    thread, whose connection sees the uncommitted rows, and each batch is stored before the
    next is claimed."""
    client, senders, overlapped = _watch_the_wire(settings, kb, monkeypatch, wait=0.05)
    with client:
        report = sync.push_due(client=client)
    assert (report.synced, report.batches) == (6, 3)
    assert overlapped == [False, False, False]
    assert set(senders) == {threading.current_thread()}


def test_a_knowledge_base_that_refuses_a_batch_gets_no_further_request(
    pj: Any, kb: Any, settings: Any
) -> None:
    """The next batch is claimed only once the last answer is in: a refusal of the knowledge
    base as a whole stops the run's requests to it, as it did when batches went one by one."""
    settings.PROMPTJUGGLER = {
        **settings.PROMPTJUGGLER,
        "BATCH_MAX_FILES": 2,
        "PUSH_BACKOFF": 3600.0,
        "PUSH_BACKOFF_MAX": 3600.0,
    }
    for i in range(6):
        make_doc(kb, f"doc-{i}.txt", b"x" * 100)
    pj.set_fault("upload", status=403)
    report = sync.push_due()
    assert (report.requests, report.batches, report.blocked) == (1, 1, 2)
    assert [r.status_code for r in pj.requests if r.endpoint == "upload"] == [403]
    assert KnowledgeDocument.objects.filter(sync_state=SyncState.QUEUED).count() == 6


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("dummy_tasks")
def test_answers_in_hand_are_stored_when_the_next_batch_cannot_start(
    pj: Any, kb: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch 1's answer is in when batch 2 is claimed: a failure starting batch 2 still stores
    it (its rows would otherwise wait for their lease to end, and for reconcile)."""
    from promptjuggler_django.sync import _push

    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "BATCH_MAX_FILES": 2}
    for i in range(4):
        make_doc(kb, f"doc-{i}.txt", b"x" * 100)
    before_send = _push._before_send
    calls = []

    def failing_second(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("storage outage")
        return before_send(*args, **kwargs)

    monkeypatch.setattr(_push, "_before_send", failing_second)
    with pytest.raises(RuntimeError, match="storage outage"):
        sync.push_due()
    states = sorted(KnowledgeDocument.objects.values_list("sync_state", flat=True))
    assert states == [SyncState.SYNCED] * 2 + [SyncState.UPLOADING] * 2
