"""End-user pages: the documents (upload, "my documents", detail, delete, live status) and Ask.

Every view is scoped to the signed-in user's own documents (another user's document is a 404,
never a 403, so ids reveal nothing). Views only create and delete rows; the app's receivers push
and remove the remote copies after commit. Templates live under ``promptjuggler_django/`` and all
extend ``promptjuggler_django/base.html``, which a project overrides to use its own layout.
Subclass a view and route it yourself to change the queryset, the knowledge base or the template.

The Ask page starts only the prompt settings name (``ASK_PROMPT``), for the signed-in user, and
shows the user's own conversations; without ``ASK_PROMPT`` it is a 404 (see :mod:`.asking`).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.forms import Form
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse, reverse_lazy
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views import View
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.generic import DeleteView, DetailView, FormView, ListView

from .asking import (
    AskConfig,
    AskForm,
    AskRefused,
    ask,
    ask_config,
    ask_runs,
    conversation,
    run_payload,
)
from .conf import pj_settings
from .display import phase_payload
from .forms import DocumentUploadForm, report_refused_files
from .models import KnowledgeBase, KnowledgeDocument, Run
from .uploadhandlers import UploadSizeLimitHandler, upload_refusal
from .uploadtargets import fallback_knowledge_base, uploadable_knowledge_bases

__all__ = [
    "AskStatusView",
    "AskView",
    "AskingMixin",
    "DocumentDeleteView",
    "DocumentDetailView",
    "DocumentListView",
    "DocumentStatusView",
    "DocumentUploadView",
    "OwnedDocumentsMixin",
    "urlpatterns",
]

#: How often the live-status script asks for news, in milliseconds.
POLL_INTERVAL_MS = 2000
#: The most documents one live-status request may ask about.
STATUS_MAX_IDS = 100


class OwnedDocumentsMixin(LoginRequiredMixin):
    """Limit a view to the signed-in user's documents. Override :meth:`get_queryset` to widen it."""

    request: HttpRequest

    def get_queryset(self) -> QuerySet[KnowledgeDocument]:
        return KnowledgeDocument.objects.owned_by(self.request.user).select_related(
            "knowledge_base"
        )

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context: dict[str, Any] = super().get_context_data(**kwargs)  # type: ignore[misc]
        context["pj_status_url"] = reverse("promptjuggler_django:document_status")
        context["pj_poll_interval"] = POLL_INTERVAL_MS
        return context


class DocumentListView(OwnedDocumentsMixin, ListView):  # type: ignore[type-arg]
    """ "My documents": the user's documents, newest first, with their live status."""

    template_name = "promptjuggler_django/document_list.html"
    context_object_name = "documents"
    paginate_by = 25


class DocumentUploadView(OwnedDocumentsMixin, FormView):  # type: ignore[type-arg]
    """Upload one or several files into a knowledge base the user may upload into.

    ``DEFAULT_KNOWLEDGE_BASE`` by default; the page offers a choice when the upload rule
    (``UPLOAD_KNOWLEDGE_BASES_CALLBACK``) allows the user several, and answers 403 when it
    allows none.
    """

    template_name = "promptjuggler_django/document_upload.html"
    form_class = DocumentUploadForm
    success_url = reverse_lazy("promptjuggler_django:document_list")
    #: How many of the user's latest documents the page lists under the form.
    recent_count = 5
    #: A file of the wrong type does not throw away the good ones chosen with it: they are
    #: uploaded and the page says why each other one was not.
    keep_good_files = True

    @method_decorator(csrf_exempt)
    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        # The size limit must stand in front before the CSRF check reads the body, so the view
        # is exempt from the middleware's check and makes it itself, right after.
        UploadSizeLimitHandler.install(request)
        return self._dispatch_checked(request, *args, **kwargs)

    @method_decorator(csrf_protect)
    def _dispatch_checked(
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        return super().dispatch(request, *args, **kwargs)

    def get_knowledge_bases(self) -> QuerySet[KnowledgeBase]:
        """The knowledge bases the user may upload into: the app's upload rule, shared with the
        admin and the REST API. Override to change it for this page only."""
        return uploadable_knowledge_bases(self.request)

    def get_knowledge_base(self) -> KnowledgeBase | None:
        """The knowledge base preselected when the user may choose among several:
        ``DEFAULT_KNOWLEDGE_BASE`` when allowed. Override to preselect per user, group, …"""
        return fallback_knowledge_base(self.get_knowledge_bases())

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = super().get_form_kwargs()
        allowed = self.get_knowledge_bases()
        choices = list(allowed[:2])
        if not choices:
            raise PermissionDenied(_("You may not upload documents."))
        if len(choices) > 1:
            kwargs["knowledge_bases"] = allowed
            kwargs["knowledge_base"] = self.get_knowledge_base()
        else:
            kwargs["knowledge_base"] = choices[0]
        kwargs["keep_good_files"] = self.keep_good_files
        if "files" in kwargs:  # a POST: the upload may have been stopped at the size limit
            kwargs["refused_upload"] = upload_refusal(self.request)
        return kwargs

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["recent_documents"] = list(self.get_queryset()[: self.recent_count])
        # The script warns before submitting a file the form would refuse.
        context["pj_max_upload_size"] = pj_settings.MAX_UPLOAD_SIZE
        context["pj_max_upload_size_label"] = filesizeformat(pj_settings.MAX_UPLOAD_SIZE)
        return context

    def form_valid(self, form: Form) -> HttpResponse:
        assert isinstance(form, DocumentUploadForm)
        documents = form.save(owner=self.request.user)
        count = len(documents)
        messages.success(
            self.request,
            ngettext(
                "%(count)d document uploaded. It is being sent to the knowledge base.",
                "%(count)d documents uploaded. They are being sent to the knowledge base.",
                count,
            )
            % {"count": count},
        )
        report_refused_files(self.request, form)
        if self.request.headers.get("X-PJ-Upload") == "progress":
            # The page's script sent it (to show progress): it goes to the list itself, and the
            # messages wait there as after a redirect.
            return JsonResponse({"location": str(self.get_success_url())})
        return super().form_valid(form)


class DocumentDetailView(OwnedDocumentsMixin, DetailView):  # type: ignore[type-arg]
    """One of the user's documents, with its live status and the last error, if any."""

    template_name = "promptjuggler_django/document_detail.html"
    context_object_name = "document"


class DocumentDeleteView(OwnedDocumentsMixin, DeleteView):  # type: ignore[type-arg]
    """Delete one of the user's documents; the remote copy is removed after commit."""

    template_name = "promptjuggler_django/document_confirm_delete.html"
    context_object_name = "document"
    success_url = reverse_lazy("promptjuggler_django:document_list")

    def form_valid(self, form: Form) -> HttpResponse:
        name = str(self.get_object())
        response = super().form_valid(form)
        messages.success(self.request, _("“%(name)s” was deleted.") % {"name": name})
        return response


class DocumentStatusView(LoginRequiredMixin, View):
    """``GET ?ids=1,2,3`` → the current status of those of the user's documents (JSON).

    Polled by ``promptjuggler_django/documents.js`` to update badges without a reload. A
    document that is gone (or not the user's) is simply absent from the answer.
    """

    #: A script asking while signed out gets a 403, not a redirect to the login page.
    raise_exception = True

    def get_queryset(self) -> QuerySet[KnowledgeDocument]:
        return KnowledgeDocument.objects.owned_by(self.request.user)

    def get(self, request: HttpRequest) -> JsonResponse:
        ids = requested_ids(request)
        if isinstance(ids, JsonResponse):
            return ids
        documents = self.get_queryset().filter(pk__in=ids) if ids else []
        payload = []
        for document in documents:
            item = phase_payload(document)
            if item["phase"] in ("upload_failed", "failed") and document.last_error:
                item["error"] = document.last_error
            payload.append(item)
        return JsonResponse({"documents": payload, "poll_interval_ms": POLL_INTERVAL_MS})


def requested_ids(request: HttpRequest) -> list[int] | JsonResponse:
    """The ``?ids=1,2,3`` a live-status script asks about, or the 400 that refuses them."""
    raw = [part for part in request.GET.get("ids", "").split(",") if part.strip()]
    if len(raw) > STATUS_MAX_IDS:
        return JsonResponse(
            {"error": _("Ask for at most %(max)d at a time.") % {"max": STATUS_MAX_IDS}},
            status=400,
        )
    try:
        return [int(part) for part in raw]
    except ValueError:
        return JsonResponse({"error": _("ids must be integers.")}, status=400)


class AskingMixin(LoginRequiredMixin):
    """What the Ask views share: the prompt questions start."""

    request: HttpRequest

    def get_ask_config(self) -> AskConfig | None:
        """The prompt to start, ``ASK_PROMPT`` by default (``None``: asking is off, a 404).

        Override to choose one per user, e.g. a prompt that searches the user's own knowledge
        base; never take it from the request.
        """
        return ask_config()


class AskView(AskingMixin, FormView):  # type: ignore[type-arg]
    """Ask the knowledge base: a question box, and at ``ask/<pk>/`` the conversation of run
    ``pk`` (the user's runs in its thread) with a box for a follow-up.

    A question starts ``ASK_PROMPT`` (never a prompt the request names) and redirects to its
    conversation, where ``promptjuggler_django/documents.js`` shows the answer when it lands.
    Another user's run is a 404; without ``ASK_PROMPT`` every request is.
    """

    template_name = "promptjuggler_django/ask.html"
    form_class = AskForm
    #: How many of the user's latest conversations the page links to.
    recent_count = 5

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        config = self.get_ask_config()
        if config is None:
            raise Http404('Asking is off: settings.PROMPTJUGGLER["ASK_PROMPT"] is not set.')
        self.config: AskConfig = config
        return super().dispatch(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Run]:
        """The user's runs of the ask prompt. Override to widen it."""
        return ask_runs(self.request.user, self.config)

    def get_conversation(self) -> list[Run]:
        """The runs shown, oldest first: run ``pk``'s thread, or none on the blank page."""
        pk = self.kwargs.get("pk")
        if pk is None:
            return []
        run = get_object_or_404(self.get_queryset(), pk=pk)
        return list(conversation(run).filter(pk__in=self.get_queryset().values("pk")))

    def get_recent(self) -> list[Run]:
        """The first question of each of the user's latest conversations (one per thread)."""
        seen: set[Any] = set()
        recent: list[Run] = []
        for run in self.get_queryset().order_by("-created_at", "-pk")[: self.recent_count * 10]:
            key = run.thread or run.pk
            if key not in seen:
                seen.add(key)
                recent.append(run)
        return recent[: self.recent_count]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        turns = [{**run_payload(run), "run": run} for run in self.get_conversation()]
        threaded = [turn["run"] for turn in turns if turn["run"].thread is not None]
        context["turns"] = turns
        context["follow_up_of"] = threaded[-1].pk if threaded else None
        context["waiting"] = any(not turn["final"] for turn in turns)
        context["recent_questions"] = [
            {**run_payload(run), "run": run} for run in self.get_recent()
        ]
        context["pj_ask_status_url"] = reverse("promptjuggler_django:ask_status")
        context["pj_poll_interval"] = POLL_INTERVAL_MS
        return context

    def form_valid(self, form: Form) -> HttpResponse:
        try:
            run = ask(
                self.request.user,
                form.cleaned_data["question"],
                previous=form.cleaned_data.get("previous"),
                config=self.config,
            )
        except AskRefused as refusal:
            if refusal.code == "unknown_previous":
                raise Http404(str(refusal)) from None
            form.add_error(None, str(refusal))
            return self.form_invalid(form)
        url = reverse("promptjuggler_django:ask_conversation", args=[run.pk])
        return HttpResponseRedirect(f"{url}#pj-run-{run.pk}")


class AskStatusView(AskingMixin, View):
    """``GET ?ids=1,2`` → those of the user's questions, with answers and sources (JSON).

    Polled by ``promptjuggler_django/documents.js``; a run that is not the user's is absent.
    """

    raise_exception = True

    def get(self, request: HttpRequest) -> JsonResponse:
        config = self.get_ask_config()
        if config is None:
            return JsonResponse({"error": _("Asking is not set up on this site.")}, status=404)
        ids = requested_ids(request)
        if isinstance(ids, JsonResponse):
            return ids
        found = ask_runs(request.user, config).filter(pk__in=ids) if ids else []
        payload = [run_payload(run) for run in found]
        return JsonResponse({"runs": payload, "poll_interval_ms": POLL_INTERVAL_MS})


urlpatterns = [
    path("documents/", DocumentListView.as_view(), name="document_list"),
    path("documents/upload/", DocumentUploadView.as_view(), name="document_upload"),
    path("documents/status/", DocumentStatusView.as_view(), name="document_status"),
    path("documents/<int:pk>/", DocumentDetailView.as_view(), name="document_detail"),
    path("documents/<int:pk>/delete/", DocumentDeleteView.as_view(), name="document_delete"),
    path("ask/", AskView.as_view(), name="ask"),
    path("ask/status/", AskStatusView.as_view(), name="ask_status"),
    path("ask/<int:pk>/", AskView.as_view(), name="ask_conversation"),
]
