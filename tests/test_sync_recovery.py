"""Recovery rules: promptjuggler_sync catching up after an outage, and its exit status."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from promptjuggler_django import sync
from promptjuggler_django.models import KnowledgeDocument, RemoteDeletion, SyncState
from tests.sync_support import *  # noqa: F403  (fixtures: pj, kb, …)
from tests.sync_support import make_doc, remote_state


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("promptjuggler_sync", *args, stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


# -- promptjuggler_sync catches up ------------------------------------------------------------


def _waiting_document(pj: Any, kb: Any) -> KnowledgeDocument:
    pj.set_fault("upload", status=429, retry_after=3600, times=1)
    doc = make_doc(kb, "waiting.txt")
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.RETRYING
    assert doc.next_attempt_at > timezone.now() + timedelta(minutes=30)
    return doc


def _waiting_tombstone(pj: Any, kb: Any, settings: Any) -> RemoteDeletion:
    doc = make_doc(kb, "gone.txt")
    sync.push_documents([doc.pk])
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "MAX_RETRIES": 0}
    pj.set_fault("delete", status=503, retry_after=3600, times=1)
    doc.delete()
    sync.drain_tombstones()
    tomb = RemoteDeletion.objects.get()
    assert tomb.last_error and tomb.next_attempt_at > timezone.now() + timedelta(minutes=30)
    return tomb


@pytest.mark.django_db
def test_work_that_retries_by_itself_does_not_fail_the_command(
    pj: Any, kb: Any, settings: Any
) -> None:
    doc = _waiting_document(pj, kb)
    _waiting_tombstone(pj, kb, settings)
    code, out = run()
    assert code == 0, out
    assert "1 retrying" in out and "1 deletion(s) waiting" in out
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.RETRYING  # its backoff stands without --retry-now


@pytest.mark.django_db
def test_retry_now_catches_up_documents_and_tombstones(pj: Any, kb: Any, settings: Any) -> None:
    doc = _waiting_document(pj, kb)
    tomb = _waiting_tombstone(pj, kb, settings)
    code, out = run("--retry-now")
    assert code == 0, out
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.SYNCED
    assert not RemoteDeletion.objects.filter(pk=tomb.pk).exists()
    assert set(remote_state(pj)) == {"waiting.txt"}
    assert "Retrying now: 1 document(s), 1 remote deletion(s)." in out


@pytest.mark.django_db
def test_retry_now_in_a_dry_run_changes_nothing(pj: Any, kb: Any) -> None:
    doc = _waiting_document(pj, kb)
    code, out = run("--retry-now", "--dry-run")
    assert code == 0, out
    assert "Dry run: 1 document(s) due to push" in out
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.RETRYING
    assert doc.next_attempt_at > timezone.now() + timedelta(minutes=30)


@pytest.mark.django_db
def test_unknown_outcome_tombstones_without_a_copy_are_counted(pj: Any, kb: Any) -> None:
    RemoteDeletion.objects.create(
        knowledge_base=kb, knowledge_base_slug=kb.slug, file_name="never.txt", file_size=3
    )
    code, out = run()
    assert code == 0, out
    assert not RemoteDeletion.objects.exists()
    assert "Unknown upload outcomes: 0 remote copies found and deleted, 1 left no copy." in out
