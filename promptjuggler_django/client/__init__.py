"""An httpx client for PromptJuggler's knowledge-base and run endpoints.

What it adds over a bare HTTP call, and why:

* **Streaming uploads.** Files go out as ``files[0]``, ``files[1]``, … parts read in chunks, so a
  400 MB file costs no more memory than a 4 KB one (see
  :mod:`promptjuggler_django.client._multipart`).
* **Failures that say what happened.** PromptJuggler has no idempotency key for uploads, so the
  caller must know whether a failed upload can have created documents: :class:`RequestNotSent`
  (nothing complete reached the server, safe to send again), :class:`OutcomeUnknown` (the whole
  request went out, then the connection failed: reconcile before sending again) and
  :class:`APIError` (a definite answer, with the API's ``error`` message).
* **Retries where they are safe.** GET and DELETE are idempotent and are retried on network
  failures, 408, 429 and 5xx with capped exponential backoff, full jitter and ``Retry-After``.
  An upload is only sent again when the server cannot have received it whole.
* **Runs are never started twice by the client.** Creating a prompt or workflow run is not
  idempotent (no idempotency key: a second POST starts a second, billed run), so
  :meth:`~PromptJugglerClient.create_prompt_run` and
  :meth:`~PromptJugglerClient.create_workflow_run` are sent again only when no byte of the
  request left (a connect failure, a pool timeout) or on a 429, which PromptJuggler answers
  without starting anything. Every other failure raises at once: a timeout or reset after sending
  is :class:`OutcomeUnknown` (a run may exist), a 5xx a :class:`ServerError` (it may too).
* **No secret leaks.** The API key is only ever in the ``Authorization`` header: never in a repr,
  a log line or an exception (exceptions are raised outside the ``except`` block so they carry no
  httpx exception, whose request holds the headers).
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote
from uuid import UUID

import httpx

from .. import __version__
from ..exceptions import (
    ERRORS_BY_STATUS,
    AccessDenied,
    APIError,
    AuthenticationError,
    FileReadError,
    InvalidResponse,
    NotFound,
    OutcomeUnknown,
    PromptJugglerError,
    RateLimited,
    RequestNotSent,
    ServerError,
    UnprocessableEntity,
    deprecated_name,
)
from ..redaction import has_control_character, redact
from ._listing import DocumentSink, parse_listing
from ._multipart import (
    BodyProgress,
    MultipartBody,
    Part,
    StreamError,
    UploadFile,
    remote_file_name,
    rewind,
    rewind_positions,
)
from ._shapes import (
    RemoteDocument,
    RemoteKnowledgeBase,
    RemoteRun,
    RunCreated,
    ShapeError,
    error_message,
    parse_document,
    parse_documents,
    parse_json,
    parse_knowledge_base,
    parse_retry_after,
    parse_run,
    parse_run_created,
)

__all__ = [
    "APIError",
    "AccessDenied",
    "AuthenticationError",
    "DocumentSink",
    "FileReadError",
    "InvalidResponse",
    "NotFound",
    "OutcomeUnknown",
    "PromptJugglerClient",
    "PromptJugglerError",
    "RateLimited",
    "RemoteDocument",
    "RemoteKnowledgeBase",
    "RemoteRun",
    "RequestNotSent",
    "RunCreated",
    "ServerError",
    "UnprocessableEntity",
    "UploadFile",
    "host_of",
    "parse_retry_after",
    "remote_file_name",
    "transport_words",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

#: How much of an error body is kept on an exception (the API's are a few bytes of JSON).
ERROR_BODY_LIMIT = 2048
#: Bodies read from the API are capped; a knowledge base with 100 000 documents is ~20 MB.
RESPONSE_BODY_LIMIT = 64 * 1024 * 1024
#: A listing read incrementally (:meth:`PromptJugglerClient.list_knowledge_base`) is parsed
#: as it arrives, so only a hostile answer could approach this: some 20 million documents.
LISTING_BODY_LIMIT = 4 * 1024 * 1024 * 1024


def __getattr__(name: str) -> Any:  # deprecated names, for one release
    return deprecated_name(__name__, name)


class PromptJugglerClient:
    """Talks to PromptJuggler. One instance holds one connection pool: reuse it, then close it."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = "https://promptjuggler.com",
        timeout: httpx.Timeout | None = None,
        max_retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        chunk_size: int = 65536,
        transport: httpx.BaseTransport | None = None,
        user_agent: str | None = None,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("api_key must be a non-empty string")
        api_key = api_key.strip()  # a key read from a file keeps its trailing newline
        if has_control_character(api_key):
            # Never echo it: the message names the problem, not the value.
            raise ValueError("api_key contains a control character (such as a newline)")
        if max_retries < 0 or backoff < 0 or backoff_max < 0 or chunk_size <= 0:
            raise ValueError("max_retries, backoff and backoff_max must be >= 0, chunk_size > 0")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        #: ``host[:port]`` of ``base_url``, named by connection errors (never its user info).
        self.host = host_of(self.base_url)
        self.timeout = timeout or httpx.Timeout(connect=5.0, read=60.0, write=60.0, pool=5.0)
        self.max_retries = max_retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.chunk_size = chunk_size
        self._sleep = time.sleep  # replaced in tests to observe the waits
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=self.timeout,
            transport=transport,
            follow_redirects=False,  # a redirect must not carry the bearer token elsewhere
            headers={
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": user_agent
                or f"promptjuggler-django/{__version__} httpx/{httpx.__version__}",
            },
        )

    @classmethod
    def from_settings(cls, **overrides: Any) -> PromptJugglerClient:
        """A client configured from ``settings.PROMPTJUGGLER``; keyword arguments win."""
        # Django is optional for the client: only this constructor needs settings.
        from django.core.exceptions import ImproperlyConfigured

        from ..conf import API_KEY_ENV, pj_settings

        s = pj_settings
        kwargs: dict[str, Any] = {
            "base_url": s.BASE_URL,
            "max_retries": s.MAX_RETRIES,
            "backoff": s.RETRY_BACKOFF,
            "backoff_max": s.RETRY_BACKOFF_MAX,
            "chunk_size": s.UPLOAD_CHUNK_SIZE,
        }
        if "timeout" not in overrides:
            kwargs["timeout"] = httpx.Timeout(
                connect=s.CONNECT_TIMEOUT,
                read=s.READ_TIMEOUT,
                write=s.WRITE_TIMEOUT,
                pool=s.POOL_TIMEOUT,
            )
        if "api_key" not in overrides:
            kwargs["api_key"] = s.API_KEY
            if not kwargs["api_key"]:
                raise ImproperlyConfigured(
                    'settings.PROMPTJUGGLER["API_KEY"] is not set (nor the '
                    f"{API_KEY_ENV} environment variable): the client needs an API key."
                )
        kwargs.update(overrides)
        return cls(**kwargs)

    def __repr__(self) -> str:
        return f"<PromptJugglerClient base_url={self.base_url!r}>"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PromptJugglerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the four endpoints ------------------------------------------------------------------

    def upload_documents(self, slug: str, files: Sequence[UploadFile]) -> list[RemoteDocument]:
        """Upload ``files`` to knowledge base ``slug`` in one request; one document per file.

        Not retried once the server may have the whole request: 429 and 5xx raise at once (the
        caller schedules the next attempt), a failure after the body was sent raises
        :class:`OutcomeUnknown`. It is sent again only when the connection failed before the
        body started, or before it ended and every stream can seek back to where it began.
        """
        if not files:
            raise ValueError("upload_documents needs at least one file")
        path = f"/api/v1/knowledge-bases/{_segment(slug)}/documents"
        parts = [Part(f.file_name, f.content_type or "", f.stream, f.size) for f in files]
        body = MultipartBody(parts, chunk_size=self.chunk_size)
        streams = [f.stream for f in files]
        positions = rewind_positions(streams)
        headers = {"Content-Type": body.content_type}
        length = body.content_length
        if length is not None:
            headers["Content-Length"] = str(length)  # httpx then does not chunk
        attempt = 0
        while True:
            progress = BodyProgress()
            try:
                answer = self._send_once(
                    "POST", path, headers=headers, body=body, progress=progress
                )
            except FileReadError:
                raise
            except RequestNotSent as exc:
                # Nothing complete reached the server. Send again only with the same bytes: from
                # the start when no stream was read yet, or after seeking every stream back.
                can_resend = not progress.streams_touched or (
                    positions is not None and rewind(streams, positions)
                )
                if attempt >= self.max_retries or not can_resend:
                    raise
                attempt += 1
                self._wait(attempt, None, exc)
                continue
            return self._parse(parse_documents, answer, "POST", path)

    def get_knowledge_base(self, slug_or_id: str) -> RemoteKnowledgeBase:
        """The knowledge base (by slug, an old slug alias, or id) with all its documents."""
        path = f"/api/v1/knowledge-bases/{_segment(str(slug_or_id))}"
        answer = self._request_idempotent("GET", path)
        return self._parse(parse_knowledge_base, answer, "GET", path)

    def list_knowledge_base(self, slug_or_id: str, sink: DocumentSink) -> RemoteKnowledgeBase:
        """The knowledge base, its documents put into ``sink`` one by one as the answer arrives.

        The same ``GET`` as :meth:`get_knowledge_base`, read incrementally: memory stays flat
        however many documents are listed, and the listing may exceed
        :data:`RESPONSE_BODY_LIMIT` (up to :data:`LISTING_BODY_LIMIT`). The returned knowledge
        base has no ``documents``. ``sink.clear()`` is called before each attempt, so a retry
        after a broken connection does not deliver a document twice.
        """
        path = f"/api/v1/knowledge-bases/{_segment(str(slug_or_id))}"

        def read(response: httpx.Response) -> RemoteKnowledgeBase:
            sink.clear()
            return parse_listing(_capped_chunks(response, LISTING_BODY_LIMIT), sink)

        answer = self._request_idempotent("GET", path, read=read)
        assert isinstance(answer.value, RemoteKnowledgeBase)
        return answer.value

    def get_document(self, document_id: UUID | str) -> RemoteDocument:
        """One document, with its ``chunk_count``."""
        path = f"/api/v1/knowledge-documents/{_document_id(document_id)}"
        answer = self._request_idempotent("GET", path)
        return self._parse(parse_document, answer, "GET", path)

    def delete_document(self, document_id: UUID | str) -> bool:
        """Delete a document: True when it was deleted, False when it was already gone (404).

        Both mean the document no longer exists remotely.
        """
        path = f"/api/v1/knowledge-documents/{_document_id(document_id)}"
        try:
            self._request_idempotent("DELETE", path)
        except NotFound:
            return False
        return True

    # -- the four run endpoints --------------------------------------------------------------

    def create_prompt_run(
        self,
        slug: str,
        version: int | str,
        inputs: Mapping[str, str],
        *,
        thread: UUID | str | None = None,
        priority: str | None = None,
        environment: str | None = None,
        metadata: Mapping[str, str | Sequence[str]] | None = None,
        channel: str | None = None,
        env_vars: Mapping[str, str] | None = None,
    ) -> RunCreated:
        """Start a run of prompt ``slug`` at ``version`` (a number, a tag or ``"__latest__"``).

        **Not idempotent**: retried only when nothing was sent (connect failure) or on a 429
        (see the module docstring); a timeout after sending raises :class:`OutcomeUnknown` and a
        run may exist. ``env_vars`` may hold secrets: they go in the body, never in an error.
        """
        body = _run_body(inputs, thread, priority, environment, metadata, env_vars)
        if channel is not None:
            body["channel"] = channel
        path = f"/api/v1/prompts/{_segment(slug, 'prompt slug')}/{_version(version)}/runs"
        return self._create_run(path, body)

    def create_workflow_run(
        self,
        slug: str,
        version: int | str,
        inputs: Mapping[str, str],
        *,
        thread: UUID | str | None = None,
        priority: str | None = None,
        environment: str | None = None,
        metadata: Mapping[str, str | Sequence[str]] | None = None,
        env_vars: Mapping[str, str] | None = None,
    ) -> RunCreated:
        """Start a run of workflow ``slug`` at ``version``; retried as :meth:`create_prompt_run`."""
        body = _run_body(inputs, thread, priority, environment, metadata, env_vars)
        path = f"/api/v1/workflows/{_segment(slug, 'workflow slug')}/{_version(version)}/runs"
        return self._create_run(path, body)

    def get_prompt_run(self, run_id: UUID | str) -> RemoteRun:
        """A prompt run: status, ``output``, ``emitted``, ``transcript``, usage and cost."""
        path = f"/api/v1/promptruns/{_uuid_segment(run_id, 'run id')}"
        answer = self._request_idempotent("GET", path)
        return self._parse(parse_run, answer, "GET", path)

    def get_workflow_run(self, run_id: UUID | str) -> RemoteRun:
        """A workflow run: status, ``outputs``, ``errors``, usage and cost."""
        path = f"/api/v1/workflowruns/{_uuid_segment(run_id, 'run id')}"
        answer = self._request_idempotent("GET", path)
        return self._parse(parse_run, answer, "GET", path)

    def _create_run(self, path: str, body: dict[str, Any]) -> RunCreated:
        """POST a create-run body: sent again only when it provably started nothing."""
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        attempt = 0
        while True:
            try:
                answer = self._send_once("POST", path, headers=headers, content=content)
            except RequestNotSent as exc:
                # Only "no byte left" is proof: a request cut while writing may be incomplete,
                # but the client does not bet a billed run on where the cut fell.
                if not exc.nothing_sent or attempt >= self.max_retries:
                    raise
                attempt += 1
                self._wait(attempt, None, exc)
                continue
            except RateLimited as exc:
                too_long = exc.retry_after is not None and exc.retry_after > self.backoff_max
                if too_long or attempt >= self.max_retries:
                    raise
                attempt += 1
                self._wait(attempt, exc.retry_after, exc)
                continue
            return self._parse(parse_run_created, answer, "POST", path)

    # -- transport ---------------------------------------------------------------------------

    def _request_idempotent(
        self, method: str, path: str, *, read: Callable[[httpx.Response], Any] | None = None
    ) -> _Answer:
        """Send an idempotent request, retrying failures and retryable answers."""
        attempt = 0
        while True:
            try:
                return self._send_once(method, path, read=read)
            except (RequestNotSent, OutcomeUnknown, APIError) as exc:
                retry_after = exc.retry_after if isinstance(exc, APIError) else None
                retryable = not isinstance(exc, APIError) or exc.retryable
                # A server asking for a longer pause than we would ever wait is better served by
                # the caller's scheduler (it gets retry_after) than by a worker asleep.
                too_long = retry_after is not None and retry_after > self.backoff_max
                if not retryable or too_long or attempt >= self.max_retries:
                    raise
                attempt += 1
                self._wait(attempt, retry_after, exc)

    def _send_once(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: MultipartBody | None = None,
        progress: BodyProgress | None = None,
        content: bytes | None = None,
        read: Callable[[httpx.Response], Any] | None = None,
    ) -> _Answer:
        """One HTTP exchange: returns a 2xx answer, or raises a typed error.

        ``read`` consumes a 2xx answer's body as it arrives (its result is the answer's
        ``value``); without it the body is read whole, up to :data:`RESPONSE_BODY_LIMIT`.
        Typed errors are raised after the ``try`` so that they carry no httpx exception as their
        context: those hold the request, and the request holds the Authorization header.
        """
        chunks = body.chunks(progress) if body is not None and progress is not None else None
        started = time.monotonic()
        error: PromptJugglerError | None = None
        try:
            request = self._http.build_request(
                method, path, headers=headers, content=chunks if chunks is not None else content
            )
            response = self._http.send(request, stream=True)
            try:
                if read is not None and response.is_success:
                    answer = _Answer(response.status_code, b"", response, read(response))
                else:
                    limit = RESPONSE_BODY_LIMIT if response.is_success else ERROR_BODY_LIMIT
                    answer = _Answer(response.status_code, _read_capped(response, limit), response)
            finally:
                response.close()
        except httpx.RequestError as exc:
            error = self._classify(exc, method, path, progress)
        except ShapeError as exc:  # from ``read``: a body of the wrong shape
            error = InvalidResponse(
                f"{method} {path} -> {response.status_code}: unexpected body "
                f"({self._redact(str(exc))})",
                status_code=response.status_code,
                body="",
                method=method,
                path=path,
            )
        except StreamError as exc:
            error = FileReadError(f"{method} {path}: {exc}", method=method, path=path)
        finally:
            if chunks is not None:
                chunks.close()
        elapsed = time.monotonic() - started
        if error is not None:
            logger.debug(
                "%s %s failed after %.3fs: %s", method, path, elapsed, type(error).__name__
            )
            raise error
        logger.debug("%s %s -> %s in %.3fs", method, path, answer.status_code, elapsed)
        if not 200 <= answer.status_code < 300:
            # 3xx too: following a redirect would hand the bearer token to another address.
            raise self._api_error(answer, method, path)
        return answer

    def _classify(
        self, exc: httpx.RequestError, method: str, path: str, progress: BodyProgress | None
    ) -> PromptJugglerError:
        """Map an httpx failure to "not sent" or "outcome unknown" by how far the request got.

        A failure to connect names the host and the setting it came from: "Connection refused"
        alone does not say whether PromptJuggler is down or ``BASE_URL`` is wrong.
        """
        detail = self._redact(transport_words(exc))
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            what = f"{method} {path}: could not connect to {self.host} (BASE_URL): {detail}"
        else:
            what = f"{method} {path}: {type(exc).__name__}: {detail}"
        kw = {"method": method, "path": path}
        if isinstance(exc, _NEVER_SENT):
            error = RequestNotSent(f"{what} (not sent)", **kw)
            error.nothing_sent = True
            return error
        if progress is not None and not progress.complete:
            # httpcore swallows a write error to read an early answer; when none comes, the
            # server holds a truncated body it cannot have acted on.
            return RequestNotSent(f"{what} (after {progress.sent} bytes of the body)", **kw)
        if progress is None and isinstance(exc, httpx.WriteTimeout):
            return RequestNotSent(f"{what} (while sending the request)", **kw)
        return OutcomeUnknown(f"{what} (the request was sent; it may have been processed)", **kw)

    def _wait(self, attempt: int, retry_after: float | None, exc: Exception) -> None:
        """Full-jitter exponential backoff, never shorter than the server's ``Retry-After``."""
        ceiling = min(self.backoff_max, self.backoff * (2 ** (attempt - 1)))
        delay = random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography
        if retry_after is not None:
            delay = max(delay, retry_after)
        logger.debug("retry %d/%d in %.2fs after %s", attempt, self.max_retries, delay, exc)
        self._sleep(delay)

    # -- parsing -----------------------------------------------------------------------------

    def _api_error(self, answer: _Answer, method: str, path: str) -> APIError:
        text = self._redact(answer.content.decode("utf-8", "replace"))
        status = answer.status_code
        message = error_message(text) or answer.reason or "no message"
        cls = ERRORS_BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
        return cls(
            message[:500],
            status_code=status,
            retry_after=parse_retry_after(answer.headers.get("Retry-After")),
            body=text,
            method=method,
            path=path,
        )

    def _parse(self, parser: Callable[[Any], _T], answer: _Answer, method: str, path: str) -> _T:
        """Apply ``parser`` to the JSON body; a body of the wrong shape is an InvalidResponse."""
        try:
            return parser(parse_json(answer.content))
        except ShapeError as exc:
            why = str(exc)
        body = self._redact(answer.content[:ERROR_BODY_LIMIT].decode("utf-8", "replace"))
        raise InvalidResponse(
            f"{method} {path} -> {answer.status_code}: unexpected body ({self._redact(why)})",
            status_code=answer.status_code,
            body=body,
            method=method,
            path=path,
        )

    def _redact(self, text: str) -> str:
        # Belt and braces: a library quoting the header (escaped, as bytes) or a proxy echoing
        # the request (percent- or JSON-encoded) must not leak the key in any of those forms.
        return redact(text, [self._api_key])


#: Failures that happen before any byte of the request leaves (or that httpx refuses to send).
_NEVER_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.ProxyError,
)


#: The ``[Errno 111] `` in front of an OS error's words, which says nothing to a reader.
_ERRNO = re.compile(r"^\[Errno -?\d+\] ")


def host_of(url: str) -> str:
    """``host`` or ``host:port`` of ``url`` (the port only when it is not the scheme's
    default), never its user info: what a message about a failed connection names."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "the configured host"
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    return f"{host}:{parsed.port}" if parsed.port is not None else host


def transport_words(exc: Exception) -> str:
    """What a transport error says, without the ``[Errno N]`` prefix ("Connection refused")."""
    return _ERRNO.sub("", str(exc)).strip() or type(exc).__name__


@dataclass
class _Answer:
    """A finished HTTP answer: status, (capped) body bytes, headers."""

    status_code: int
    content: bytes
    response: httpx.Response = field(repr=False)
    #: What a streaming ``read`` made of the body (then ``content`` is empty).
    value: Any = None

    @property
    def headers(self) -> httpx.Headers:
        return self.response.headers

    @property
    def reason(self) -> str:
        return self.response.reason_phrase


def _read_capped(response: httpx.Response, limit: int) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def _capped_chunks(response: httpx.Response, limit: int) -> Iterator[bytes]:
    """The body's chunks as they arrive; past ``limit`` bytes the body is cut off (the parser
    then finds it incomplete)."""
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            yield chunk[: len(chunk) - (size - limit)]
            return
        yield chunk


def _segment(value: str, what: str = "knowledge-base slug or id") -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"a {what} is required")
    return quote(value, safe="")


def _document_id(value: UUID | str) -> str:
    return str(value if isinstance(value, UUID) else UUID(str(value)))


def _uuid_segment(value: UUID | str, what: str) -> str:
    try:
        return _document_id(value)
    except ValueError:
        raise ValueError(f"a {what} must be a UUID, not {value!r}") from None


def _version(value: int | str) -> str:
    """A version path segment: a revision number, a tag such as ``production``, ``__latest__``."""
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise ValueError("a version is a revision number, a tag or '__latest__'")
    return quote(str(value), safe="")


def _run_body(
    inputs: Mapping[str, str],
    thread: UUID | str | None,
    priority: str | None,
    environment: str | None,
    metadata: Mapping[str, str | Sequence[str]] | None,
    env_vars: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The create-run JSON body; what the caller left out is left out (the API's defaults apply).

    Values are sent as given: PromptJuggler, not the client, decides what it accepts (422).
    """
    if not isinstance(inputs, Mapping):
        raise TypeError("inputs must be a mapping of input names to strings")
    body: dict[str, Any] = {"inputs": dict(inputs)}
    if thread is not None:
        body["thread"] = _uuid_segment(thread, "thread")
    if priority is not None:
        body["priority"] = priority
    if environment is not None:
        body["environment"] = environment
    if metadata is not None:
        body["metadata"] = {k: v if isinstance(v, str) else list(v) for k, v in metadata.items()}
    if env_vars is not None:
        body["envVars"] = dict(env_vars)
    return body
