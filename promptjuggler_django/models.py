"""Local mirrors of PromptJuggler knowledge bases, documents and runs, plus the two outboxes.

Fields that mirror PromptJuggler (``remote_*``, ``status``, counts) are kept apart from the local
push state (``sync_state``, attempts, errors). The database row is the source of truth: every
remote side effect is first written here, in the same transaction as the user's change.
"""

from __future__ import annotations

import os
import posixpath
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core import checks
from django.core.files.storage import Storage, storages
from django.db import models
from django.db.models import Q, lookups
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .conf import pj_settings
from .limits import MAX_ID_LENGTH, MAX_STATUS_LENGTH

#: Remote document statuses in their forward order; ``ready`` and ``failed`` are terminal.
DOCUMENT_STATUS_RANK: dict[str, int] = {"pending": 0, "sealed": 1, "ready": 2, "failed": 2}
TERMINAL_DOCUMENT_STATUSES = frozenset({"ready", "failed"})


def document_storage() -> Storage:
    """The storage that holds document files (``PROMPTJUGGLER["STORAGE"]``, else ``default``)."""
    return storages[pj_settings.STORAGE or "default"]


def document_upload_to(instance: KnowledgeDocument, filename: str) -> str:
    """Upload path: ``PROMPTJUGGLER["UPLOAD_TO"]`` (a strftime path or a callable)."""
    upload_to = pj_settings.UPLOAD_TO
    if callable(upload_to):
        return str(upload_to(instance, filename))
    dirname = timezone.now().strftime(upload_to)
    return posixpath.join(dirname, os.path.basename(filename))


if TYPE_CHECKING:
    _CharField = models.CharField[Any, Any]
    _Lookup = lookups.Lookup[Any]
else:  # Django's fields and lookups take no type parameters at run time
    _CharField = models.CharField
    _Lookup = lookups.Lookup


class ExactCharField(_CharField):
    """A ``CharField`` whose values compare exactly (case, accents) on every database.

    PostgreSQL and SQLite compare text exactly by default; MariaDB's and MySQL's default
    collations (``utf8mb4_general_ci``, ``utf8mb4_0900_ai_ci``, …) ignore case and accents, so
    ``kb_Docs`` would find, and collide with, ``kb_docs``. There the column gets the binary
    collation of utf8mb4 (which still ignores trailing spaces, as any PAD SPACE collation).
    A ``db_collation`` given explicitly wins. The ``i…`` lookups (``iexact``, ``icontains``,
    ``istartswith``, ``iendswith``: the admin's search) still ignore case there, as on the other
    databases: they compare both sides lower-cased.
    """

    def db_parameters(self, connection: Any) -> dict[str, Any]:
        params = super().db_parameters(connection)
        if connection.vendor == "mysql" and not self.db_collation:
            params["collation"] = "utf8mb4_bin"
        return params


class _LowerCased(_Lookup):
    """On MariaDB/MySQL, a case-insensitive lookup over a binary collation: both sides
    lower-cased (MySQL's ``i…`` lookups otherwise rely on the column's collation)."""

    def process_lhs(self, compiler: Any, connection: Any, lhs: Any = None) -> Any:
        sql, params = super().process_lhs(compiler, connection, lhs)
        return (f"LOWER({sql})" if connection.vendor == "mysql" else sql), params

    def process_rhs(self, compiler: Any, connection: Any) -> Any:
        sql, params = super().process_rhs(compiler, connection)
        return (f"LOWER({sql})" if connection.vendor == "mysql" else sql), params


@ExactCharField.register_lookup
class _IExact(_LowerCased, lookups.IExact):
    pass


@ExactCharField.register_lookup
class _IContains(_LowerCased, lookups.IContains):
    pass


@ExactCharField.register_lookup
class _IStartsWith(_LowerCased, lookups.IStartsWith):
    pass


@ExactCharField.register_lookup
class _IEndsWith(_LowerCased, lookups.IEndsWith):
    pass


class KnowledgeBase(models.Model):
    """A PromptJuggler knowledge base, known locally by its slug (the API handle)."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")

    slug = ExactCharField(
        _("slug"),
        max_length=200,
        unique=True,
        help_text=_("The knowledge base's API handle in PromptJuggler, e.g. kb_…"),
    )
    name = models.CharField(_("name"), max_length=200, blank=True)
    # Mirrored from PromptJuggler. Webhooks carry only the UUID, so it is learned from GET.
    remote_id = models.UUIDField(_("remote id"), null=True, blank=True, unique=True)
    #: Remote status verbatim; empty before the first sync. The choices name the statuses known
    #: today (labels and the admin filter); an unknown string PromptJuggler adds is kept as is.
    status = models.CharField(
        _("status"), max_length=MAX_STATUS_LENGTH, blank=True, choices=Status.choices
    )
    document_count = models.PositiveIntegerField(_("documents"), default=0)
    chunk_count = models.PositiveIntegerField(_("chunks"), default=0)
    status_changed_at = models.DateTimeField(_("status changed at"), null=True, blank=True)
    last_synced_at = models.DateTimeField(_("last synced at"), null=True, blank=True)
    #: Why PromptJuggler refuses the knowledge base as a whole (a bad key, an unknown slug, no
    #: key configured); empty when it is not blocked. Its documents wait, they do not fail.
    blocked_reason = models.TextField(_("blocked because"), blank=True)
    blocked_at = models.DateTimeField(_("blocked since"), null=True, blank=True)
    #: Refusals in a row; the backoff before the next try grows with them.
    blocked_attempts = models.PositiveIntegerField(_("refusals in a row"), default=0)
    #: When its documents are tried again (``promptjuggler_sync`` tries at once).
    blocked_until = models.DateTimeField(_("next try"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("knowledge base")
        verbose_name_plural = _("knowledge bases")
        ordering = ("slug",)

    def __str__(self) -> str:
        return self.name or self.slug

    @property
    def is_blocked(self) -> bool:
        return bool(self.blocked_reason)


class SyncState(models.TextChoices):
    """The local push state of a document (how far the app got in sending it)."""

    #: Waiting to be pushed (new, file replaced, or asked to push again).
    QUEUED = "queued", _("Queued")
    #: A worker holds the row and is sending it; ``next_attempt_at`` is the lease's end.
    UPLOADING = "uploading", _("Uploading")
    #: PromptJuggler answered with a remote id.
    SYNCED = "synced", _("Synced")
    #: A transient failure (429, 5xx, network); pushed again at ``next_attempt_at``.
    RETRYING = "retrying", _("Retrying")
    #: A definite refusal, or too many attempts; ``last_error`` says why.
    FAILED = "failed", _("Failed")
    #: The upload's outcome is unknown (timeout after sending); reconcile decides.
    NEEDS_REVIEW = "needs_review", _("Needs review")


class KnowledgeDocumentQuerySet(models.QuerySet["KnowledgeDocument"]):
    def due(self, now: Any = None) -> KnowledgeDocumentQuerySet:
        """Documents a push should pick up now: queued, or retrying whose time has come."""
        now = now or timezone.now()
        return self.filter(sync_state__in=(SyncState.QUEUED, SyncState.RETRYING)).filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
        )

    def in_flight(self) -> KnowledgeDocumentQuerySet:
        """Synced documents whose remote processing has not reached a terminal status."""
        return self.filter(sync_state=SyncState.SYNCED).exclude(
            remote_status__in=TERMINAL_DOCUMENT_STATUSES
        )

    def owned_by(self, user: Any) -> KnowledgeDocumentQuerySet:
        return self.filter(owner=user)


class KnowledgeDocument(models.Model):
    """A local file mirrored as a document in a PromptJuggler knowledge base."""

    knowledge_base = models.ForeignKey(
        KnowledgeBase,
        on_delete=models.CASCADE,
        related_name="documents",
        verbose_name=_("knowledge base"),
    )
    # No index of its own: pj_doc_owner_created leads with it, and serves its lookups, joins
    # and cascades. Every push writes each row twice, and each index costs both writes. (The
    # knowledge base's index stays: with the row id it ends with, SQLite walks it in the
    # claim's order, as it cannot match pj_doc_claim's condition against bound parameters.)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="promptjuggler_documents",
        verbose_name=_("owner"),
        db_index=False,
    )
    file = models.FileField(
        _("file"), storage=document_storage, upload_to=document_upload_to, max_length=500
    )
    #: The name sent as the multipart filename; PromptJuggler reports it back as ``fileName``.
    file_name = models.CharField(_("file name"), max_length=255, blank=True)
    file_size = models.BigIntegerField(_("size in bytes"), null=True, blank=True)
    content_type = models.CharField(_("content type"), max_length=150, blank=True)
    #: Bumped whenever the file changes, so a push that read an older file can tell.
    file_version = models.PositiveIntegerField(default=1, editable=False)

    # Mirrored from PromptJuggler.
    remote_id = models.UUIDField(_("remote id"), null=True, blank=True, unique=True)
    #: PromptJuggler's status string, verbatim (``pending``, ``sealed``, ``ready``, ``failed``, …).
    remote_status = models.CharField(_("remote status"), max_length=MAX_STATUS_LENGTH, blank=True)
    chunk_count = models.PositiveIntegerField(_("chunks"), null=True, blank=True)
    #: When the last applied remote status was observed (webhook signature time or poll time).
    status_changed_at = models.DateTimeField(_("status changed at"), null=True, blank=True)

    # Local push state.
    sync_state = models.CharField(
        _("sync state"), max_length=16, choices=SyncState.choices, default=SyncState.QUEUED
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    pushed_at = models.DateTimeField(_("pushed at"), null=True, blank=True)

    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = KnowledgeDocumentQuerySet.as_manager()

    class Meta:
        verbose_name = _("knowledge document")
        verbose_name_plural = _("knowledge documents")
        ordering = ("-created_at", "-pk")
        indexes = [
            models.Index(
                fields=["knowledge_base", "sync_state", "next_attempt_at"],
                name="pj_doc_kb_state_next",
            ),
            models.Index(fields=["sync_state", "next_attempt_at"], name="pj_doc_state_next"),
            models.Index(fields=["owner", "-created_at"], name="pj_doc_owner_created"),
            # The changelist's default ordering, read from the end (no sort of the table).
            models.Index(fields=["-created_at", "-id"], name="pj_doc_created"),
            # The push claim: due rows in (knowledge base, pk) order, read in index order up to
            # the batch size instead of sorting every due row. Partial where the database
            # allows it (rows leave the index once pushed); a plain index elsewhere.
            models.Index(
                fields=["knowledge_base", "id"],
                condition=Q(sync_state__in=["queued", "retrying"]),
                name="pj_doc_claim",
            ),
        ]

    def __str__(self) -> str:
        return self.file_name or os.path.basename(self.file.name or "") or f"document {self.pk}"

    @classmethod
    def check(cls, **kwargs: Any) -> list[checks.CheckMessage]:
        # pj_doc_claim is partial only where the database has partial indexes, by design: on
        # MariaDB/MySQL Django warns that its condition is ignored (models.W037, on every
        # `check` from Django 6.1), which no user could act on. Claims filter on the state
        # themselves, so the plain index there changes only its size.
        return [m for m in super().check(**kwargs) if m.id != "models.W037"]

    @property
    def is_searchable(self) -> bool:
        return self.remote_status == "ready"


class RunKind(models.TextChoices):
    """What a run runs: a published prompt or a published workflow."""

    PROMPT = "prompt", _("Prompt")
    WORKFLOW = "workflow", _("Workflow")


class RunSendState(models.TextChoices):
    """How far the app got in starting a run. Creating a run is not idempotent (a second POST
    starts a second, billed run), so only a send that provably started nothing is retried."""

    #: Waiting to be sent (new, or a connect failure / 429 scheduled at ``next_attempt_at``).
    QUEUED = "queued", _("Queued")
    #: A worker is sending the create request; ``next_attempt_at`` is the lease's end.
    SENDING = "sending", _("Sending")
    #: PromptJuggler answered with the run's id: ``remote_id`` and ``thread`` are set.
    STARTED = "started", _("Started")
    #: A definite refusal (404 unknown prompt or version, 422 bad inputs); ``last_error`` says why.
    FAILED = "failed", _("Failed")
    #: The request may have reached PromptJuggler (timeout, reset or 5xx after sending): a run may
    #: exist. A person decides; sending again could start a second run.
    NEEDS_REVIEW = "needs_review", _("Needs review")


class Run(models.Model):
    """A prompt or workflow run the app started (or will start), and its fetched result.

    The request (``slug``, ``version``, ``inputs``, …) is recorded first, in the caller's
    transaction; ``remote_*``, the result, usage and cost mirror what PromptJuggler reported;
    ``send_state``, ``attempts``, ``last_error`` and ``next_attempt_at`` are the local send
    bookkeeping. Per-run ``envVars`` are deliberately not stored: they may hold secrets.
    """

    kind = models.CharField(_("kind"), max_length=16, choices=RunKind.choices)
    slug = models.CharField(_("slug"), max_length=200)
    #: A revision number (``"3"``), a tag (``"production"``) or ``"__latest__"``.
    version = models.CharField(_("version"), max_length=100, default="__latest__")
    inputs = models.JSONField(_("inputs"), default=dict, blank=True)
    #: The conversation: given to continue one, else learned from the create answer.
    thread = models.UUIDField(_("thread"), null=True, blank=True)
    priority = models.CharField(_("priority"), max_length=16, blank=True)
    environment = models.CharField(_("environment"), max_length=200, blank=True)
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)
    #: Prompt runs only: the memory channel within the thread (empty: PromptJuggler's default).
    channel = models.CharField(_("channel"), max_length=200, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="promptjuggler_runs",
        verbose_name=_("owner"),
    )

    # -- mirrored from PromptJuggler ----------------------------------------------------------
    remote_id = models.UUIDField(_("remote id"), null=True, blank=True, unique=True)
    #: ``pending``, ``completed``, ``failed`` or a newer string, verbatim; empty until started.
    remote_status = models.CharField(_("remote status"), max_length=MAX_STATUS_LENGTH, blank=True)
    status_changed_at = models.DateTimeField(_("status changed at"), null=True, blank=True)
    #: Prompt runs: the answer text; empty for a turn of only tool calls, or before
    #: ``result_fetched_at``.
    output = models.TextField(_("output"), blank=True)
    emitted = models.JSONField(_("emitted"), default=list, blank=True)
    transcript = models.JSONField(_("transcript"), default=list, blank=True)
    #: Workflow runs: output node name → text.
    outputs = models.JSONField(_("outputs"), default=dict, blank=True)
    #: Workflow runs: node messages (non-empty does not mean failed).
    errors = models.JSONField(_("errors"), default=list, blank=True)
    #: The latest failed attempt's message, kept by PromptJuggler even when a retry recovered.
    error = models.TextField(_("error"), blank=True)
    token_usage = models.JSONField(_("token usage"), null=True, blank=True)
    total_tokens = models.PositiveIntegerField(_("tokens"), null=True, blank=True)
    cost = models.DecimalField(_("cost"), max_digits=18, decimal_places=8, null=True, blank=True)
    remote_created_at = models.DateTimeField(_("remote created at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    result_fetched_at = models.DateTimeField(_("result fetched at"), null=True, blank=True)

    # -- local send state -------------------------------------------------------------------
    send_state = models.CharField(
        _("send state"), max_length=16, choices=RunSendState.choices, default=RunSendState.QUEUED
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)

    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("run")
        verbose_name_plural = _("runs")
        ordering = ("-created_at", "-pk")
        indexes = [
            models.Index(fields=["send_state", "next_attempt_at"], name="pj_run_state_next"),
            models.Index(fields=["remote_status", "created_at"], name="pj_run_status_created"),
            models.Index(fields=["owner", "-created_at"], name="pj_run_owner_created"),
            models.Index(fields=["thread", "created_at"], name="pj_run_thread_created"),
            models.Index(fields=["-created_at", "-id"], name="pj_run_created"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.slug}@{self.version} #{self.pk}"

    @property
    def is_finished(self) -> bool:
        """PromptJuggler reported a terminal status (``completed`` or ``failed``)."""
        return self.remote_status in TERMINAL_RUN_STATUSES


#: The forward order of run statuses; a newer string ranks between ``pending`` and the end.
RUN_STATUS_RANK: dict[str, int] = {"pending": 0, "completed": 2, "failed": 2}
#: Remote run statuses after which a run changes no more.
TERMINAL_RUN_STATUSES = frozenset({"completed", "failed"})


class RemoteDeletion(models.Model):
    """A tombstone: a remote document to delete, written with the local delete.

    Removed when PromptJuggler answers 204 or 404. ``promptjuggler_sync`` drains what is left.
    """

    #: Null for an upload whose outcome was unknown when its row was deleted: reconcile then
    #: looks for a remote document no row knows with this ``file_name`` and ``file_size``.
    remote_id = models.UUIDField(_("remote id"), unique=True, null=True, blank=True)
    knowledge_base = models.ForeignKey(
        KnowledgeBase,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("knowledge base"),
    )
    knowledge_base_slug = ExactCharField(_("knowledge base slug"), max_length=200, blank=True)
    file_name = models.CharField(_("file name"), max_length=255, blank=True)
    file_size = models.BigIntegerField(_("size in bytes"), null=True, blank=True)
    reason = models.CharField(_("reason"), max_length=32, blank=True)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    next_attempt_at = models.DateTimeField(_("next attempt at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("remote deletion")
        verbose_name_plural = _("remote deletions")
        ordering = ("created_at", "pk")
        indexes = [models.Index(fields=["next_attempt_at"], name="pj_tomb_next")]

    def __str__(self) -> str:
        return f"delete {self.remote_id}"


class WebhookDelivery(models.Model):
    """One verified webhook delivery, kept for audit, deduplication and replay."""

    class EventType(models.TextChoices):
        DOCUMENT_FINISHED = "knowledgedocument.finished", "knowledgedocument.finished"
        KNOWLEDGE_BASE_FINISHED = "knowledgebase.finished", "knowledgebase.finished"
        PROMPT_RUN_FINISHED = "promptrun.finished", "promptrun.finished"
        WORKFLOW_RUN_FINISHED = "workflowrun.finished", "workflowrun.finished"
        #: A run event received on the shape-detecting URL (prompt and workflow runs look alike).
        RUN_FINISHED = "run.finished", "run.finished"
        UNKNOWN = "unknown", _("unrecognised")

    class Outcome(models.TextChoices):
        RECEIVED = "received", _("received, not yet applied")
        APPLIED = "applied", _("applied")
        DUPLICATE = "duplicate", _("duplicate")
        STALE = "stale", _("stale")
        UNKNOWN_OBJECT = "unknown_object", _("unknown object")
        UNRECOGNISED = "unrecognised", _("unrecognised")
        INVALID = "invalid", _("invalid")
        ERROR = "error", _("error")

    received_at = models.DateTimeField(_("received at"), default=timezone.now)
    event_type = models.CharField(_("event type"), max_length=32, choices=EventType.choices)
    object_id = models.CharField(
        _("object id"), max_length=MAX_ID_LENGTH, blank=True, db_index=True
    )
    status = models.CharField(_("status"), max_length=MAX_STATUS_LENGTH, blank=True)
    signature_timestamp = models.DateTimeField(_("signature timestamp"), null=True, blank=True)
    #: Index of the matching secret in the configured list (rotation audit); never the secret.
    secret_index = models.PositiveSmallIntegerField(_("secret index"), null=True, blank=True)
    #: ``sha256(t + "." + body)``: the same delivery sent twice has the same key.
    dedupe_key = models.CharField(_("dedupe key"), max_length=64, unique=True)
    body = models.TextField(_("body"), blank=True)
    body_truncated = models.BooleanField(_("body truncated"), default=False)
    #: A few request headers (user agent, content type); never the signature.
    headers = models.JSONField(_("headers"), default=dict, blank=True)
    outcome = models.CharField(
        _("outcome"), max_length=16, choices=Outcome.choices, default=Outcome.RECEIVED
    )
    detail = models.TextField(_("detail"), blank=True)
    duplicate_count = models.PositiveIntegerField(_("duplicates"), default=0)
    replay_count = models.PositiveIntegerField(_("replays"), default=0)
    processed_at = models.DateTimeField(_("processed at"), null=True, blank=True)

    class Meta:
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        ordering = ("-received_at", "-pk")
        indexes = [
            models.Index(fields=["event_type", "object_id"], name="pj_hook_event_object"),
            # The changelist's default ordering (read from the end) and prune's age filter.
            models.Index(fields=["-received_at", "-id"], name="pj_hook_received"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.object_id} ({self.outcome})"
