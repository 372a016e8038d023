"""Why the webhook view refused a request: one public set of short codes, and what each means.

Every refusal answers ``{"error": "<code>", "detail": "<plain words>"}``, so a tool that posted a
delivery (``promptjuggler_send_test_webhook``, ``promptjuggler_doctor``) can tell a wrong secret
from a skewed clock without scraping an HTML page. The codes are a public contract (listed in
``docs/webhooks.md``): add new ones, never rename one. Nothing a refusal says is secret: the
detail names the header and the tolerance, never the header's value or a secret.
"""

from __future__ import annotations

from enum import StrEnum

from .. import signature

__all__ = ["REFUSAL_STATUS", "SENDER_HINTS", "Refusal", "signature_refusal"]


class Refusal(StrEnum):
    """The reason code in the body of every refusal of the webhook view."""

    #: 400: the request has no ``PromptJuggler-Signature`` header.
    NO_SIGNATURE = "no_signature"
    #: 400: the header is there but is not ``t=<digits>,v1=<64 hex>`` (in any layout).
    MALFORMED = "malformed"
    #: 400: the signature's timestamp is further from the server's clock than the tolerance.
    STALE = "stale"
    #: 400: no configured secret produces any of the header's ``v1`` values for this body.
    MISMATCH = "mismatch"
    #: 400: the body could not be read (the client went away while sending it).
    UNREADABLE = "unreadable"
    #: 413: the body is over ``WEBHOOK_MAX_BODY_BYTES``.
    TOO_LARGE = "too_large"
    #: 503: the site has no webhook secret configured, so nothing can verify.
    NOT_CONFIGURED = "not_configured"
    #: 405: a method other than POST (HEAD and OPTIONS are answered).
    METHOD_NOT_ALLOWED = "method_not_allowed"


#: The HTTP status each refusal is answered with.
REFUSAL_STATUS: dict[Refusal, int] = {
    Refusal.NO_SIGNATURE: 400,
    Refusal.MALFORMED: 400,
    Refusal.STALE: 400,
    Refusal.MISMATCH: 400,
    Refusal.UNREADABLE: 400,
    Refusal.TOO_LARGE: 413,
    Refusal.NOT_CONFIGURED: 503,
    Refusal.METHOD_NOT_ALLOWED: 405,
}

#: What the sender of a refused delivery should check, in plain words (for the commands that
#: post test deliveries). ``{secret}`` names where the signing secret came from.
SENDER_HINTS: dict[Refusal, str] = {
    Refusal.NO_SIGNATURE: (
        f"the {signature.HEADER} header did not reach the endpoint: check that no proxy in "
        "front of the site drops it"
    ),
    Refusal.MALFORMED: (
        f"the {signature.HEADER} header arrived unreadable: check that no proxy in front of the "
        "site rewrites it"
    ),
    Refusal.STALE: (
        "the timestamp is outside the tolerance: check the clocks (NTP) of this machine and of "
        "the site, or raise WEBHOOK_TOLERANCE there"
    ),
    Refusal.MISMATCH: (
        "the signature did not verify: check that {secret} matches a secret the endpoint uses "
        "(its WEBHOOK_SECRETS), and that no proxy changes the body"
    ),
    Refusal.UNREADABLE: "the endpoint could not read the body: try again; check any proxy",
    Refusal.TOO_LARGE: "the body is over the endpoint's WEBHOOK_MAX_BODY_BYTES",
    Refusal.NOT_CONFIGURED: (
        "the endpoint has no webhook secret: set WEBHOOK_SECRETS in the site's settings "
        "(manage.py check reports promptjuggler_django.E002)"
    ),
    Refusal.METHOD_NOT_ALLOWED: "the endpoint takes only POST",
}


def signature_refusal(header: str | None, now: float, tolerance: float) -> tuple[Refusal, str]:
    """Why ``header`` did not verify, as a code and a sentence (clock skew is the usual
    surprise, so its sentence gives the offset and its direction)."""
    if header is None:
        return Refusal.NO_SIGNATURE, f"No {signature.HEADER} header."
    parsed = signature.parse_header(header)
    if parsed is None:
        return Refusal.MALFORMED, f"Malformed {signature.HEADER} header."
    ahead = parsed[0] - now
    # ``not <=``, as in signature.verify: a NaN tolerance or clock counts as outside.
    if not abs(ahead) <= tolerance:
        direction = "ahead of" if ahead > 0 else "behind"
        return Refusal.STALE, (
            f"{signature.HEADER} timestamp is {abs(ahead):.0f} s {direction} this server's "
            f"clock (tolerance {tolerance:g} s)."
        )
    return Refusal.MISMATCH, f"{signature.HEADER} matches no configured webhook secret."
