"""Admin for runs: a record of what was started, what it cost and what came back, and the two
decisions a run in review needs from a person.

Nothing here adds or edits a run: every field is read-only. A run in review (its create request
may have reached PromptJuggler) is resolved by one of two actions, each behind a confirmation
page that says what it risks: "it was not created: send again" (a second, billed run if it
was) and "abandon" (a run that was created still runs and is billed, and its result is not
fetched). Both need the change permission on runs.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..models import Run, RunSendState
from ..runs import METADATA_KEY, abandon, resend
from ._scale import EstimatedCountPaginator

#: What each review action risks, shown on its confirmation page.
RISKS = {
    "resend_runs": _(
        "Only do this after checking PromptJuggler: look for a run whose metadata has "
        "%(key)s set to the local id. If PromptJuggler did create the run, sending again "
        "starts a second run, and both are billed."
    ),
    "abandon_runs": _(
        "Nothing will send these runs again. If PromptJuggler did create a run, it still runs "
        "and is billed, and its result is not fetched here."
    ),
}

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
        # A run's page is a record, never a form (obj given); the change permission itself
        # (obj None) is what the review actions require.
        return obj is None and super().has_change_permission(request)

    @admin.action(
        description=_("It was not created: send again (runs in review or failed)"),
        permissions=["change"],
    )
    def resend_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> Any:
        if "confirm" not in request.POST:
            return self._confirm(request, queryset, "resend_runs")
        count = resend(queryset)
        self.message_user(
            request,
            ngettext(
                "%(count)d run queued to be sent again.",
                "%(count)d runs queued to be sent again.",
                count,
            )
            % {"count": count},
            messages.SUCCESS if count else messages.WARNING,
        )
        return None

    @admin.action(description=_("Abandon (runs in review)"), permissions=["change"])
    def abandon_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> Any:
        if "confirm" not in request.POST:
            return self._confirm(request, queryset, "abandon_runs")
        who = request.user.get_username() if request.user.is_authenticated else "?"
        count = abandon(queryset, f"by {who} in the admin")
        self.message_user(
            request,
            ngettext("%(count)d run abandoned.", "%(count)d runs abandoned.", count)
            % {"count": count},
            messages.SUCCESS if count else messages.WARNING,
        )
        return None

    actions = ("resend_runs", "abandon_runs")

    def _confirm(self, request: HttpRequest, queryset: QuerySet[Run], action: str) -> Any:
        eligible = (
            (RunSendState.NEEDS_REVIEW, RunSendState.FAILED)
            if action == "resend_runs"
            else (RunSendState.NEEDS_REVIEW,)
        )
        chosen = queryset.filter(send_state__in=eligible, remote_id__isnull=True)
        context = {
            **self.admin_site.each_context(request),
            "title": getattr(self, action).short_description,
            "opts": self.model._meta,
            "action": action,
            "runs": list(chosen[:100]),
            "count": chosen.count(),
            "skipped": queryset.count() - chosen.count(),
            "risk": RISKS[action] % {"key": METADATA_KEY},
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "select_across": request.POST.get("select_across", "0"),
            "index": request.POST.get("index", "0"),
        }
        return TemplateResponse(
            request, "admin/promptjuggler_django/run/confirm_action.html", context
        )

    @admin.display(description=_("output"))
    def output_preview(self, obj: Run) -> str:
        if obj.output:
            return Truncator(obj.output).chars(OUTPUT_PREVIEW)
        if obj.outputs:
            return Truncator(", ".join(f"{k}: {v}" for k, v in obj.outputs.items())).chars(
                OUTPUT_PREVIEW
            )
        return Truncator(obj.error).chars(OUTPUT_PREVIEW) if obj.error else "—"
