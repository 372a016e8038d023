"""Out-of-order and duplicated deliveries end where the in-order sequence ends.

Hypothesis builds one document's processing history (pending → sealed … → ready | failed, each
observation signed at its own time), then delivers it in order to one document and shuffled with
duplicates to another, through the whole endpoint. Both must end in the same state.
"""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptjuggler_django.models import KnowledgeDocument, WebhookDelivery

from .webhook_support import (
    NOW,
    document_body,
    fixed_clock,  # noqa: F401  (fixture)
    make_document,
    post,
    url,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fixed_clock")]

IN_PROGRESS = ["pending", "sealed", "embedding"]  # "embedding": a status PromptJuggler may add
RANK = {"pending": 0, "sealed": 1, "embedding": 1, "ready": 2, "failed": 2}

Observation = tuple[str, int, int]  # status, chunk count, signature timestamp


@st.composite
def histories(draw: st.DrawFn) -> list[Observation]:
    """A plausible in-order history: ranks never go down, time never goes back."""
    statuses = sorted(
        draw(st.lists(st.sampled_from(IN_PROGRESS), max_size=4)), key=RANK.__getitem__
    )
    terminal = draw(st.sampled_from(["ready", "failed", None]))
    if terminal:
        statuses.append(terminal)
    if not statuses:
        statuses = ["pending"]
    history: list[Observation] = []
    timestamp = NOW - 250
    previous_rank = -1
    for status in statuses:
        gap = draw(st.integers(0, 3))  # the same second is common
        if gap == 0 and RANK[status] <= previous_rank:
            gap = 1  # one observation per second and rank: PromptJuggler's t has no fraction
        timestamp += gap
        history.append((status, draw(st.integers(0, 500)), timestamp))
        previous_rank = RANK[status]
    return history


def deliver_all(client: Client, document: KnowledgeDocument, events: list[Observation]) -> None:
    for status, chunks, timestamp in events:
        body = document_body(document.remote_id, status, chunks)
        response = post(client, url(), body, timestamp=timestamp)
        assert response.status_code == 200
        assert response.json()["outcome"] in ("applied", "stale", "duplicate")


def state(document: KnowledgeDocument) -> tuple:
    document.refresh_from_db()
    return document.remote_status, document.chunk_count, document.status_changed_at


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories(), data=st.data())
def test_any_order_with_duplicates_ends_like_the_in_order_sequence(client, history, data):
    in_order = make_document("")
    deliver_all(client, in_order, history)
    expected = state(in_order)
    assert expected[0] == history[-1][0]

    duplicates = data.draw(st.lists(st.sampled_from(history), max_size=len(history) * 2))
    shuffled = data.draw(st.permutations(history + duplicates))
    scrambled = make_document("")
    deliver_all(client, scrambled, shuffled)
    assert state(scrambled) == expected
    logged = WebhookDelivery.objects.filter(object_id=str(scrambled.remote_id))
    assert logged.count() == len(set(shuffled))
    assert sum(logged.values_list("duplicate_count", flat=True)) == len(shuffled) - len(
        set(shuffled)
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    history=histories().filter(lambda h: h[-1][0] in ("ready", "failed")),
    data=st.data(),
)
def test_late_resigned_redeliveries_never_move_a_finished_document(client, history, data):
    """A redelivery may be signed afresh (a newer ``t``): a finished document stays finished."""
    document = make_document("")
    deliver_all(client, document, data.draw(st.permutations(history)))
    status, chunks, _ = state(document)
    assert (status, chunks) == history[-1][:2]

    later = NOW + data.draw(st.integers(1, 200))
    resent = [(s, c, later) for s, c, _ in data.draw(st.lists(st.sampled_from(history)))]
    deliver_all(client, document, resent)
    assert state(document)[:2] == (status, chunks)


def test_a_stale_event_is_logged_as_stale(client) -> None:
    document = make_document("")
    deliver_all(client, document, [("ready", 4, NOW)])
    response = post(client, url(), document_body(document.remote_id, "sealed", 9), timestamp=NOW)
    assert response.json() == {"outcome": "stale"}
    assert WebhookDelivery.objects.filter(outcome="stale").count() == 1
    assert KnowledgeDocument.objects.get(pk=document.pk).chunk_count == 4
    assert uuid.UUID(WebhookDelivery.objects.get(outcome="stale").object_id) == document.remote_id
