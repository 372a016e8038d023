"""The PromptJuggler webhook endpoints.

``webhook/`` takes all four events and tells them apart by the body's shape; ``webhook/<event>/``
takes one event each, for users who configure one URL per event in PromptJuggler's settings.

Answers:

- **200** for every verified delivery, whatever it held (applied, stale, duplicate, unknown
  object, unrecognised or invalid body): each is logged as a :class:`WebhookDelivery`. A body
  that verified came from PromptJuggler, and a 4xx would only make it retry what no retry fixes.
- **400** when the signature does not verify (or the body could not be read): nothing is
  stored, one line is logged to ``django.security.WebhookValidationError`` and a WARNING to
  this module's logger.
- **413** for a body over ``WEBHOOK_MAX_BODY_BYTES``, **405** for methods other than POST (HEAD
  and OPTIONS are answered), **503** while no webhook secret is configured.

Every refusal's body is ``{"error": "<code>", "detail": "<plain words>"}``, the code a
:class:`Refusal`, so that tools can explain it; never an HTML page, not even under ``DEBUG``.
- **500** only when applying a verified delivery failed: the effect rolled back, an ``error``
  row is logged, and PromptJuggler's retry (if it retries) is applied again.

Nothing here calls PromptJuggler: the request does a few queries and answers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.urls import URLPattern, path
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from .. import signature
from ..apply import process_delivery, process_pending_deliveries, replay_delivery
from ..conf import pj_settings
from ..events import EVENT_FAMILIES
from ..models import WebhookDelivery
from . import _deliveries
from ._deliveries import dedupe_key, log_copy, prune_deliveries, receive
from ._refusals import REFUSAL_STATUS, SENDER_HINTS, Refusal, signature_refusal

__all__ = [
    "REFUSAL_STATUS",
    "SENDER_HINTS",
    "Refusal",
    "WebhookValidationError",
    "WebhookView",
    "dedupe_key",
    "log_copy",
    "process_delivery",
    "process_pending_deliveries",
    "prune_deliveries",
    "receive",
    "replay_delivery",
    "urlpatterns",
]

logger = logging.getLogger(__name__)

#: How loud each refusal is on this module's logger. A missing secret breaks every delivery;
#: a GET from a browser or a monitor is only noise.
REFUSAL_LOG_LEVELS: dict[Refusal, int] = {
    **dict.fromkeys(Refusal, logging.WARNING),
    Refusal.NOT_CONFIGURED: logging.ERROR,
    Refusal.METHOD_NOT_ALLOWED: logging.INFO,
}

EventType = WebhookDelivery.EventType

#: Outcomes answered with 200; ``error`` gets a 500 so that a retry can apply it again.
OK_OUTCOMES = frozenset(WebhookDelivery.Outcome.values) - {WebhookDelivery.Outcome.ERROR}


class WebhookValidationError(SuspiciousOperation):
    """A delivery that could not be verified.

    A :class:`~django.core.exceptions.SuspiciousOperation`: the view answers it with a JSON 400
    and logs the message to ``django.security.WebhookValidationError``, as Django does for one
    raised elsewhere. The message says what failed, never the header's value or a secret;
    ``reason`` is its :class:`Refusal` code.
    """

    def __init__(self, message: str, reason: Refusal = Refusal.MALFORMED) -> None:
        super().__init__(message)
        #: The code the answer carries.
        self.reason = reason


class WebhookView(View):
    """Verify a PromptJuggler delivery over its raw bytes, then hand it to the delivery log."""

    http_method_names = ["post", "head", "options"]

    #: The event type this URL takes; ``None`` tells events apart by the body's shape.
    event_type: str | None = None

    #: Request headers copied into the delivery log. Never add ``PromptJuggler-Signature``.
    logged_headers: tuple[str, ...] = ("Content-Type", "User-Agent", "X-Forwarded-For")

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        """The view, CSRF-exempt, public under ``LoginRequiredMiddleware``, and left out of
        ``ATOMIC_REQUESTS`` so that an ``error`` row survives its rolled-back effect."""
        event_type = initkwargs.get("event_type", cls.event_type)
        if event_type is not None and event_type not in EVENT_FAMILIES:
            raise ImproperlyConfigured(
                f"{cls.__name__}.event_type must be None or one of {sorted(EVENT_FAMILIES)}; "
                f"got {event_type!r}."
            )
        view = super().as_view(**initkwargs)
        for alias in connections:
            view = transaction.non_atomic_requests(using=alias)(view)
        return csrf_exempt(login_not_required(view))

    # Override points -------------------------------------------------------------------------

    def current_time(self) -> float:
        """Unix time the signature's timestamp is compared with (tests fix it)."""
        return time.time()

    def get_secrets(self) -> list[str]:
        """The secrets a signature may match, in order; the log records which one did."""
        return pj_settings.webhook_secrets

    # HTTP -------------------------------------------------------------------------------------

    def head(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """Monitoring probes may HEAD the URL: say it exists without touching anything."""
        return HttpResponse(status=200)

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        """Size, then signature, then the delivery log; see the module docstring for answers."""
        secrets = self.get_secrets()
        if not secrets:
            return self.refuse(
                request,
                Refusal.NOT_CONFIGURED,
                'No webhook secret is configured: set settings.PROMPTJUGGLER["WEBHOOK_SECRETS"].',
            )
        try:
            body = self.read_body(request)
            if body is None:
                return self.refuse(
                    request,
                    Refusal.TOO_LARGE,
                    f"The body is over {pj_settings.WEBHOOK_MAX_BODY_BYTES} bytes "
                    '(settings.PROMPTJUGGLER["WEBHOOK_MAX_BODY_BYTES"]).',
                )
            verified = self.verify(request, body, secrets)
        except WebhookValidationError as exc:
            return self.refuse(request, exc.reason, str(exc), security=exc)
        outcome = _deliveries.receive(
            body, verified, expected=self.event_type, headers=self.headers_to_log(request)
        )
        return JsonResponse({"outcome": outcome}, status=200 if outcome in OK_OUTCOMES else 500)

    # Steps ------------------------------------------------------------------------------------

    def read_body(self, request: HttpRequest) -> bytes | None:
        """The raw body, or ``None`` when it is over the limit (read no further than that)."""
        limit = pj_settings.WEBHOOK_MAX_BODY_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit:
            return None
        try:
            body = request.read(limit + 1)
        except OSError:  # the client went away mid-body
            raise WebhookValidationError(
                "The webhook body could not be read.", Refusal.UNREADABLE
            ) from None
        return None if len(body) > limit else body

    def verify(
        self, request: HttpRequest, body: bytes, secrets: list[str]
    ) -> signature.VerifiedSignature:
        """Check the signature over the raw bytes or raise :class:`WebhookValidationError`."""
        header = request.META.get(signature.META_KEY)
        now = self.current_time()
        tolerance = pj_settings.WEBHOOK_TOLERANCE
        verified = signature.verify(body, header, secrets, tolerance=tolerance, now=now)
        if verified is None:
            reason, message = signature_refusal(header, now, tolerance)
            raise WebhookValidationError(message, reason)
        return verified

    def http_method_not_allowed(
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        response = self.refuse(
            request, Refusal.METHOD_NOT_ALLOWED, f"{request.method} is not allowed: use POST."
        )
        allowed = [m.upper() for m in self.http_method_names if hasattr(self, m)]
        response["Allow"] = ", ".join(allowed)
        return response

    def refuse(
        self,
        request: HttpRequest,
        reason: Refusal,
        detail: str,
        *,
        security: WebhookValidationError | None = None,
    ) -> HttpResponse:
        """Log a refusal and answer it with its code: ``{"error": reason, "detail": detail}``.

        A failed verification also goes to ``django.security.WebhookValidationError`` (where
        Django logs every :class:`~django.core.exceptions.SuspiciousOperation`), without a
        traceback: there is nothing to debug in a wrong signature.
        """
        if security is not None:
            logging.getLogger(f"django.security.{type(security).__name__}").error(
                detail, extra={"status_code": REFUSAL_STATUS[reason], "request": request}
            )
        logger.log(
            REFUSAL_LOG_LEVELS[reason],
            "PromptJuggler webhook refused (%s) at %s: %s",
            reason,
            request.path,
            detail,
            extra={"webhook_refusal": str(reason)},
        )
        return JsonResponse({"error": str(reason), "detail": detail}, status=REFUSAL_STATUS[reason])

    def headers_to_log(self, request: HttpRequest) -> dict[str, str]:
        logged = {}
        for name in self.logged_headers:
            value = request.headers.get(name)
            if value:
                logged[name] = "".join(c for c in value if c.isprintable())[:500]
        return logged


#: The per-event URLs: path segment → (URL name, the event type it takes).
PER_EVENT_URLS: dict[str, tuple[str, str]] = {
    "knowledgedocument": ("webhook-document", EventType.DOCUMENT_FINISHED),
    "knowledgebase": ("webhook-knowledge-base", EventType.KNOWLEDGE_BASE_FINISHED),
    "promptrun": ("webhook-prompt-run", EventType.PROMPT_RUN_FINISHED),
    "workflowrun": ("webhook-workflow-run", EventType.WORKFLOW_RUN_FINISHED),
}

#: The URLs, one shared and one per event type. Names live in the ``promptjuggler_django``
#: namespace, e.g. ``reverse("promptjuggler_django:webhook")``.
urlpatterns: list[URLPattern] = [
    path("webhook/", WebhookView.as_view(), name="webhook"),
    *(
        path(f"webhook/{segment}/", WebhookView.as_view(event_type=event_type), name=name)
        for segment, (name, event_type) in PER_EVENT_URLS.items()
    ),
]
