"""Post a signed test delivery like PromptJuggler and say, in plain words, what the answer means.

Shared by ``promptjuggler_send_test_webhook`` and ``promptjuggler_doctor``. The endpoint answers
a refusal with a reason code (:class:`~promptjuggler_django.webhooks.Refusal`); this module
turns it into what to check ("the signature did not verify: check that … matches"). A body that
is not JSON (a proxy's error page, Django's debug page) is never printed, only described.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from ..client import host_of, transport_words
from ..signature import HEADER, sign
from ..webhooks import SENDER_HINTS, Refusal

__all__ = [
    "DEFAULT_STATUS",
    "EVENTS",
    "DeliveryAnswer",
    "TestDelivery",
    "build_body",
    "build_delivery",
    "read_answer",
    "send_delivery",
]

#: The bodies PromptJuggler sends (no event name is sent: the shape tells).
EVENTS = ("document", "knowledge-base", "run")
DEFAULT_STATUS = {"document": "ready", "knowledge-base": "ready", "run": "completed"}

USER_AGENT = "promptjuggler-django test webhook"
#: How much of a JSON answer is shown.
SHOWN_BODY_LIMIT = 1000
#: How much of the endpoint's ``detail`` is repeated.
DETAIL_LIMIT = 300

#: Plain words for answers that carry no reason code, by status.
_STATUS_HINTS: dict[int, str] = {
    401: "something in front of the view asks for credentials (basic auth on the site?)",
    403: "something in front of the view refused it (a WAF, an IP allow-list, CSRF middleware)",
    404: (
        'no webhook at this URL: check the path (include("promptjuggler_django.urls") mounts '
        "webhook/ and webhook/<event>/)"
    ),
    500: (
        "applying the delivery failed: the site's webhook delivery log has an error row with "
        "the reason"
    ),
}


def build_body(
    event: str,
    object_id: str,
    status: str,
    *,
    chunk_count: int = 1,
    document_count: int = 1,
) -> dict[str, Any]:
    """The JSON body of ``event`` as PromptJuggler shapes it."""
    if event == "document":
        return {"id": object_id, "status": status, "chunkCount": chunk_count}
    if event == "knowledge-base":
        return {
            "id": object_id,
            "status": status,
            "documentCount": document_count,
            "chunkCount": chunk_count,
        }
    return {"id": object_id, "status": status}


@dataclass(frozen=True)
class TestDelivery:
    """A signed request ready to post; ``repr`` leaves out the signature."""

    __test__ = False  # not a pytest test class, whatever its name

    url: str
    body: bytes
    headers: dict[str, str]

    def __repr__(self) -> str:
        return f"TestDelivery(url={self.url!r}, body={self.body!r})"


def build_delivery(
    url: str,
    secret: str,
    *,
    event: str = "document",
    object_id: str | None = None,
    status: str | None = None,
    chunk_count: int = 1,
    document_count: int = 1,
    timestamp: int | None = None,
) -> TestDelivery:
    """A delivery of ``event`` signed with ``secret``. A random id (the default) ends as
    ``unknown_object`` in the endpoint's log: it proves the path without touching a row."""
    body = json.dumps(
        build_body(
            event,
            object_id or str(uuid.uuid4()),
            status or DEFAULT_STATUS[event],
            chunk_count=chunk_count,
            document_count=document_count,
        ),
        separators=(",", ":"),
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        HEADER: sign(body, secret, timestamp),
    }
    return TestDelivery(url, body, headers)


@dataclass(frozen=True)
class DeliveryAnswer:
    """What the endpoint answered, and what it means."""

    #: ``None`` when no answer came (see :attr:`problem`).
    status_code: int | None
    reason_phrase: str = ""
    #: The ``outcome`` of an accepted delivery.
    outcome: str | None = None
    #: The reason code of a refusal (possibly one this version does not know).
    refusal: str | None = None
    #: The endpoint's own sentence about a refusal, shortened and printable.
    detail: str = ""
    #: The body to show: a JSON answer (shortened), or a note saying what was left out.
    shown_body: str = ""
    #: What is wrong, in plain words; ``None`` when the endpoint took the delivery.
    problem: str | None = None

    @property
    def accepted(self) -> bool:
        return self.problem is None


def send_delivery(
    delivery: TestDelivery, *, timeout: float, secret_source: str, url_source: str = ""
) -> DeliveryAnswer:
    """POST ``delivery`` (no redirects followed) and read the answer.

    ``secret_source`` says where the signing secret came from (``--secret``, the first of
    ``WEBHOOK_SECRETS``), for the hint of a mismatch; ``url_source`` where the URL came from,
    for the message of a failed connection.
    """
    try:
        response = httpx.post(
            delivery.url, content=delivery.body, headers=delivery.headers, timeout=timeout
        )
    except httpx.HTTPError as exc:
        return DeliveryAnswer(None, problem=_no_answer(delivery.url, exc, url_source))
    return read_answer(response, secret_source=secret_source)


def read_answer(response: httpx.Response, *, secret_source: str) -> DeliveryAnswer:
    """What an endpoint's answer to a test delivery means."""
    status = response.status_code
    data = _json(response)
    shown = _shown_body(response, data)
    fields = {"reason_phrase": response.reason_phrase, "shown_body": shown}
    if not isinstance(data, dict):
        data = {}
    if response.is_success:
        outcome = data.get("outcome")
        if isinstance(outcome, str):
            return DeliveryAnswer(status, outcome=outcome, **fields)
        problem = (
            f"The URL answered {status} but not as the webhook endpoint does (no outcome in the "
            "answer): check the URL."
        )
        return DeliveryAnswer(status, problem=problem, **fields)
    code = data.get("error") if isinstance(data.get("error"), str) else None
    detail = _printable(data.get("detail"))[:DETAIL_LIMIT]
    return DeliveryAnswer(
        status,
        refusal=code,
        detail=detail,
        problem=_refusal_problem(response, code, detail, secret_source),
        **fields,
    )


def _refusal_problem(
    response: httpx.Response, code: str | None, detail: str, secret_source: str
) -> str:
    status = response.status_code
    known = {str(refusal): refusal for refusal in Refusal}
    if code is not None and code in known:
        hint = SENDER_HINTS[known[code]].format(secret=secret_source)
        said = f" The endpoint says: {detail}" if detail else ""
        return f"The endpoint answered {status} ({code}): {hint}.{said}"
    if code is not None:  # a newer version's code: its own words are all there is
        words = detail.rstrip(".") or "no detail"
        return f"The endpoint answered {status} ({_printable(code)[:50]}): {words}."
    if response.is_redirect:
        target = _printable(response.headers.get("Location"))[:DETAIL_LIMIT]
        return (
            f"The endpoint answered {status} and redirects to {target or 'nowhere'}: use the "
            "final URL (a redirect may lose the body or the signature)."
        )
    if status in _STATUS_HINTS:
        return f"The endpoint answered {status}: {_STATUS_HINTS[status]}."
    if status == 400:
        return (
            "The endpoint answered 400 without a reason code: the signature may not have "
            "verified (a version of the app without reason codes?), or this is not the app's "
            "webhook URL."
        )
    if status >= 500:
        return f"The endpoint answered {status}: the site, or a proxy in front of it, failed."
    return f"The endpoint answered {status} {response.reason_phrase}.".replace(" .", ".")


def _no_answer(url: str, exc: httpx.HTTPError, url_source: str) -> str:
    words = _printable(transport_words(exc))
    source = f" ({url_source})" if url_source else ""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return f"No answer from {url}: could not connect to {host_of(url)}{source}: {words}."
    return f"No answer from {url}{source}: {type(exc).__name__}: {words}."


def _json(response: httpx.Response) -> Any:
    if "json" not in response.headers.get("Content-Type", ""):
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _shown_body(response: httpx.Response, data: Any) -> str:
    size = len(response.content)
    if data is not None:
        return _printable(response.text)[:SHOWN_BODY_LIMIT]
    if not size:
        return ""
    kind = response.headers.get("Content-Type", "").split(";")[0].strip() or "untyped"
    return f"(a {_printable(kind)[:50]} body of {size} bytes, not shown)"


def _printable(value: Any) -> str:
    """``value`` as one line of printable text (a hostile endpoint can send anything)."""
    if not isinstance(value, str):
        return ""
    return "".join(c if c.isprintable() else " " for c in value).strip()
