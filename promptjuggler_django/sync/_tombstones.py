"""Draining tombstones: delete the remote documents that local deletes left behind.

A tombstone is written in the same transaction as the local delete (see :mod:`.receivers`) and
removed once PromptJuggler answers 204, or 404 (already gone). Deleting is idempotent, so a
failed attempt just waits for a backoff and is tried again; there is no "failed" end state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import F, Q
from django.utils import timezone

from .. import signals
from ..client import APIError, PromptJugglerClient, PromptJugglerError
from ..conf import pj_settings
from ..models import KnowledgeBase, KnowledgeDocument, RemoteDeletion
from ..retries import backoff_delay
from ._locking import first_unlocked
from ._outbox import schedule_drain
from ._outcomes import ERROR_LENGTH, Progress, run_after_commit

logger = logging.getLogger("promptjuggler_django.sync")


@dataclass
class DrainReport:
    """What draining tombstones did."""

    deleted: int = 0
    #: PromptJuggler answered 404: the document was already gone (also done).
    already_gone: int = 0
    #: Tombstones kept for a later attempt.
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def merge(self, other: DrainReport) -> None:
        self.deleted += other.deleted
        self.already_gone += other.already_gone
        self.failed += other.failed
        for message in other.errors:
            if message not in self.errors and len(self.errors) < 20:
                self.errors.append(message)


_TOMBSTONES_PER_ROUND = 100


def drain_tombstones(
    ids: Iterable[int] | None = None,
    *,
    knowledge_base: KnowledgeBase | None = None,
    client: PromptJugglerClient | None = None,
    using: str | None = None,
    progress: Progress | None = None,
) -> DrainReport:
    """Delete the remote documents tombstones point to; drop each tombstone once done.

    PromptJuggler's 204 and 404 both mean the document is gone. Anything else keeps the
    tombstone with its error and a backoff: deleting is idempotent, so it is simply tried
    again later, by a delete task deferred to the earliest due time where the task backend
    can defer (else by ``promptjuggler_sync``). Tombstones without a remote id (unknown upload
    outcomes) are left to reconcile.
    """
    using = using or DEFAULT_DB_ALIAS
    report = DrainReport()
    only = None if ids is None else sorted({int(i) for i in ids})
    if only == []:
        return report
    own_client = client is None
    seen: set[int] = set()
    finished: set[int] = set()
    kept_pks: set[int] = set()
    try:
        while True:
            now = timezone.now()
            lease = now + timedelta(seconds=pj_settings.LEASE)
            with transaction.atomic(using=using):
                qs = RemoteDeletion.objects.using(using).filter(remote_id__isnull=False)
                qs = qs.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
                if only is not None:
                    qs = qs.filter(pk__in=only)
                if knowledge_base is not None:
                    qs = qs.filter(
                        Q(knowledge_base=knowledge_base)
                        | Q(knowledge_base__isnull=True, knowledge_base_slug=knowledge_base.slug)
                    )
                if seen:
                    qs = qs.exclude(pk__in=seen)
                qs = qs.select_related("knowledge_base").order_by("pk")
                batch = first_unlocked(qs, using, _TOMBSTONES_PER_ROUND)
                if not batch:
                    break
                if client is None:
                    try:  # before the lease: without a key nothing can be sent
                        client = PromptJugglerClient.from_settings()
                    except ImproperlyConfigured as exc:
                        _not_configured(report, exc)
                        break
                RemoteDeletion.objects.using(using).filter(pk__in=[t.pk for t in batch]).update(
                    next_attempt_at=lease, attempts=F("attempts") + 1
                )
            seen.update(t.pk for t in batch)
            done: list[tuple[RemoteDeletion, bool]] = []
            kept: list[RemoteDeletion] = []
            for tombstone in batch:
                try:
                    deleted = client.delete_document(tombstone.remote_id)
                except PromptJugglerError as exc:
                    tombstone.attempts += 1
                    tombstone.last_error = str(exc)[:ERROR_LENGTH]
                    retry_after = exc.retry_after if isinstance(exc, APIError) else None
                    tombstone.next_attempt_at = timezone.now() + timedelta(
                        seconds=backoff_delay(tombstone.attempts, retry_after)
                    )
                    kept.append(tombstone)
                    if len(report.errors) < 20 and str(exc) not in report.errors:
                        report.errors.append(str(exc))
                else:
                    done.append((tombstone, deleted))
            with transaction.atomic(using=using):
                if done:
                    RemoteDeletion.objects.using(using).filter(
                        pk__in=[t.pk for t, _ in done]
                    ).delete()
                if kept:
                    RemoteDeletion.objects.using(using).bulk_update(
                        kept, ["attempts", "last_error", "next_attempt_at"]
                    )
                if done:
                    run_after_commit(_after_drain, done, using=using)
            finished.update(t.pk for t, _ in done)
            kept_pks.update(t.pk for t in kept)
            report.deleted += sum(1 for _, deleted in done if deleted)
            report.already_gone += sum(1 for _, deleted in done if not deleted)
            report.failed += len(kept)
            if progress is not None:
                progress("delete", report.deleted + report.already_gone + report.failed, None)
            if kept and not done:
                break  # PromptJuggler is refusing or unreachable: stop hammering it
    finally:
        if own_client and client is not None:
            client.close()
    _reschedule_waiting((set(only or ()) | kept_pks) - finished, using)
    return report


def _reschedule_waiting(pks: set[int], using: str) -> None:
    """Defer a delete task to the earliest time one of these tombstones is due again.

    Each failed delete draws its own jittered backoff, so the task that runs at the earliest
    deletes only what is due by then: whatever still waits is handed on here, and every
    retry happens without ``promptjuggler_sync``.
    """
    if not pks:
        return
    waiting = RemoteDeletion.objects.using(using).filter(
        pk__in=sorted(pks), remote_id__isnull=False, next_attempt_at__gt=timezone.now()
    )
    schedule_drain(
        (pk, when) for pk, when in waiting.values_list("pk", "next_attempt_at") if when is not None
    )


def _not_configured(report: DrainReport, exc: ImproperlyConfigured) -> None:
    """No API key: the tombstones stay as they are (no attempt, no lease) for after the fix."""
    message = f"Remote deletions not sent: {exc}"
    logger.warning("%s", message)
    report.errors.append(message)


def _after_drain(done: list[tuple[RemoteDeletion, bool]]) -> None:
    for tombstone, deleted in done:
        signals.send(
            signals.remote_deleted,
            KnowledgeDocument,
            remote_id=tombstone.remote_id,
            knowledge_base=tombstone.knowledge_base,
            reason=tombstone.reason,
            already_gone=not deleted,
        )
