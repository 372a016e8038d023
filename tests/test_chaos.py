"""Chaos: 30% of requests fail while documents come and go; one sync converges exactly."""

from __future__ import annotations

import io
import os
import random
import time
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from promptjuggler_django.models import KnowledgeDocument, RemoteDeletion, SyncState
from tests.sync_support import *  # noqa: F403  (fixtures: pj, kb, …)
from tests.sync_support import make_doc, sha

CREATED, DELETED = 200, 50

#: (fault, share of all requests). Effects "after" model a server that stored the file or
#: deleted the document, then failed or went silent: the outcome-unknown cases.
FAULTS: list[tuple[dict[str, Any], float]] = [
    ({"status": 500}, 0.05),
    ({"status": 502, "after_effect": True}, 0.03),
    ({"status": 429, "retry_after": 1}, 0.07),
    ({"read_timeout": 0.6}, 0.04),
    ({"read_timeout": 0.6, "after_effect": True}, 0.04),
    ({"reset": True}, 0.03),
    ({"reset": True, "after_effect": True}, 0.04),
]


def set_chaos(fake: Any, seed: int) -> None:
    """Install the rules so that each fires for its share of requests (first match wins)."""
    left = 1.0
    for i, (fault, share) in enumerate(FAULTS):
        fake.set_fault("*", fraction=min(1.0, share / left), seed=seed + i, **fault)
        left -= share
    assert abs(sum(s for _, s in FAULTS) - 0.30) < 1e-9


def wait_until_due(limit: float = 5.0) -> None:
    """Let the backoffs that 429 Retry-After asked for run out (bounded)."""
    latest = [
        KnowledgeDocument.objects.filter(sync_state=SyncState.RETRYING).aggregate(
            m=Max("next_attempt_at")
        )["m"],
        RemoteDeletion.objects.aggregate(m=Max("next_attempt_at"))["m"],
    ]
    latest = [t for t in latest if t is not None]
    if latest:
        time.sleep(min(limit, max(0.0, (max(latest) - timezone.now()).total_seconds()) + 0.05))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_chaos_converges_with_one_sync(pj: Any, kb: Any, settings: Any) -> None:
    settings.PROMPTJUGGLER = {
        **settings.PROMPTJUGGLER,
        "READ_TIMEOUT": 0.3,
        "MAX_RETRIES": 2,
        "BATCH_MAX_FILES": 8,
    }
    seed = int(os.environ.get("PJ_CHAOS_SEED", "7"))  # vary it to explore other interleavings
    rng = random.Random(seed)
    set_chaos(pj, seed=seed)
    contents = {f"chaos-{i:03}.txt": f"document {i} ".encode() * (i + 1) for i in range(CREATED)}
    names = list(contents)
    # Created in transactions of ten; each commit enqueues a push the immediate backend runs
    # straight away, into the faults.
    for start in range(0, CREATED, 10):
        with transaction.atomic():
            for name in names[start : start + 10]:
                make_doc(kb, name, contents[name])
    doomed = rng.sample(names, DELETED)
    for i in range(0, DELETED, 5):  # mixed: single deletes and queryset deletes
        chunk = doomed[i : i + 5]
        if i % 10:
            KnowledgeDocument.objects.filter(file_name__in=chunk).delete()
        else:
            for name in chunk:
                KnowledgeDocument.objects.get(file_name=name).delete()
    faulted = sum(1 for r in pj.requests if r.faulted)
    states = dict.fromkeys(SyncState.values, 0)
    for state in KnowledgeDocument.objects.values_list("sync_state", flat=True):
        states[state] += 1
    print(f"\nchaos: {pj.request_count()} requests, {faulted} faulted; states {states}")
    assert faulted >= 0.2 * pj.request_count()
    assert states[SyncState.SYNCED] < CREATED - DELETED  # the faults did leave work behind

    pj.clear_faults()
    wait_until_due()
    out = io.StringIO()
    call_command("promptjuggler_sync", stdout=out)  # raises (exit 1) if anything is left failing
    print(out.getvalue())

    survivors = {d.file_name: d for d in KnowledgeDocument.objects.all()}
    assert set(survivors) == set(names) - set(doomed)
    remote = pj.documents("kb_test")
    remote_names = [d.file_name for d in remote]
    assert len(remote_names) == len(set(remote_names)), "duplicate remote documents"
    assert set(remote_names) == set(survivors), "orphan or missing remote documents"
    by_id = {d.id: d for d in remote}
    for name, doc in survivors.items():
        assert doc.sync_state == SyncState.SYNCED, (name, doc.sync_state, doc.last_error)
        assert doc.remote_id in by_id and by_id[doc.remote_id].file_name == name
        assert by_id[doc.remote_id].sha256 == sha(contents[name])
    assert RemoteDeletion.objects.count() == 0, list(RemoteDeletion.objects.values())
