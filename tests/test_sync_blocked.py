"""Blocked knowledge bases: an account-level refusal holds documents back, it never fails them.

A 401 (bad key), a 403 (a key without access), a 404 for the knowledge base, or no key at all
say nothing about the files: the knowledge base is *blocked* with the reason, its documents stay
queued without spending attempts, and the first try after the fix resumes by itself.
"""

from __future__ import annotations

import io
import time
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone

from promptjuggler_django import display, sync
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, RemoteDeletion, SyncState
from promptjuggler_django.sync import tasks
from tests.sync_support import *  # noqa: F403  (fixtures: pj, kb, …)
from tests.sync_support import make_doc, remote_state

pytestmark = pytest.mark.django_db


def run_command(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("promptjuggler_sync", *args, stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def _wrong_key(pj: Any, settings: Any) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "API_KEY": "pj_revoked_key"}


def _no_access(pj: Any, settings: Any) -> None:
    pj.set_fault("upload", status=403)


def _slow_backoff(settings: Any) -> None:
    settings.PROMPTJUGGLER = {
        **settings.PROMPTJUGGLER,
        "PUSH_BACKOFF": 3600.0,
        "PUSH_BACKOFF_MAX": 3600.0,
    }


REFUSALS = {
    "401 bad key": (_wrong_key, "401"),
    "403 no access": (_no_access, "403"),
}


def _refused(kb: KnowledgeBase) -> KnowledgeBase:
    return KnowledgeBase.objects.get(pk=kb.pk)


@pytest.mark.parametrize("refusal", list(REFUSALS), ids=list(REFUSALS))
def test_an_account_refusal_blocks_the_knowledge_base_and_keeps_documents_queued(
    pj: Any, kb: Any, settings: Any, refusal: str
) -> None:
    cause, code = REFUSALS[refusal]
    _slow_backoff(settings)
    cause(pj, settings)
    docs = [make_doc(kb, f"doc{i}.txt") for i in range(3)]
    report = sync.push_due()
    assert report.blocked == 3 and report.failed == 0
    assert report.blocked_knowledge_bases.keys() == {"kb_test"}
    blocked = _refused(kb)
    assert blocked.is_blocked and code in blocked.blocked_reason
    assert blocked.blocked_attempts == 1
    assert blocked.blocked_until is not None and blocked.blocked_until > timezone.now()
    for doc in KnowledgeDocument.objects.filter(pk__in=[d.pk for d in docs]):
        assert doc.sync_state == SyncState.QUEUED
        assert doc.attempts == 0  # the knowledge base was refused, not the file
        assert code in doc.last_error
        assert doc.next_attempt_at == blocked.blocked_until


def test_an_unknown_knowledge_base_blocks_instead_of_failing(pj: Any, kb: Any) -> None:
    missing = KnowledgeBase.objects.create(slug="kb_unknown")
    doc = make_doc(missing)
    report = sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert (report.blocked, report.failed) == (1, 0)
    assert doc.sync_state == SyncState.QUEUED and doc.attempts == 0
    assert "Knowledge base not found" in doc.last_error
    assert "404" in _refused(missing).blocked_reason


def test_no_api_key_blocks_with_the_setting_to_fix(pj: Any, kb: Any, settings: Any) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "API_KEY": ""}
    doc = make_doc(kb)
    report = sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert report.blocked == 1 and report.requests == 0
    assert doc.sync_state == SyncState.QUEUED  # not left "uploading" for the whole lease
    assert doc.attempts == 0
    assert "API_KEY" in doc.last_error
    assert "API_KEY" in _refused(kb).blocked_reason
    assert pj.request_count() == 0


def _no_key(settings: Any) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "API_KEY": ""}


def _tombstone(pj: Any, kb: Any) -> RemoteDeletion:
    doc = make_doc(kb, "to-delete.txt")
    sync.push_documents([doc.pk])
    doc.delete()  # inside the test's transaction: the delete task is not enqueued
    return RemoteDeletion.objects.get()


def test_no_api_key_leaves_tombstones_untouched(pj: Any, kb: Any, settings: Any) -> None:
    tombstone = _tombstone(pj, kb)
    requests = pj.request_count()
    _no_key(settings)
    report = sync.drain_tombstones()  # what delete_remote_task runs
    tasks.delete_remote_task.call([tombstone.pk])  # nor does the task raise in a worker
    assert (report.deleted, report.already_gone, report.failed) == (0, 0, 0)
    assert any("API_KEY" in error for error in report.errors), report.errors
    after = RemoteDeletion.objects.get()
    assert after.attempts == tombstone.attempts == 0  # no attempt spent, no lease taken
    assert after.next_attempt_at == tombstone.next_attempt_at
    assert after.last_error == tombstone.last_error
    assert pj.request_count() == requests
    assert len(pj.documents("kb_test")) == 1


def test_promptjuggler_sync_without_an_api_key_reports_it(pj: Any, kb: Any, settings: Any) -> None:
    tombstone = _tombstone(pj, kb)
    waiting = make_doc(kb, "waiting.txt")
    requests = pj.request_count()
    _no_key(settings)
    summary = sync.run_sync()
    assert summary.failing >= 1  # a setting to fix: the exit status says so
    text = "\n".join(summary.lines())
    assert "API_KEY" in text
    waiting.refresh_from_db()
    assert waiting.sync_state == SyncState.QUEUED and waiting.attempts == 0
    assert "API_KEY" in _refused(kb).blocked_reason
    assert RemoteDeletion.objects.get().attempts == tombstone.attempts == 0
    assert pj.request_count() == requests


def test_a_refused_file_still_fails_alone(pj: Any, kb: Any) -> None:
    bad = make_doc(kb, "image.png", b"\x89PNG")
    report = sync.push_documents([bad.pk])
    bad.refresh_from_db()
    assert report.failed == 1 and report.blocked == 0
    assert bad.sync_state == SyncState.FAILED
    assert not _refused(kb).is_blocked


def test_the_first_try_after_the_fix_resumes_by_itself(pj: Any, kb: Any, settings: Any) -> None:
    settings.PROMPTJUGGLER = {
        **settings.PROMPTJUGGLER,
        "PUSH_BACKOFF": 2.0,
        "PUSH_BACKOFF_MAX": 2.0,
    }
    _wrong_key(pj, settings)
    docs = [make_doc(kb, f"doc{i}.txt") for i in range(2)]
    sync.push_due()
    assert sync.push_due().attempted == 0  # held until the backoff ends: no hammering
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "API_KEY": pj.api_key}  # the fix
    wait = (_refused(kb).blocked_until - timezone.now()).total_seconds()
    time.sleep(max(0.0, wait) + 0.01)
    report = sync.push_due()
    assert report.synced == 2
    assert not _refused(kb).is_blocked
    states = {d.sync_state for d in KnowledgeDocument.objects.filter(pk__in=[d.pk for d in docs])}
    assert states == {SyncState.SYNCED}
    assert KnowledgeDocument.objects.get(pk=docs[0].pk).attempts == 1
    assert set(remote_state(pj)) == {"doc0.txt", "doc1.txt"}


def test_the_backoff_grows_with_refusals_in_a_row(pj: Any, kb: Any, settings: Any) -> None:
    settings.PROMPTJUGGLER = {
        **settings.PROMPTJUGGLER,
        "PUSH_BACKOFF": 10.0,
        "PUSH_BACKOFF_MAX": 3600.0,
    }
    _wrong_key(pj, settings)
    doc = make_doc(kb)
    delays = []
    first_refusal = None
    for _ in range(4):
        KnowledgeDocument.objects.filter(pk=doc.pk).update(next_attempt_at=timezone.now())
        before = timezone.now()
        sync.push_documents([doc.pk])
        delays.append((_refused(kb).blocked_until - before).total_seconds())
        first_refusal = first_refusal or _refused(kb).blocked_at
    blocked = _refused(kb)
    assert blocked.blocked_attempts == 4
    # Equal jitter: attempt n waits between half and all of 10 s * 2^(n-1).
    for n, delay in enumerate(delays, start=1):
        assert 10 * 2 ** (n - 1) / 2 - 1 <= delay <= 10 * 2 ** (n - 1) + 1, delays
    assert KnowledgeDocument.objects.get(pk=doc.pk).attempts == 0
    assert blocked.blocked_at == first_refusal  # "blocked since" keeps the first refusal


def test_promptjuggler_sync_reports_the_block_and_exits_non_zero(
    pj: Any, kb: Any, settings: Any
) -> None:
    _wrong_key(pj, settings)
    make_doc(kb)
    code, out = run_command()
    assert code == 1, out
    assert "Blocked: kb_test" in out and "401" in out
    assert "1 knowledge base(s) blocked" in out
    assert "pj_revoked_key" not in out


def test_every_promptjuggler_sync_tries_a_blocked_knowledge_base_at_once(
    pj: Any, kb: Any, settings: Any
) -> None:
    _slow_backoff(settings)
    _wrong_key(pj, settings)
    doc = make_doc(kb)
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    assert doc.next_attempt_at > timezone.now() + timedelta(minutes=10)
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "API_KEY": pj.api_key}
    code, out = run_command()  # no --retry-now needed: the fix may be live
    assert code == 0, out
    doc.refresh_from_db()
    assert doc.sync_state == SyncState.SYNCED
    assert not _refused(kb).is_blocked


def test_a_refused_poll_blocks_and_a_good_one_releases_the_documents(
    pj: Any, kb: Any, settings: Any
) -> None:
    _slow_backoff(settings)
    pushed = make_doc(kb, "pushed.txt")
    sync.push_documents([pushed.pk])
    _wrong_key(pj, settings)
    waiting = make_doc(kb, "waiting.txt")
    sync.push_documents([waiting.pk])
    assert _refused(kb).is_blocked
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "API_KEY": pj.api_key}
    with transaction.atomic():
        report = sync.refresh_knowledge_base(_refused(kb))
    assert report.error == ""
    assert not _refused(kb).is_blocked
    waiting.refresh_from_db()
    assert waiting.sync_state in {SyncState.QUEUED, SyncState.SYNCED}
    assert waiting.next_attempt_at is None or waiting.next_attempt_at <= timezone.now()


def test_a_poll_refused_with_404_blocks_the_knowledge_base(pj: Any, kb: Any) -> None:
    missing = KnowledgeBase.objects.create(slug="kb_unknown")
    report = sync.refresh_knowledge_base(missing)
    assert "404" in report.error
    assert "404" in _refused(missing).blocked_reason


def test_the_document_list_says_why_and_when(pj: Any, kb: Any, settings: Any) -> None:
    _wrong_key(pj, settings)
    _slow_backoff(settings)
    doc = make_doc(kb)
    sync.push_documents([doc.pk])
    doc.refresh_from_db()
    detail = display.status_detail(doc)
    assert detail.startswith("Waiting to be sent — ")
    assert "401" in detail and "next try at" in detail


def test_the_admin_shows_the_block(pj: Any, kb: Any, settings: Any, admin_client: Any) -> None:
    _wrong_key(pj, settings)
    make_doc(kb)
    sync.push_due()
    changelist = admin_client.get("/admin/promptjuggler_django/knowledgebase/")
    assert changelist.status_code == 200
    assert b"Blocked" in changelist.content
    page = admin_client.get(f"/admin/promptjuggler_django/knowledgebase/{kb.pk}/change/")
    assert b"Refused by PromptJuggler" in page.content
    assert b"401" in page.content
    assert b"pj_revoked_key" not in page.content
