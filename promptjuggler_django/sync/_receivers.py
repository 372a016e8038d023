"""Model signal receivers: record remote work in the user's transaction, trigger it after commit.

Nothing here talks to PromptJuggler. A saved document is marked ``queued`` and a push is
enqueued with ``transaction.on_commit`` (once per knowledge base per transaction); a deleted
document leaves a tombstone in the same transaction. A rolled-back transaction therefore sends
nothing, and a crash after commit loses nothing: ``promptjuggler_sync`` finds the rows.

Skipped entirely for fixture loading (``raw=True``) and inside :func:`suppress_sync`.
``bulk_create()``, ``QuerySet.update()`` and raw SQL send no signals: use
:func:`~promptjuggler_django.sync.push_queryset` and
:func:`~promptjuggler_django.sync.delete_remote` for those.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from django.db import DEFAULT_DB_ALIAS
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save
from django.utils import timezone

from .. import transitions
from ..filetypes import guess_content_type
from ..models import KnowledgeBase, KnowledgeDocument, SyncState
from ._outbox import (
    Tombstone,
    enqueue_push_for,
    may_have_unrecorded_copy,
    sync_suppressed,
    tombstone_for,
    write_tombstones,
)

#: Set on the instance by ``pre_save`` for ``post_save``: what changed and the old remote copy.
_CHANGE = "_promptjuggler_change"
#: Set on the instance by ``pre_delete`` for ``post_delete``: the row's remote state.
_STORED = "_promptjuggler_stored"

#: Knowledge bases being deleted, as (database alias, pk), from their ``pre_delete`` to their
#: ``post_delete``: the tombstones their documents leave keep the slug but no reference. (A
#: delete that fails in between leaves its mark: that knowledge base's later tombstones in this
#: thread then go by slug too, which the drain and reconcile handle alike.)
_DELETING: ContextVar[frozenset[tuple[str, int]]] = ContextVar(
    "promptjuggler_deleting_knowledge_bases", default=frozenset()
)

#: The fields ``pre_save`` resets when a file is replaced or moved to another knowledge base.
_RESET_FIELDS = (
    "file_name",
    "file_size",
    "content_type",
    "file_version",
    "sync_state",
    "attempts",
    "last_error",
    "next_attempt_at",
    "remote_id",
    "remote_status",
    "chunk_count",
    "status_changed_at",
    "pushed_at",
)


def connect() -> None:
    """Connect the receivers (called from ``AppConfig.ready``; idempotent)."""
    pre_save.connect(
        document_pre_save, sender=KnowledgeDocument, dispatch_uid="promptjuggler_document_pre_save"
    )
    post_save.connect(
        document_post_save,
        sender=KnowledgeDocument,
        dispatch_uid="promptjuggler_document_post_save",
    )
    pre_delete.connect(
        document_pre_delete,
        sender=KnowledgeDocument,
        dispatch_uid="promptjuggler_document_pre_delete",
    )
    post_delete.connect(
        document_post_delete,
        sender=KnowledgeDocument,
        dispatch_uid="promptjuggler_document_post_delete",
    )
    pre_delete.connect(
        knowledge_base_pre_delete,
        sender=KnowledgeBase,
        dispatch_uid="promptjuggler_knowledge_base_pre_delete",
    )
    post_delete.connect(
        knowledge_base_post_delete,
        sender=KnowledgeBase,
        dispatch_uid="promptjuggler_knowledge_base_post_delete",
    )


def _describe_file(instance: KnowledgeDocument, *, keep_name: bool) -> None:
    """Fill ``file_name``, ``file_size`` and ``content_type`` from the file being saved.

    Runs before ``FileField.pre_save`` stores an upload, so ``file.name`` is still the name
    the user gave (the storage may add a suffix to avoid collisions; PromptJuggler should see
    the original, since its ``fileName`` is what people search and read).
    """
    file = instance.file
    if not keep_name or not instance.file_name:
        instance.file_name = os.path.basename(file.name or "")[:255]
    try:
        instance.file_size = file.size
    except (OSError, ValueError, NotImplementedError, AttributeError):
        instance.file_size = None  # measured when pushed
    # From the extension, never the browser's declared type (browsers guess inconsistently,
    # and a client may lie).
    instance.content_type = guess_content_type(instance.file_name)


def document_pre_save(
    sender: type[KnowledgeDocument],
    instance: KnowledgeDocument,
    raw: bool = False,
    using: str | None = None,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    """Describe a new file; on a replaced file (or a move), reset the push state."""
    instance.__dict__.pop(_CHANGE, None)
    if raw:
        return  # fixtures load verbatim
    if sync_suppressed():
        # Describing a new file is local bookkeeping, not sync: still done.
        if instance._state.adding and not instance.file_name:
            _describe_file(instance, keep_name=True)
        return
    watched = {"file", "knowledge_base", "knowledge_base_id"}
    if update_fields is not None and not watched & set(update_fields):
        return  # neither the file nor the knowledge base is being written
    stored = None
    if not instance._state.adding and instance.pk is not None:
        stored = (
            KnowledgeDocument.objects.using(using)
            .filter(pk=instance.pk)
            .values(
                "file",
                "file_name",
                "file_size",
                "knowledge_base_id",
                "remote_id",
                "sync_state",
                "attempts",
            )
            .first()
        )
    if stored is None:
        if not instance.file_name or instance.file_size is None or not instance.content_type:
            _describe_file(instance, keep_name=True)
        instance.__dict__[_CHANGE] = ("created", None)
        return
    # An upload assigned to the field is uncommitted until FileField.pre_save stores it.
    replaced = not getattr(instance.file, "_committed", True) or (instance.file.name or "") != (
        stored["file"] or ""
    )
    moved = instance.knowledge_base_id != stored["knowledge_base_id"]
    if not (replaced or moved):
        return
    if replaced:
        # Keep a name the caller set explicitly; otherwise name the document after the new file.
        _describe_file(instance, keep_name=instance.file_name != stored["file_name"])
    # A push of the previous version (or to the previous knowledge base) still in flight will
    # see the new version when it lands, and delete its copy instead of storing it.
    instance.file_version = (instance.file_version or 0) + 1
    transitions.assign(instance, transitions.queue_for_push(timezone.now()))
    instance.__dict__[_CHANGE] = ("replaced" if replaced else "moved", stored)


def document_post_save(
    sender: type[KnowledgeDocument],
    instance: KnowledgeDocument,
    created: bool = False,
    raw: bool = False,
    using: str | None = None,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    """Tombstone the replaced remote copy; enqueue a push for a queued document on commit."""
    change = instance.__dict__.pop(_CHANGE, None)
    if raw or sync_suppressed():
        return
    if change is not None and change[0] in ("replaced", "moved"):
        kind, stored = change
        if update_fields is not None:
            # save(update_fields=[...]) wrote only those: write the reset too.
            KnowledgeDocument.objects.using(using).filter(pk=instance.pk).update(
                **{name: getattr(instance, name) for name in _RESET_FIELDS}
            )
        old_kb = stored["knowledge_base_id"]
        slug = KnowledgeBase.objects.using(using).filter(pk=old_kb).values_list("slug", flat=True)
        old = Tombstone(
            stored["remote_id"],
            old_kb,
            slug.first() or "",
            stored["file_name"] or "",
            stored["file_size"],
            kind,
        )
        if old.remote_id is not None:
            write_tombstones([old], using=using)
        elif may_have_unrecorded_copy(stored["sync_state"], stored["attempts"]):
            write_tombstones([_unknown_outcome(old)], using=using)
    if instance.sync_state == SyncState.QUEUED and (
        change is not None or update_fields is None or "sync_state" in update_fields
    ):
        enqueue_push_for([instance.knowledge_base_id], using=using)


def _unknown_outcome(tombstone: Tombstone) -> Tombstone:
    return Tombstone(
        None,
        tombstone.knowledge_base_id,
        tombstone.knowledge_base_slug,
        tombstone.file_name,
        tombstone.file_size,
        "unknown_outcome",
    )


def document_post_delete(
    sender: type[KnowledgeDocument],
    instance: KnowledgeDocument,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    """Leave a tombstone for the remote copy, in the deleting transaction.

    Called for ``instance.delete()``, ``QuerySet.delete()`` (the admin's bulk delete) and
    cascades alike. A document sent before but without a stored answer (upload in flight,
    unknown outcome, a 5xx that may have stored it) has no remote id: its tombstone records
    name and size, and reconcile deletes the copy if one turns up (an in-flight push also
    deletes its fresh copy when it finds the row gone).
    """
    stored = instance.__dict__.pop(_STORED, None)
    if sync_suppressed():
        return
    if stored is not None:  # the instance deleted may be stale: trust what the row held
        for name, value in stored.items():
            setattr(instance, name, value)
    if instance.remote_id is not None:
        tombstone = tombstone_for(instance, "deleted")
    elif may_have_unrecorded_copy(instance.sync_state, instance.attempts):
        tombstone = tombstone_for(instance, "unknown_outcome", remote_id=None)
    else:
        return
    if (using or DEFAULT_DB_ALIAS, instance.knowledge_base_id) in _DELETING.get():
        tombstone = replace(tombstone, knowledge_base_id=None)
    write_tombstones([tombstone], using=using)


def document_pre_delete(
    sender: type[KnowledgeDocument],
    instance: KnowledgeDocument,
    using: str | None = None,
    origin: Any = None,
    **kwargs: Any,
) -> None:
    """For ``instance.delete()``, read the row's remote state: the instance may be stale.

    A worker may have pushed the document since the instance was loaded; deleting it must
    still tombstone the remote copy. ``QuerySet.delete()`` and cascades load fresh rows, so
    they cost no extra query.
    """
    instance.__dict__.pop(_STORED, None)
    if origin is not instance or sync_suppressed():
        return
    stored = (
        KnowledgeDocument.objects.using(using)
        .filter(pk=instance.pk)
        .values(
            "remote_id", "sync_state", "attempts", "file_name", "file_size", "knowledge_base_id"
        )
        .first()
    )
    if stored is not None:
        instance.__dict__[_STORED] = stored


def knowledge_base_pre_delete(
    sender: type[KnowledgeBase], instance: KnowledgeBase, using: str | None = None, **kwargs: Any
) -> None:
    """Note that the knowledge base is going: its documents' tombstones must not point at it.

    Django deletes the documents (whose receivers write the tombstones) before the knowledge
    base, and plans its ``SET_NULL`` updates before either. A tombstone referring to the
    knowledge base would stop its ``DELETE`` where foreign keys are checked at once (MariaDB,
    MySQL), and point at a deleted row at commit elsewhere; so it keeps only the slug, which
    the drain and reconcile go by when the reference is empty.
    """
    _DELETING.set(_DELETING.get() | {(using or DEFAULT_DB_ALIAS, instance.pk)})


def knowledge_base_post_delete(
    sender: type[KnowledgeBase], instance: KnowledgeBase, using: str | None = None, **kwargs: Any
) -> None:
    """The knowledge base is gone (``pk`` is still set: ``post_delete`` runs before Django
    clears it)."""
    _DELETING.set(_DELETING.get() - {(using or DEFAULT_DB_ALIAS, instance.pk)})
