"""Admin for the webhook delivery log: read-only, with a Replay action.

The log is evidence (what PromptJuggler sent, when, signed with which secret, and what the app
did with it), so nobody edits it. Replay applies a logged delivery again through the same
forward-only rules as a fresh one, which makes it safe to run on anything: an old event ends
``stale``, a delivery that failed or arrived before its document's remote id was stored can
now apply. Rows can be deleted; ``promptjuggler_prune_webhooks`` does it by age.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..conf import pj_settings
from ..models import WebhookDelivery
from ..webhooks import replay_delivery
from ._scale import EstimatedCountPaginator, listed_choices

#: At most this many deliveries are replayed by one click (each is its own transaction).
MAX_REPLAY = 500


def _secret_choices() -> list[tuple[int | None, str]]:
    """One choice per configured secret, plus unsigned rows: never a DISTINCT over the log."""
    return [(i, str(i)) for i in range(len(pj_settings.webhook_secrets))] + [(None, "—")]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The delivery log. Needs the change permission for Replay; nothing can be edited."""

    list_display = (
        "received_at",
        "event",
        "short_object_id",
        "status",
        "outcome_and_repeats",
        "secret_number",
    )
    # A log of a million rows: every filter's choices are known up front (no DISTINCT over the
    # table), no date hierarchy (one DISTINCT per level; the received_at filter covers it),
    # counts bounded, the default ordering served by an index.
    list_filter = (
        "outcome",
        "event_type",
        ("secret_index", listed_choices(_secret_choices)),
        "body_truncated",
        "received_at",
    )
    search_fields = ("=object_id", "=dedupe_key", "detail")
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = ("replay",)
    fieldsets = (
        (
            None,
            {"fields": ("event_type", "object_id", "status", "outcome", "detail")},
        ),
        (
            _("Delivery"),
            {
                "fields": (
                    "received_at",
                    "processed_at",
                    "signature_timestamp",
                    "secret_index",
                    "duplicate_count",
                    "replay_count",
                    "dedupe_key",
                )
            },
        ),
        (_("Request"), {"fields": ("formatted_body", "body_truncated", "formatted_headers")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [field for fieldset in self.fieldsets for field in fieldset[1]["fields"]]

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookDelivery]:
        # Bodies are only shown one at a time: leave them out of the list's query.
        return super().get_queryset(request).defer("body", "headers")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_replay_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    class Media:
        css = {"all": ("promptjuggler_django/admin.css",)}

    # "knowledgedocument.finished" is the widest cell of the list: let it break after the dot.
    @admin.display(description=_("event type"), ordering="event_type")
    def event(self, obj: WebhookDelivery) -> SafeString:
        kind, dot, rest = obj.get_event_type_display().partition(".")
        return format_html("{}{}<wbr>{}", kind, dot, rest)

    # Four-line UUIDs made the changelist wider than a 1280 px screen: show the first block, keep
    # the whole id in the tooltip (search takes the full id).
    @admin.display(description=_("object"), ordering="object_id")
    def short_object_id(self, obj: WebhookDelivery) -> SafeString:
        return format_html('<code title="{}">{}</code>', obj.object_id, (obj.object_id or "—")[:8])

    # Two columns of counts, mostly zeros, pushed the list past 1280 px: how often a delivery came
    # again or was replayed is a note under what the app did with it.
    @admin.display(description=_("outcome"), ordering="outcome")
    def outcome_and_repeats(self, obj: WebhookDelivery) -> SafeString:
        repeats = []
        if obj.duplicate_count:
            repeats.append(
                ngettext("%(count)d duplicate", "%(count)d duplicates", obj.duplicate_count)
                % {"count": obj.duplicate_count}
            )
        if obj.replay_count:
            repeats.append(
                ngettext("%(count)d replay", "%(count)d replays", obj.replay_count)
                % {"count": obj.replay_count}
            )
        if not repeats:
            return format_html("{}", obj.get_outcome_display())
        return format_html(
            '{}<br><small class="pj-repeats">{}</small>',
            obj.get_outcome_display(),
            ", ".join(repeats),
        )

    @admin.display(description=_("secret #"), ordering="secret_index")
    def secret_number(self, obj: WebhookDelivery) -> Any:
        return "—" if obj.secret_index is None else obj.secret_index

    @admin.display(description=_("body"))
    def formatted_body(self, obj: WebhookDelivery) -> SafeString:
        text = obj.body
        # A body that is not JSON (or nests too deep to pretty-print) is shown as received.
        with contextlib.suppress(ValueError, RecursionError):
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', text)

    @admin.display(description=_("headers"))
    def formatted_headers(self, obj: WebhookDelivery) -> SafeString:
        text = json.dumps(obj.headers, indent=2, ensure_ascii=False)
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', text)

    @admin.action(description=_("Replay selected deliveries"), permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        ids = list(queryset.order_by("received_at", "pk").values_list("pk", flat=True))
        if len(ids) > MAX_REPLAY:
            self.message_user(
                request,
                _("Select at most %(max)d deliveries to replay at once.") % {"max": MAX_REPLAY},
                messages.ERROR,
            )
            return
        outcomes: Counter[str] = Counter()
        for delivery_id in ids:
            outcome = replay_delivery(delivery_id)
            if outcome is not None:
                outcomes[outcome] += 1
        labels = dict(WebhookDelivery.Outcome.choices)
        summary = ", ".join(f"{count} {labels[o]}" for o, count in sorted(outcomes.items()))
        total = sum(outcomes.values())
        message = ngettext(
            "Replayed %(count)d delivery: %(summary)s.",
            "Replayed %(count)d deliveries: %(summary)s.",
            total,
        ) % {"count": total, "summary": summary or "-"}
        level = messages.WARNING if outcomes[WebhookDelivery.Outcome.ERROR] else messages.SUCCESS
        self.message_user(request, message, level)
