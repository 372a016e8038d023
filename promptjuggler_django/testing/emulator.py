"""``FakePromptJuggler``: a PromptJuggler account on loopback for tests and local development.

It is a real HTTP/1.1 server in a daemon thread, speaking the knowledge-base and run API's wire
format (bearer auth, ``files[i]`` multipart uploads, camelCase JSON, 200/204/401/404/422), with
processing you drive (:meth:`FakePromptJuggler.seal`, :meth:`FakePromptJuggler.finish`,
:meth:`FakePromptJuggler.finish_run`) or let run on a timer, signed webhooks, and fault
injection for the failure modes PromptJuggler does not document but production meets: 429/5xx
with ``Retry-After``, slow answers, timeouts and resets whose outcome is unknown, duplicated,
late, reordered or lost webhooks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from .faults import Fault, FaultBook, WebhookFault, WebhookFaultBook
from .processing import Processor
from .runs import (
    UNSET,
    FakeRun,
    FakeRunnable,
    OutputFactory,
    OutputsFactory,
    RunBook,
    _Unset,
)
from .server import EmulatorHTTPServer, RecordedRequest
from .state import (
    FakeDocument,
    FakeKnowledgeBase,
    IncomingFile,
    Store,
    WebhookEvent,
)
from .webhooks import RecordedDelivery, WebhookSender

logger = logging.getLogger("promptjuggler_django.emulator")

#: Uploaded files up to this size keep their bytes in ``FakeDocument.content``.
DEFAULT_KEEP_CONTENT_BYTES = 1024 * 1024
#: Request bodies above this are refused with 413 (the emulator streams, so this is generous).
DEFAULT_MAX_REQUEST_BYTES = 2 * 1024**3


class WebhookDeliveryError(ConnectionError):
    """:meth:`FakePromptJuggler.send_webhook` got no HTTP answer from the receiver."""


class FakePromptJuggler:
    """An in-process PromptJuggler emulator. Use it as a context manager::

        with FakePromptJuggler(knowledge_bases=["kb_docs"]) as fake:
            client = PromptJugglerClient(base_url=fake.url, api_key=fake.api_key)
            ...
            fake.finish()  # every pending document becomes ready; webhooks are sent

    State is in memory and thread-safe; every inspection method returns copies.
    """

    def __init__(
        self,
        api_key: str = "pj_test_key",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        processing_delay: float | None = None,
        knowledge_bases: Iterable[str] = (),
        keep_content_bytes: int = DEFAULT_KEEP_CONTENT_BYTES,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_files_per_request: int | None = None,
        webhook_timeout: float = 5.0,
        run_delay: float | None = None,
    ) -> None:
        if processing_delay is not None and processing_delay < 0:
            raise ValueError("processing_delay must be >= 0 (or None for manual processing)")
        if run_delay is not None and run_delay < 0:
            raise ValueError("run_delay must be >= 0 (or None for runs finished by finish_run)")
        self._api_key = api_key
        self.host = host
        self.port = port
        #: ``None``: documents stay pending until :meth:`seal`/:meth:`finish`; a number of
        #: seconds: documents seal after half of it and finish after all of it.
        self.processing_delay = processing_delay
        #: ``None``: runs stay pending until :meth:`finish_run`; a number of seconds: each run
        #: completes (with its prompt's or workflow's output) that long after it was created.
        self.run_delay = run_delay
        self.keep_content_bytes = keep_content_bytes
        self.max_request_bytes = max_request_bytes
        self.max_files_per_request = max_files_per_request
        #: File names whose processing ends ``failed`` (see also :meth:`fail_files`).
        self.fail_file_names: set[str] = set()
        self._webhook_url: str | None = None
        self._webhook_secret: str | None = webhook_secret
        self.set_webhook(webhook_url, webhook_secret)
        self._store = Store()
        self._runs = RunBook(knowledge=self._store.searchable_documents)
        self._run_timers: set[threading.Timer] = set()
        self._run_timers_lock = threading.Lock()
        self._faults = FaultBook()
        self._webhook_faults = WebhookFaultBook()
        self._sender = WebhookSender(timeout=webhook_timeout)
        self._requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._processor: Processor | None = None
        for slug in knowledge_bases:
            self.create_knowledge_base(slug)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to configure as ``PROMPTJUGGLER["BASE_URL"]`` (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("FakePromptJuggler is not started; call start() or use `with`")
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def api_key(self) -> str:
        """The key the emulator accepts as ``Authorization: Bearer <key>``."""
        return self._api_key

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> FakePromptJuggler:
        """Bind and serve in a daemon thread; returns ``self``. Starting twice is a no-op."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._sender.reopen()
        self._server = EmulatorHTTPServer((self.host, self.port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"pj-emulator-{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        if self.processing_delay is not None:
            self._processor = Processor(self.processing_delay, self._auto_seal, self._auto_finish)
            self._processor.start()
            self._processor.schedule(self._store.non_terminal_ids())
        logger.info("PromptJuggler emulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections, cancel delayed webhooks. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._processor is not None:
            self._processor.stop()
            self._processor = None
        self._cancel_run_timers()
        self._sender.close()

    def __enter__(self) -> FakePromptJuggler:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:  # the API key and the webhook secret stay out of reprs
        where = self.url if self._server is not None else "stopped"
        return f"<FakePromptJuggler {where}>"

    # -- account -----------------------------------------------------------------------------

    def set_api_key(self, api_key: str) -> None:
        """Accept a different key from now on (e.g. to test a rotated or revoked key)."""
        self._api_key = api_key

    def create_knowledge_base(
        self, slug: str, *, id: uuid.UUID | None = None, aliases: Iterable[str] = ()
    ) -> FakeKnowledgeBase:
        """Create a knowledge base (the real API has no endpoint for this: it is set up in the
        PromptJuggler UI). ``aliases`` are former slugs that still resolve."""
        return self._store.create_knowledge_base(slug, id=id, aliases=aliases)

    def rename_knowledge_base(self, slug: str, new_slug: str) -> FakeKnowledgeBase:
        """Rename a knowledge base; the old slug keeps working as an alias, as in PromptJuggler."""
        return self._store.rename_knowledge_base(slug, new_slug)

    def set_knowledge_base_status(self, slug_or_id: str | uuid.UUID, status: str | None) -> None:
        """Force the status the API reports (any string, e.g. one the app does not know yet);
        ``None`` returns to the status derived from the documents."""
        self._store.set_knowledge_base_status(slug_or_id, status)

    def knowledge_base(self, slug_or_id: str | uuid.UUID) -> FakeKnowledgeBase:
        """A snapshot of a knowledge base by slug, alias or id; ``KeyError`` if unknown."""
        return self._store.knowledge_base(slug_or_id)

    def knowledge_bases(self) -> list[FakeKnowledgeBase]:
        return self._store.knowledge_bases()

    def documents(self, slug: str | None = None) -> list[FakeDocument]:
        """Snapshots of the stored documents (of one knowledge base), in upload order."""
        return self._store.documents(slug)

    def document(self, document_id: uuid.UUID | str) -> FakeDocument | None:
        """A snapshot of one document, or ``None`` if unknown or deleted."""
        return self._store.document(document_id)

    def add_document(
        self, slug: str, file_name: str, content: bytes = b"", status: str = "pending"
    ) -> FakeDocument:
        """Put a document straight into a knowledge base, as if uploaded by someone else (an
        orphan the app does not know, or one whose upload answer was lost)."""
        incoming = IncomingFile(
            file_name=file_name,
            size=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            content=content if len(content) <= self.keep_content_bytes else None,
            declared_content_type=None,
            part_name=None,
        )
        doc = self._store.add_document(slug, incoming, status)
        if self._processor is not None and status in ("pending", "sealed"):
            self._processor.schedule([doc.id])
        return doc

    def _store_upload(self, kb_id: uuid.UUID, files: list[IncomingFile]) -> list[FakeDocument]:
        documents = self._store.add_documents(kb_id, files)
        if self._processor is not None:
            self._processor.schedule([d.id for d in documents])
        return documents

    # -- processing --------------------------------------------------------------------------

    def fail_files(self, *names: str) -> None:
        """Make the processing of these file names end ``failed``."""
        self.fail_file_names.update(names)

    def seal(self, document_id: uuid.UUID | str | None = None) -> None:
        """``pending`` → ``sealed`` for one document or all (PromptJuggler sends no webhook)."""
        self._store.seal(None if document_id is None else [self._require_document(document_id)])

    def finish(
        self,
        document_id: uuid.UUID | str | None = None,
        *,
        status: str | None = None,
        chunk_count: int | None = None,
    ) -> None:
        """Finish processing and send the webhooks.

        Without ``document_id``, every unfinished document becomes ``ready`` (``failed`` for
        :attr:`fail_file_names`); with one, that document is finished even if it already was
        (its event is sent again: a way to replay stale events). ``status`` forces any status
        string; ``chunk_count`` overrides the default (about one chunk per 1000 bytes, 0 when
        failed). One ``knowledgedocument.finished`` goes out per document, then one
        ``knowledgebase.finished`` per knowledge base whose documents are now all finished.
        Returns after the POSTs, unless a webhook fault delays them.
        """
        ids = None if document_id is None else [self._require_document(document_id)]
        events = self._store.finish(
            ids,
            status=status,
            chunk_count=chunk_count,
            fail_file_names=set(self.fail_file_names),
            only_unfinished=document_id is None,
        )
        self._dispatch(events)

    def wait_for_processing(self, timeout: float = 10.0) -> None:
        """With ``processing_delay``: wait until every document finished and every (delayed)
        webhook was sent."""
        deadline = time.monotonic() + timeout
        while True:
            processor = self._processor
            if processor is None or processor.idle():
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"emulator processing still busy after {timeout}s")
            time.sleep(0.01)
        self._sender.wait(None, max(0.0, deadline - time.monotonic()))

    def _auto_seal(self, ids: list[uuid.UUID]) -> None:
        self._store.seal(ids)

    def _auto_finish(self, ids: list[uuid.UUID]) -> None:
        events = self._store.finish(
            ids,
            status=None,
            chunk_count=None,
            fail_file_names=set(self.fail_file_names),
            only_unfinished=True,
        )
        self._dispatch(events)

    def _require_document(self, document_id: uuid.UUID | str) -> uuid.UUID:
        doc = self._store.document(document_id)
        if doc is None:
            raise KeyError(f"no document {document_id} in the emulator")
        return doc.id

    # -- prompts, workflows and runs ---------------------------------------------------------

    def add_prompt(
        self,
        slug: str,
        *,
        versions: Iterable[int] = (1,),
        tags: Mapping[str, int] | None = None,
        inputs: Iterable[str] = (),
        output: str | OutputFactory | None = None,
        knowledge_base: str | None = None,
        question_input: str = "question",
    ) -> FakeRunnable:
        """Publish a prompt (PromptJuggler's UI does this; the API cannot).

        ``versions`` are its published revision numbers (the highest is ``__latest__``), ``tags``
        name some of them (``{"production": 2}``), ``inputs`` are the names a run must supply (a
        run without one is refused with 422). A run's ``output`` is this string, or this
        callable's answer to the run's inputs, or by default the inputs echoed back.
        Publishing a slug again replaces it.

        With ``knowledge_base`` (a slug, former slug or id of a knowledge base that exists;
        ``KeyError`` otherwise) the prompt searches it instead, like a prompt with
        PromptJuggler's knowledge-search tool: each run answers its ``question_input`` (added to
        ``inputs``) when it finishes, quoting the best-matching passages of the documents that
        are ``ready`` by then, with their file names, and its transcript has a
        ``knowledge_search`` tool item before the text (rules in :mod:`.search`). Each run
        answers its own question: a follow-up in the same thread is not read with the earlier
        ones, so ask it in full. ``output`` cannot be combined with it.
        """
        if knowledge_base is not None:
            self._store.knowledge_base(knowledge_base)  # KeyError now, not at the first run
        return self._runs.publish(
            FakeRunnable(
                "prompt",
                slug,
                versions=tuple(versions),
                tags=dict(tags or {}),
                inputs=tuple(inputs),
                output=output,
                knowledge_base=knowledge_base,
                question_input=question_input,
            )
        )

    def add_workflow(
        self,
        slug: str,
        *,
        versions: Iterable[int] = (1,),
        tags: Mapping[str, int] | None = None,
        inputs: Iterable[str] = (),
        outputs: Mapping[str, str | None] | OutputsFactory | None = None,
    ) -> FakeRunnable:
        """Publish a workflow; like :meth:`add_prompt`, with ``outputs`` (node name → text, or a
        callable of the inputs; by default ``{"output": <the inputs echoed>}``)."""
        return self._runs.publish(
            FakeRunnable(
                "workflow",
                slug,
                versions=tuple(versions),
                tags=dict(tags or {}),
                inputs=tuple(inputs),
                outputs=outputs,
            )
        )

    def runs(self, kind: str | None = None, slug: str | None = None) -> list[FakeRun]:
        """Snapshots of the runs created so far (``kind``: ``"prompt"`` or ``"workflow"``), in
        creation order: how a test proves a run was started exactly once."""
        return self._runs.runs(kind, slug)

    def run(self, run_id: uuid.UUID | str) -> FakeRun | None:
        """A snapshot of one run, or ``None`` if unknown."""
        return self._runs.run(run_id)

    def finish_run(
        self,
        run_id: uuid.UUID | str | None = None,
        *,
        status: str = "completed",
        output: str | _Unset | None = UNSET,
        outputs: Mapping[str, str | None] | None = None,
        error: str | None = None,
        errors: Iterable[str] | None = None,
        emitted: Iterable[Mapping[str, Any]] | None = None,
        token_usage: Mapping[str, Any] | None = None,
        cost: Mapping[str, Any] | None = None,
    ) -> None:
        """Finish a run (every pending run without ``run_id``) and send its ``*.finished``.

        ``status`` is any string (``completed``, ``failed``, one the app does not know); a run
        already finished is finished again and its event re-sent. Prompt runs take ``output``
        (``None`` is a real answer: a turn of only tool calls) and ``emitted``; workflow runs
        ``outputs`` and ``errors``. Unset, they come from the prompt or workflow; a failed run
        gets ``error="Run failed"``. ``token_usage`` and ``cost`` default to figures derived
        from the text's length.
        """
        if run_id is None:
            ids = self._runs.pending_ids()
        else:
            found = self._runs.run(run_id)
            if found is None:
                raise KeyError(f"no run {run_id} in the emulator")
            ids = [found.id]
        events = [
            self._runs.finish(
                each,
                status=status,
                output=output,
                outputs=outputs,
                error=error,
                errors=errors,
                emitted=emitted,
                token_usage=token_usage,
                cost=cost,
            )
            for each in ids
        ]
        self._dispatch(events)

    def _start_run(self, kind: str, slug: str, version: str, body: Any) -> FakeRun:
        run = self._runs.create(kind, slug, version, body)
        delay = self.run_delay
        if delay is not None:
            timer = threading.Timer(delay, self._auto_finish_run, args=(run.id,))
            timer.daemon = True
            with self._run_timers_lock:
                self._run_timers.add(timer)
            timer.start()
        return run

    def _auto_finish_run(self, run_id: uuid.UUID) -> None:
        with self._run_timers_lock:
            self._run_timers = {t for t in self._run_timers if t.is_alive()}
        found = self._runs.run(run_id)
        if found is None or found.status != "pending" or self._stopping.is_set():
            return  # reset, or finished by the test in the meantime
        try:
            self.finish_run(run_id)
        except Exception:  # a timer thread must never die noisily
            logger.exception("Emulator failed to finish run %s", run_id)

    def _cancel_run_timers(self) -> None:
        with self._run_timers_lock:
            timers, self._run_timers = self._run_timers, set()
        for timer in timers:
            timer.cancel()

    # -- webhooks ----------------------------------------------------------------------------

    def set_webhook(self, url: str | None, secret: str | None = None) -> None:
        """Where finished-processing webhooks go (``None``: nowhere), signed with ``secret``.

        Without ``secret`` the one given before (or to the constructor) is kept, so a fixture
        can set the secret and a test only the URL (e.g. ``live_server.url`` + the view's path).
        """
        secret = secret or self._webhook_secret
        if url is not None and not secret:
            raise ValueError("a webhook URL needs a signing secret (PromptJuggler always signs)")
        self._webhook_url = url
        self._webhook_secret = secret

    @property
    def webhook_url(self) -> str | None:
        return self._webhook_url

    def send_webhook(
        self,
        body: dict[str, Any] | bytes,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        url: str | None = None,
    ) -> int:
        """POST any body, signed, to the webhook URL (or ``url``); returns the HTTP status.

        For hand-made events: unknown ids, odd statuses, a stale ``timestamp``, a wrong
        ``secret``. Webhook faults do not apply. Raises :class:`WebhookDeliveryError` when the
        receiver does not answer.
        """
        target = url or self._webhook_url
        key = secret or self._webhook_secret
        if not target or not key:
            raise ValueError("send_webhook needs a URL and a secret (set_webhook or arguments)")
        raw = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        record = self._sender.post(target, raw, key, timestamp=timestamp)
        if record.status_code is None:
            raise WebhookDeliveryError(record.error or "no answer")
        return record.status_code

    @property
    def webhook_deliveries(self) -> list[RecordedDelivery]:
        """Every delivery so far (copies), in the order they were made."""
        return self._sender.records

    def wait_for_webhooks(
        self, count: int | None = None, timeout: float = 5.0
    ) -> list[RecordedDelivery]:
        """Wait until ``count`` deliveries are recorded, or with ``None`` until no delayed one is
        pending; returns the deliveries. Raises ``TimeoutError``."""
        return self._sender.wait(count, timeout)

    def _dispatch(self, events: list[WebhookEvent]) -> None:
        url, secret = self._webhook_url, self._webhook_secret
        if not events or not url or not secret:
            return
        plan = self._webhook_faults.plan(len(events))
        self._sender.deliver_batch(url, secret, events, plan)

    # -- faults ------------------------------------------------------------------------------

    def set_fault(
        self,
        endpoint: str = "*",
        *,
        status: int | None = None,
        retry_after: float | str | None = None,
        latency: float = 0.0,
        read_timeout: float | None = None,
        reset: bool = False,
        after_effect: bool = False,
        times: int | None = None,
        fraction: float | None = None,
        seed: int | None = None,
    ) -> None:
        """Make requests to ``endpoint`` misbehave.

        - ``status``: answer that code with ``{"error": …}`` (and ``Retry-After`` if given);
        - ``latency``: wait that long before answering (the request takes effect);
        - ``read_timeout``: read the request, then hold the connection silent that long, then
          close it; ``reset``: read the request, then abort with a TCP RST;
        - ``after_effect``: with ``status``/``read_timeout``/``reset``, the request takes
          effect first (document created or deleted, run created): the "outcome unknown" case;
        - ``times``: the next N matching requests; ``fraction``: that share of them (seeded
          by ``seed``); neither: until :meth:`clear_faults`.

        Rules apply in the order they were set; the first that matches a request fires.
        """
        self._faults.add(
            Fault(
                endpoint,
                status=status,
                retry_after=retry_after,
                latency=latency,
                read_timeout=read_timeout,
                reset=reset,
                after_effect=after_effect,
                times=times,
                fraction=fraction,
                seed=seed,
            )
        )

    def set_webhook_fault(
        self,
        *,
        duplicate: int = 0,
        delay: float = 0.0,
        reorder: bool = False,
        drop: float = 0.0,
        times: int | None = None,
        seed: int | None = None,
    ) -> None:
        """Make webhook deliveries misbehave (replaces any previous webhook fault).

        ``duplicate`` extra copies of each delivery; ``delay`` seconds before sending (on a
        background thread, so :meth:`finish` returns first); ``reorder`` the events of each
        batch (the order always changes when there are two or more); ``drop`` that share of
        deliveries (recorded with ``dropped=True``). ``times`` counts events.
        """
        self._webhook_faults.set(
            WebhookFault(
                duplicate=duplicate,
                delay=delay,
                reorder=reorder,
                drop=drop,
                times=times,
                seed=seed,
            )
        )

    def clear_faults(self) -> None:
        """Remove every request and webhook fault."""
        self._faults.clear()
        self._webhook_faults.set(None)

    # -- records -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request answered so far (a copy), oldest first."""
        with self._requests_lock:
            return list(self._requests)

    def request_count(self, endpoint: str | None = None) -> int:
        """How many requests reached ``endpoint`` (all requests with ``None``)."""
        with self._requests_lock:
            if endpoint is None:
                return len(self._requests)
            return sum(1 for r in self._requests if r.endpoint == endpoint)

    def reset(self) -> None:
        """Forget documents, runs, requests, deliveries, faults, failing names and scheduled
        processing. Knowledge bases, prompts and workflows stay (they are the account's setup),
        knowledge bases emptied, with their ids, slugs and aliases; the webhook URL and secret
        stay too."""
        self._store.reset()
        self._runs.reset()
        self._cancel_run_timers()
        self.clear_faults()
        self.fail_file_names.clear()
        if self._processor is not None:
            self._processor.clear()
        with self._requests_lock:
            self._requests.clear()
        self._sender.forget()

    # -- used by the HTTP handler ------------------------------------------------------------

    def _key_matches(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), self._api_key.encode())

    def _record_request(self, request: RecordedRequest) -> None:
        with self._requests_lock:
            self._requests.append(request)
        logger.info(
            "%s %s -> %s%s%s",
            request.method,
            request.path,
            request.status_code if request.status_code is not None else "no answer",
            f" [{request.faulted}]" if request.faulted else "",
            f" files={list(request.file_names)}" if request.file_names else "",
        )
