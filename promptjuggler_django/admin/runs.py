"""Admin for runs: read-only for now, a record of what was started, what it cost and what came back.

Starting runs and resolving a run that needs review (the POST may have reached PromptJuggler)
come with the runs engine; until then nothing here can add, change or send a run, so the admin
cannot start a billed run by accident.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from ..models import Run
from ._scale import EstimatedCountPaginator

#: Characters of a run's output shown in the list.
OUTPUT_PREVIEW = 80


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Runs, newest first. View-only: every field is read-only and nothing can be added."""

    list_display = (
        "created_at",
        "kind",
        "slug",
        "version",
        "send_state",
        "remote_status",
        "output_preview",
        "total_tokens",
        "cost",
        "owner",
    )
    # Choices known up front: no DISTINCT over the table for a filter.
    list_filter = ("kind", "send_state", "created_at")
    search_fields = ("slug", "=remote_id", "=thread")
    list_select_related = ("owner",)
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    fieldsets = (
        (
            None,
            {"fields": ("kind", "slug", "version", "owner", "inputs", "thread", "metadata")},
        ),
        (_("Options"), {"fields": ("priority", "environment", "channel")}),
        (
            _("Sending"),
            {"fields": ("send_state", "attempts", "last_error", "next_attempt_at", "sent_at")},
        ),
        (
            _("PromptJuggler"),
            {
                "fields": (
                    "remote_id",
                    "remote_status",
                    "status_changed_at",
                    "remote_created_at",
                    "finished_at",
                    "result_fetched_at",
                )
            },
        ),
        (
            _("Result"),
            {
                "fields": (
                    "output",
                    "outputs",
                    "error",
                    "errors",
                    "emitted",
                    "transcript",
                    "token_usage",
                    "total_tokens",
                    "cost",
                )
            },
        ),
        (_("Record"), {"fields": ("created_at", "updated_at")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]

    def get_queryset(self, request: HttpRequest) -> Any:
        # Transcripts can be long: the list shows only a preview of the output.
        return super().get_queryset(request).defer("transcript", "emitted", "token_usage")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("output"))
    def output_preview(self, obj: Run) -> str:
        if obj.output:
            return Truncator(obj.output).chars(OUTPUT_PREVIEW)
        if obj.outputs:
            return Truncator(", ".join(f"{k}: {v}" for k, v in obj.outputs.items())).chars(
                OUTPUT_PREVIEW
            )
        return Truncator(obj.error).chars(OUTPUT_PREVIEW) if obj.error else "—"
