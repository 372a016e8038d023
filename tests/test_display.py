"""Badges: one casing rule for every state a badge shows (the model's label when it has one, else
the verbatim string with a capital first letter), the raw value kept in a data attribute and the
title."""

from __future__ import annotations

import pytest
from django.utils import translation

from promptjuggler_django.display import badge_label, remote_status_badge, sync_state_badge
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, SyncState


@pytest.mark.parametrize(
    ("value", "choices", "label"),
    [
        ("ready", None, "Ready"),
        ("sealed", None, "Sealed"),
        # A status PromptJuggler may add later keeps its spelling apart from the first letter.
        ("indexing", None, "Indexing"),
        ("brand-new_status", None, "Brand-new_status"),
        ("ready", KnowledgeBase.Status.choices, "Ready"),
        ("indexing", KnowledgeBase.Status.choices, "Indexing"),
        ("needs_review", SyncState.choices, "Needs review"),
    ],
)
def test_badge_label_is_the_choice_label_or_the_capitalised_value(value, choices, label):
    assert badge_label(value, choices) == label


def test_a_choice_label_wins_over_the_capitalised_value():
    assert badge_label("ready", [("ready", "Searchable")]) == "Searchable"


def test_remote_status_badge_shows_a_capital_and_keeps_the_raw_value():
    html = str(remote_status_badge("ready"))
    assert html == (
        '<span class="pj-badge pj-badge--success" title="ready" '
        'data-pj-remote-status="ready">Ready</span>'
    )


def test_an_unknown_remote_status_is_shown_verbatim_but_for_the_capital():
    html = str(remote_status_badge("indexing"))
    assert 'title="indexing" data-pj-remote-status="indexing">Indexing</span>' in html
    assert "pj-badge--active" in html  # not ready, not failed: still processing


def test_an_empty_remote_status_is_a_dash():
    assert str(remote_status_badge("")).endswith('data-pj-remote-status="">—</span>')


def test_knowledge_base_status_uses_the_models_labels():
    with translation.override("en"):
        html = str(remote_status_badge("failed", KnowledgeBase.Status.choices))
    assert 'title="failed" data-pj-remote-status="failed">Failed</span>' in html
    assert "pj-badge--danger" in html


def test_sync_state_badge_follows_the_same_rule():
    document = KnowledgeDocument(sync_state=SyncState.NEEDS_REVIEW)
    html = str(sync_state_badge(document))
    assert html == (
        '<span class="pj-badge pj-badge--warning" title="needs_review" '
        'data-pj-sync-state="needs_review">Needs review</span>'
    )


def test_a_sync_state_the_model_does_not_know_is_capitalised():
    document = KnowledgeDocument(sync_state="parked")  # e.g. a row written by a newer version
    html = str(sync_state_badge(document))
    assert 'title="parked" data-pj-sync-state="parked">Parked</span>' in html
