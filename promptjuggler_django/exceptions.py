"""The exceptions of :mod:`promptjuggler_django.client` (import them from there).

They sort failures by what the caller may do next. PromptJuggler has no idempotency key for
uploads, so "did the server get it?" decides between sending again and reconciling first.
"""

from __future__ import annotations

import warnings
from typing import Any


class PromptJugglerError(Exception):
    """Base class of every error this client raises. ``str()`` never contains the API key."""

    def __init__(self, message: str, *, method: str = "", path: str = "") -> None:
        super().__init__(message)
        #: The HTTP method of the failed call.
        self.method = method
        #: The path of the failed call (no host, no query, no headers).
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors defeat Exception's default pickling; task queues that
        # serialise a failure need it.
        return (_restore, (type(self), self.args, self.__dict__))


class RequestNotSent(PromptJugglerError):
    """No complete request reached the server (connect failure, pool timeout, or the body broke
    off before its end). The API cannot have acted on it: sending it again is safe."""

    #: True when not a byte of the request left (a connect failure, a pool timeout): the only
    #: proof the client accepts before sending a create-run POST again.
    nothing_sent: bool = False


class OutcomeUnknown(PromptJugglerError):
    """The whole request was sent, then the connection timed out or broke before an answer.
    PromptJuggler may have processed it: for an upload, look for the documents before retrying."""


class FileReadError(RequestNotSent):
    """An upload's stream failed to read, or gave more or fewer bytes than its declared ``size``.
    The body broke off before its end, so nothing was stored; sending it again unchanged would
    fail the same way, so the client does not retry it."""


class InvalidResponse(PromptJugglerError):
    """A 2xx answer whose body is not the documented shape."""

    def __init__(self, message: str, *, status_code: int, body: str, **kw: Any) -> None:
        super().__init__(message, **kw)
        #: the (successful) status of the answer
        self.status_code = status_code
        #: the start of the raw body, for diagnosis
        self.body = body


class APIError(PromptJugglerError):
    """A definite HTTP answer that is not a success: 4xx, 5xx (or a redirect, never followed)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        retry_after: float | None = None,
        body: str = "",
        **kw: Any,
    ) -> None:
        super().__init__(f"PromptJuggler answered {status_code}: {message}", **kw)
        #: the HTTP status of the answer
        self.status_code = status_code
        #: the API's ``{"error": ...}`` message, or the start of the raw body
        self.message = message
        #: seconds the server asked us to wait (``Retry-After``), if it said
        self.retry_after = retry_after
        #: the start of the raw body (the API key, if echoed, is redacted)
        self.body = body

    @property
    def retryable(self) -> bool:
        """True for answers that may succeed later unchanged: 408, 429 and 5xx."""
        return self.status_code in (408, 429) or self.status_code >= 500


class AuthenticationError(APIError):
    """401: the API key is missing, wrong or revoked."""


class AccessDenied(APIError):
    """403: the key may not touch this knowledge base or document.

    Called ``PermissionDenied`` before this release, like Django's own exception, which the
    old name still reaches (deprecated) from this module and :mod:`promptjuggler_django.client`.
    """


class NotFound(APIError):
    """404: unknown knowledge-base slug or document id."""


class UnprocessableEntity(APIError):
    """422: the request was understood and refused (e.g. an unsupported file type)."""


class RateLimited(APIError):
    """429: too many requests; see :attr:`retry_after`."""


class ServerError(APIError):
    """5xx: PromptJuggler (or a proxy in front of it) failed."""


#: Status code → exception class; any other 5xx is a ServerError, any other 4xx an APIError.
ERRORS_BY_STATUS: dict[int, type[APIError]] = {
    401: AuthenticationError,
    403: AccessDenied,
    404: NotFound,
    422: UnprocessableEntity,
    429: RateLimited,
}


def _restore(cls: type[PromptJugglerError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


#: Old name → current name, importable for one release with a DeprecationWarning.
DEPRECATED_NAMES: dict[str, str] = {"PermissionDenied": "AccessDenied"}


def deprecated_name(module: str, name: str) -> Any:
    """The current object behind a deprecated name of ``module``, with a warning."""
    if name not in DEPRECATED_NAMES:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new = DEPRECATED_NAMES[name]
    warnings.warn(
        f"{module}.{name} is deprecated; use {module}.{new}.", DeprecationWarning, stacklevel=3
    )
    return globals()[new]


def __getattr__(name: str) -> Any:
    return deprecated_name(__name__, name)
