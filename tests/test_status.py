"""The forward-only rules shared by webhooks and polling."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from promptjuggler_django import signals
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument
from promptjuggler_django.status import (
    apply_document_status,
    apply_knowledge_base_status,
    document_change,
    is_terminal,
    rank,
)

from .webhook_support import make_documents, make_knowledge_base

T0 = datetime(2027, 1, 1, tzinfo=UTC)


def later(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_rank_orders_statuses() -> None:
    assert rank("") < rank("pending") < rank("sealed") < rank("ready") == rank("failed")
    assert rank("vectorising") == rank("sealed")  # unknown: in progress
    assert is_terminal("ready") and is_terminal("failed")
    assert not is_terminal("sealed") and not is_terminal("vectorising")


def doc(status: str, at: datetime | None) -> KnowledgeDocument:
    return KnowledgeDocument(remote_status=status, status_changed_at=at)


@pytest.mark.parametrize(
    ("current", "current_at", "new", "new_at", "expected"),
    [
        ("", None, "pending", T0, True),
        ("pending", T0, "sealed", later(1), True),
        ("pending", T0, "ready", later(1), True),
        ("sealed", later(1), "pending", later(2), False),  # lower rank, even if newer
        ("ready", T0, "failed", later(1), False),  # terminal is final
        ("failed", T0, "ready", later(1), False),
        ("ready", T0, "ready", later(1), True),  # newer observation may refresh counts
        ("ready", T0, "ready", T0, False),  # the very same observation
        ("sealed", later(5), "sealed", later(4), False),  # older
        ("pending", later(5), "ready", later(4), True),  # a higher rank wins, even if older
        ("sealed", T0, "pending", T0, False),
        ("pending", T0, "sealed", T0, True),  # same second, higher rank
        ("sealed", T0, "vectorising", later(1), True),  # unknown status at the same rank
        ("ready", T0, "vectorising", later(1), False),
        ("pending", None, "sealed", None, True),  # polling without times
    ],
)
def test_document_change(current, current_at, new, new_at, expected) -> None:
    assert document_change(doc(current, current_at), new, new_at) is expected


@pytest.fixture
def changes():
    calls: list[dict] = []

    def receive(sender, **kwargs) -> None:
        calls.append({"sender": sender, **kwargs})

    signals.document_status_changed.connect(receive, dispatch_uid="status-test-doc")
    signals.knowledge_base_status_changed.connect(receive, dispatch_uid="status-test-kb")
    yield calls
    signals.document_status_changed.disconnect(dispatch_uid="status-test-doc")
    signals.knowledge_base_status_changed.disconnect(dispatch_uid="status-test-kb")


@pytest.fixture
def document(db) -> KnowledgeDocument:
    (document,) = make_documents(make_knowledge_base(), 1, remote_status="pending")
    return document


def apply_doc(document: KnowledgeDocument, status: str, chunks: int | None, at: datetime) -> str:
    return apply_document_status(
        remote_id=document.remote_id, status=status, chunk_count=chunks, observed_at=at
    )


def test_apply_document_status(document, changes, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        assert apply_doc(document, "sealed", 2, T0) == "applied"
        assert apply_doc(document, "sealed", 5, later(1)) == "applied"  # counts only: no signal
        assert apply_doc(document, "pending", 0, later(2)) == "stale"
        assert apply_doc(document, "ready", None, later(3)) == "applied"
    document.refresh_from_db()
    # A new status without a count (a poll) leaves the count unknown: 5 was the sealed count.
    assert (document.remote_status, document.chunk_count) == ("ready", None)
    assert document.status_changed_at == later(3)
    assert [(c["old_status"], c["new_status"], c["delivery"]) for c in changes] == [
        ("pending", "sealed", None),
        ("sealed", "ready", None),
    ]
    assert all(c["sender"] is KnowledgeDocument for c in changes)


@pytest.mark.django_db
def test_apply_document_status_unknown_id() -> None:
    result = apply_document_status(
        remote_id=uuid.uuid4(), status="ready", chunk_count=1, observed_at=T0
    )
    assert result == "unknown_object"


def test_nothing_is_signalled_when_the_caller_rolls_back(
    document, changes, django_capture_on_commit_callbacks
) -> None:
    class Abort(Exception):
        pass

    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(Abort),
        transaction.atomic(),
    ):
        assert apply_doc(document, "ready", 1, T0) == "applied"
        raise Abort
    document.refresh_from_db()
    assert document.remote_status == "pending"
    assert changes == []


def test_a_failing_receiver_does_not_silence_the_others(
    document, changes, django_capture_on_commit_callbacks, caplog
) -> None:
    def broken(sender, **kwargs) -> None:
        raise RuntimeError("boom")

    signals.document_status_changed.connect(broken, dispatch_uid="broken-first")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert apply_doc(document, "ready", 1, T0) == "applied"
    finally:
        signals.document_status_changed.disconnect(dispatch_uid="broken-first")
    assert len(changes) == 1
    assert "boom" in caplog.text


@pytest.mark.django_db
def test_apply_knowledge_base_status(changes, django_capture_on_commit_callbacks) -> None:
    kb = make_knowledge_base(remote_id=uuid.uuid4())

    def apply(status: str, documents: int | None, chunks: int | None, at: datetime) -> str:
        return apply_knowledge_base_status(
            remote_id=kb.remote_id,
            status=status,
            document_count=documents,
            chunk_count=chunks,
            observed_at=at,
        )

    with django_capture_on_commit_callbacks(execute=True):
        assert apply("ready", 2, 20, later(1)) == "applied"
        assert apply("pending", 3, 20, T0) == "stale"  # older
        assert apply("ready", 3, None, later(1)) == "applied"  # same second: later arrival wins
        assert apply("pending", 3, None, later(2)) == "applied"  # statuses may go back
    kb.refresh_from_db()
    assert (kb.status, kb.document_count, kb.chunk_count) == ("pending", 3, 20)
    assert [(c["old_status"], c["new_status"]) for c in changes] == [
        ("", "ready"),
        ("ready", "pending"),
    ]
    assert all(c["sender"] is KnowledgeBase for c in changes)
    assert (
        apply_knowledge_base_status(
            remote_id=uuid.uuid4(),
            status="ready",
            document_count=1,
            chunk_count=1,
            observed_at=T0,
        )
        == "unknown_object"
    )


# -- the rule as one conditional UPDATE -------------------------------------------------------

#: Row states and observations crossing every rank, the terminal pair, an unknown status, and
#: times on, within and across whole seconds (webhooks sign whole seconds; polls carry more).
CURRENT_STATUSES = ["", "pending", "sealed", "vectorising", "ready", "failed"]
NEW_STATUSES = ["pending", "sealed", "vectorising", "ready", "failed"]
TIMES = [None, T0, T0 + timedelta(microseconds=250_000), later(1), later(-1)]
OBSERVED = [T0, T0 + timedelta(microseconds=600_000), later(1), later(-1)]


@pytest.mark.django_db
@pytest.mark.parametrize("new_chunks", [None, 9])
def test_the_conditional_update_follows_the_rule_in_python(new_chunks: int | None) -> None:
    """Without a status receiver a document event is one ``UPDATE … WHERE <forward_clause>``:
    on every combination it changes exactly the rows :func:`document_change` accepts, and
    writes what :func:`transitions.apply_remote_status` says, on this test run's database."""
    from promptjuggler_django import transitions

    assert not signals.document_status_changed.has_listeners(KnowledgeDocument)
    kb = make_knowledge_base()
    cases = [
        (current, at, chunks, new, observed)
        for current in CURRENT_STATUSES
        for at in TIMES
        for chunks in (None, 4)
        for new in NEW_STATUSES
        for observed in OBSERVED
    ]
    rows = KnowledgeDocument.objects.bulk_create(
        KnowledgeDocument(
            knowledge_base=kb,
            file=f"f{i}.txt",
            file_name=f"f{i}.txt",
            remote_id=uuid.uuid4(),
            remote_status=current,
            chunk_count=chunks,
            status_changed_at=at,
        )
        for i, (current, at, chunks, _, _) in enumerate(cases)
    )
    expected = {}
    outcomes = {}
    for row, (_, _, _, new, observed) in zip(rows, cases, strict=True):
        before = KnowledgeDocument(
            remote_status=row.remote_status,
            chunk_count=row.chunk_count,
            status_changed_at=row.status_changed_at,
        )
        if document_change(before, new, observed):
            values = transitions.apply_remote_status(before, new, new_chunks, observed)
            expected[row.pk] = (new, values["chunk_count"], observed)
        else:
            expected[row.pk] = (row.remote_status, row.chunk_count, row.status_changed_at)
        outcomes[row.pk] = apply_document_status(
            remote_id=row.remote_id, status=new, chunk_count=new_chunks, observed_at=observed
        )
    stored = {
        pk: (status, chunks, at)
        for pk, status, chunks, at in KnowledgeDocument.objects.values_list(
            "pk", "remote_status", "chunk_count", "status_changed_at"
        )
    }
    mismatches = [
        (case, expected[row.pk], stored[row.pk])
        for row, case in zip(rows, cases, strict=True)
        if stored[row.pk] != expected[row.pk]
    ]
    assert mismatches == []
    changed = {pk for pk, values in expected.items() if outcomes[pk] == "applied"}
    assert {pk for pk in outcomes if outcomes[pk] == "stale"} == set(outcomes) - changed
    assert len(changed) > len(cases) // 4  # both outcomes are well represented


@pytest.mark.django_db
def test_the_conditional_update_tells_stale_from_unknown() -> None:
    (document,) = make_documents(make_knowledge_base(), 1, remote_status="ready")
    assert apply_doc(document, "pending", 1, T0) == "stale"
    unknown = KnowledgeDocument(remote_id=uuid.uuid4())
    assert apply_doc(unknown, "ready", 1, T0) == "unknown_object"
