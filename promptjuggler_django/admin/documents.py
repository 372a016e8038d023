"""Admin for knowledge bases, documents and remote deletions.

The admin only saves and deletes rows; the app's receivers push and remove the remote copies
after commit, so every path (the change form, the multi-file upload, the bulk delete action) goes
through the same outbox as the rest of the app. Django's bulk delete calls ``QuerySet.delete()``,
which still sends ``post_delete`` for each row, so each one leaves a tombstone.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from .. import sync
from ..display import badge, badge_label, remote_status_badge, sync_state_badge
from ..filetypes import guess_content_type
from ..forms import DocumentUploadForm, report_refused_files, validate_document_file
from ..models import DOCUMENT_STATUS_RANK, KnowledgeBase, KnowledgeDocument, RemoteDeletion
from ..uploadhandlers import UploadSizeLimitHandler, upload_refusal
from ..uploadtargets import NOT_ALLOWED, fallback_knowledge_base, uploadable_knowledge_bases
from ._scale import EstimatedCountPaginator, RelatedWithRowsFilter, listed_choices

#: The documents shown on a knowledge base's change page (the rest are one click away).
RECENT_DOCUMENTS = 10

_CSS = {"all": ("promptjuggler_django/documents.css", "promptjuggler_django/admin.css")}


def _remote_status_choices() -> list[tuple[str, str]]:
    """The statuses PromptJuggler documents (others are found by search or sort)."""
    return [(status, badge_label(status)) for status in DOCUMENT_STATUS_RANK]


@admin.register(KnowledgeBase)
class KnowledgeBaseAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Knowledge bases: the slug is local; status and counts are mirrored from PromptJuggler."""

    list_display = (
        "__str__",
        "slug",
        "status_badge",
        "remote_document_count",
        "remote_chunk_count",
        "local_documents",
        "last_sync",
        "blocked",
    )
    list_filter = ("status",)
    search_fields = ("slug", "name", "remote_id")
    actions = ("refresh_from_api",)
    readonly_fields = (
        "remote_id",
        "status_badge",
        "document_count",
        "chunk_count",
        "status_changed_at",
        "last_synced_at",
        "blocked_reason",
        "blocked_at",
        "blocked_attempts",
        "blocked_until",
        "created_at",
        "updated_at",
        "recent_documents",
    )
    fieldsets = (
        (None, {"fields": ("slug", "name")}),
        (
            _("PromptJuggler"),
            {
                "fields": (
                    "remote_id",
                    "status_badge",
                    "document_count",
                    "chunk_count",
                    "status_changed_at",
                    "last_synced_at",
                )
            },
        ),
        (
            _("Refused by PromptJuggler"),
            {
                "fields": ("blocked_reason", "blocked_at", "blocked_attempts", "blocked_until"),
                "description": _(
                    "PromptJuggler refused this knowledge base as a whole (a bad key, an unknown "
                    "slug). Its documents wait without spending attempts and go by themselves on "
                    "the first try after the fix; promptjuggler_sync tries at once."
                ),
            },
        ),
        (_("Documents"), {"fields": ("recent_documents",)}),
        (_("Dates"), {"fields": ("created_at", "updated_at"), "classes": ("collapse",)}),
    )

    class Media:
        css = _CSS

    def get_queryset(self, request: HttpRequest) -> QuerySet[KnowledgeBase]:
        queryset: QuerySet[KnowledgeBase] = super().get_queryset(request)
        return queryset.annotate(local_document_count=Count("documents"))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # The slug is the API handle the documents were pushed to: changing it would strand them.
        fields = super().get_readonly_fields(request, obj)
        return ("slug", *fields) if obj is not None else fields

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: KnowledgeBase) -> SafeString:
        return remote_status_badge(obj.status, KnowledgeBase.Status.choices)

    # PromptJuggler's own figures, as of the last sync: said in the column names so nobody takes
    # them for the local rows (next column) or for live numbers.
    @admin.display(description=_("documents (PromptJuggler)"), ordering="document_count")
    def remote_document_count(self, obj: KnowledgeBase) -> Any:
        return "—" if obj.document_count is None else obj.document_count

    @admin.display(description=_("chunks (PromptJuggler)"), ordering="chunk_count")
    def remote_chunk_count(self, obj: KnowledgeBase) -> Any:
        return "—" if obj.chunk_count is None else obj.chunk_count

    @admin.display(description=_("last sync"), ordering="last_synced_at")
    def last_sync(self, obj: KnowledgeBase) -> Any:
        return obj.last_synced_at or _("never")

    @admin.display(description=_("blocked"), ordering="blocked_at")
    def blocked(self, obj: KnowledgeBase) -> Any:
        if not obj.is_blocked:
            return "—"
        return badge(_("Blocked"), "danger", title=obj.blocked_reason)

    @admin.display(description=_("local documents"), ordering="local_document_count")
    def local_documents(self, obj: KnowledgeBase) -> SafeString:
        url = _changelist_url(KnowledgeDocument, self.admin_site.name)
        url += f"?knowledge_base__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj.local_document_count)  # type: ignore[attr-defined]

    @admin.display(description=_("latest documents"))
    def recent_documents(self, obj: KnowledgeBase) -> SafeString:
        if obj.pk is None:
            return SafeString("—")
        documents = list(obj.documents.order_by("-created_at", "-pk")[:RECENT_DOCUMENTS])
        if not documents:
            return SafeString(_("No documents yet."))
        rows = format_html_join(
            "",
            '<li><a href="{}">{}</a> {} {}</li>',
            (
                (
                    reverse(
                        _admin_url_name(KnowledgeDocument, "change", self.admin_site.name),
                        args=[d.pk],
                    ),
                    d,
                    sync_state_badge(d),
                    remote_status_badge(d.remote_status),
                )
                for d in documents
            ),
        )
        url = _changelist_url(KnowledgeDocument, self.admin_site.name)
        url += f"?knowledge_base__id__exact={obj.pk}"
        return format_html(
            '<ul class="pj-admin-list">{}</ul><a href="{}">{}</a>',
            rows,
            url,
            _("All documents of this knowledge base"),
        )

    # It calls the API and writes the knowledge base and its documents: viewing is not enough.
    @admin.action(
        description=_("Refresh status and counts from PromptJuggler"), permissions=["change"]
    )
    def refresh_from_api(self, request: HttpRequest, queryset: QuerySet[KnowledgeBase]) -> None:
        for knowledge_base in queryset:
            report = sync.refresh_knowledge_base(knowledge_base)
            if report.error:
                messages.error(
                    request,
                    _("Could not refresh %(kb)s: %(error)s")
                    % {"kb": knowledge_base, "error": report.error},
                )
                continue
            knowledge_base.refresh_from_db()
            messages.success(
                request,
                _(
                    "%(kb)s: %(status)s, %(documents)d documents, %(chunks)d chunks; "
                    "%(changes)d document statuses updated."
                )
                % {
                    "kb": knowledge_base,
                    "status": knowledge_base.status or "—",
                    "documents": knowledge_base.document_count,
                    "chunks": knowledge_base.chunk_count,
                    "changes": report.status_changes,
                },
            )
            if report.missing or report.orphans:
                messages.warning(
                    request,
                    _(
                        "%(kb)s: %(missing)d documents are missing in PromptJuggler and "
                        "%(orphans)d remote documents are unknown here; run "
                        "promptjuggler_sync to reconcile them."
                    )
                    % {
                        "kb": knowledge_base,
                        "missing": len(report.missing),
                        "orphans": len(report.orphans),
                    },
                )


@admin.register(KnowledgeDocument)
class KnowledgeDocumentAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Documents: badges for both states, the push and refresh actions, and a multi-file upload."""

    change_list_template = "promptjuggler_django/admin/document_change_list.html"
    #: An unknown chunk count (a status learned by polling) shows as a dash, never as 0.
    empty_value_display = "—"
    upload_template = "promptjuggler_django/admin/document_upload.html"
    list_display = (
        "__str__",
        "knowledge_base",
        "owner",
        "sync_state_badge",
        "remote_status_badge",
        "chunk_count",
        "created_at",
    )
    # Sized for a million rows: choices known up front or read from the small side (no
    # DISTINCT over the documents), counts bounded, the default ordering served by an index.
    list_filter = (
        "sync_state",
        ("remote_status", listed_choices(_remote_status_choices)),
        "knowledge_base",
        ("owner", RelatedWithRowsFilter),
    )
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_select_related = ("knowledge_base", "owner")
    search_fields = ("file_name", "remote_id")
    raw_id_fields = ("owner",)
    # Django's "Delete selected" action stays: it sends post_delete per row (tombstones).
    actions = ("push_again", "refresh_status")
    readonly_fields = (
        "remote_id",
        "remote_status_badge",
        "chunk_count",
        "status_changed_at",
        "sync_state_badge",
        "attempts",
        "last_error",
        "next_attempt_at",
        "pushed_at",
        "file_name",
        "file_size",
        "content_type",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("knowledge_base", "owner", "file")}),
        (
            _("PromptJuggler"),
            {"fields": ("remote_id", "remote_status_badge", "chunk_count", "status_changed_at")},
        ),
        (
            _("Push"),
            {
                "fields": (
                    "sync_state_badge",
                    "attempts",
                    "last_error",
                    "next_attempt_at",
                    "pushed_at",
                )
            },
        ),
        (
            _("File"),
            {"fields": ("file_name", "file_size", "content_type", "created_at", "updated_at")},
        ),
    )

    class Media:
        css = _CSS

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "file" and formfield is not None:
            # The change form takes a file as the upload page does: the same limits and checks.
            formfield.validators = [*formfield.validators, validate_document_file]
        return formfield

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "knowledge_base":
            # The add form is an upload too: the same rule as the upload view, page and API.
            kwargs["queryset"] = uploadable_knowledge_bases(request)
            kwargs.setdefault("error_messages", {"invalid_choice": NOT_ALLOWED})
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # A pushed document lives in its knowledge base; moving it would need a delete and a
        # new upload, so the knowledge base is fixed once the row exists.
        fields = super().get_readonly_fields(request, obj)
        return ("knowledge_base", *fields) if obj is not None else fields

    def save_model(
        self, request: HttpRequest, obj: KnowledgeDocument, form: ModelForm[Any], change: bool
    ) -> None:
        if "file" in form.changed_data and obj.file:
            uploaded = form.cleaned_data["file"]
            name = getattr(uploaded, "name", "") or obj.file.name or ""
            obj.file_name = name.rsplit("/", 1)[-1]
            obj.file_size = getattr(uploaded, "size", None)
            obj.content_type = guess_content_type(obj.file_name)  # never the browser's guess
        super().save_model(request, obj, form, change)

    @admin.display(description=_("sync state"), ordering="sync_state")
    def sync_state_badge(self, obj: KnowledgeDocument) -> SafeString:
        return sync_state_badge(obj)

    @admin.display(description=_("remote status"), ordering="remote_status")
    def remote_status_badge(self, obj: KnowledgeDocument) -> SafeString:
        return remote_status_badge(obj.remote_status)

    @admin.action(description=_("Push selected documents again"), permissions=["change"])
    def push_again(self, request: HttpRequest, queryset: QuerySet[KnowledgeDocument]) -> None:
        count = sync.push_again(queryset)
        messages.success(
            request,
            ngettext(
                "%(count)d document queued to be pushed again.",
                "%(count)d documents queued to be pushed again.",
                count,
            )
            % {"count": count},
        )

    # It calls the API and writes the documents' statuses: viewing is not enough.
    @admin.action(description=_("Refresh status from PromptJuggler"), permissions=["change"])
    def refresh_status(self, request: HttpRequest, queryset: QuerySet[KnowledgeDocument]) -> None:
        documents = list(queryset.filter(remote_id__isnull=False))
        changed = sync.refresh_documents(documents)
        messages.success(
            request,
            ngettext(
                "Checked %(count)d pushed document; %(changed)d status changed.",
                "Checked %(count)d pushed documents; %(changed)d statuses changed.",
                len(documents),
            )
            % {"count": len(documents), "changed": changed},
        )

    def get_urls(self) -> list[URLPattern]:
        upload = path(
            "upload/",
            self.admin_site.admin_view(csrf_exempt(self._upload_view_with_size_limit)),
            name=_admin_url_name(KnowledgeDocument, "upload"),
        )
        return [upload, *super().get_urls()]

    def _upload_view_with_size_limit(self, request: HttpRequest) -> HttpResponse:
        # The size limit must stand in front before the CSRF check reads the body: the URL is
        # exempt from the middleware's check (and from admin_view's), made here right after.
        UploadSizeLimitHandler.install(request)
        return csrf_protect(self.upload_view)(request)

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        """Upload several files at once into a chosen knowledge base, owned by the admin."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        request.current_app = self.admin_site.name
        # The app's upload rule: by default, staff who may add documents may upload into
        # every knowledge base (UPLOAD_KNOWLEDGE_BASES_CALLBACK decides otherwise).
        knowledge_bases = uploadable_knowledge_bases(request)
        initial = fallback_knowledge_base(knowledge_bases) or knowledge_bases.first()
        if request.method == "POST":
            form = DocumentUploadForm(
                request.POST,
                request.FILES,
                knowledge_bases=knowledge_bases,
                refused_upload=upload_refusal(request),
                keep_good_files=True,
            )
            if form.is_valid():
                documents = form.save(owner=request.user)
                for document in documents:
                    self.log_addition(request, document, [{"added": {}}])
                messages.success(
                    request,
                    ngettext(
                        "%(count)d document uploaded; it is pushed to PromptJuggler after saving.",
                        "%(count)d documents uploaded; they are pushed to PromptJuggler after "
                        "saving.",
                        len(documents),
                    )
                    % {"count": len(documents)},
                )
                report_refused_files(request, form)
                return HttpResponseRedirect(
                    _changelist_url(KnowledgeDocument, self.admin_site.name)
                )
        else:
            form = DocumentUploadForm(knowledge_bases=knowledge_bases, knowledge_base=initial)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Upload documents"),
            "form": form,
            "has_knowledge_base": knowledge_bases.exists(),
            "add_url": reverse(_admin_url_name(KnowledgeBase, "add", self.admin_site.name)),
        }
        return TemplateResponse(request, self.upload_template, context)


@admin.register(RemoteDeletion)
class RemoteDeletionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Pending remote deletes (tombstones), read-only: ``promptjuggler_sync`` drains them."""

    list_display = (
        "remote_id",
        "file_name",
        "knowledge_base_slug",
        "reason",
        "attempts",
        "next_attempt_at",
        "created_at",
    )
    list_filter = ("reason",)
    search_fields = ("remote_id", "file_name", "knowledge_base_slug")
    readonly_fields = (
        "remote_id",
        "knowledge_base",
        "knowledge_base_slug",
        "file_name",
        "reason",
        "attempts",
        "last_error",
        "next_attempt_at",
        "created_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _admin_url_name(model: type[Any], view: str, site: str | None = None) -> str:
    name = f"{model._meta.app_label}_{model._meta.model_name}_{view}"
    return f"{site}:{name}" if site else name


def _changelist_url(model: type[Any], site: str) -> str:
    return reverse(_admin_url_name(model, "changelist", site))
