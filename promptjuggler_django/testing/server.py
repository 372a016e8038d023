"""The emulator's HTTP/1.1 server: routing, the knowledge-base and run endpoints, and faults.

Bodies are always read to their end before answering (even for 401/404/422), so keep-alive
connections stay usable and a client that is still writing never gets a reset instead of the
answer. Only a body over the size bound is refused unread, and that connection is closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .bodies import BodyError, BodyReader, BodyTooLarge
from .faults import Fault
from .multipart import MultipartError, MultipartParser, PartHeaders, boundary_from_content_type
from .runs import RunRequestError
from .state import IncomingFile, file_extension

#: The file types PromptJuggler documents as accepted: the emulator's own copy, kept apart from
#: the app's list so that a client sending what the service refuses fails here too.
ACCEPTED_EXTENSIONS: tuple[str, ...] = (".txt", ".csv", ".tsv", ".md", ".html", ".pdf", ".docx")

if TYPE_CHECKING:
    from .emulator import FakePromptJuggler

logger = logging.getLogger("promptjuggler_django.emulator")

_ROUTES: list[tuple[re.Pattern[str], dict[str, str]]] = [
    (re.compile(r"^/api/v1/knowledge-bases/(?P<slug>[^/]+)/documents$"), {"POST": "upload"}),
    (re.compile(r"^/api/v1/knowledge-bases/(?P<slug>[^/]+)$"), {"GET": "get_knowledge_base"}),
    (
        re.compile(r"^/api/v1/knowledge-documents/(?P<id>[^/]+)$"),
        {"GET": "get_document", "DELETE": "delete"},
    ),
    (
        re.compile(r"^/api/v1/prompts/(?P<slug>[^/]+)/(?P<version>[^/]+)/runs$"),
        {"POST": "create_prompt_run"},
    ),
    (
        re.compile(r"^/api/v1/workflows/(?P<slug>[^/]+)/(?P<version>[^/]+)/runs$"),
        {"POST": "create_workflow_run"},
    ),
    (re.compile(r"^/api/v1/promptruns/(?P<id>[^/]+)$"), {"GET": "get_prompt_run"}),
    (re.compile(r"^/api/v1/workflowruns/(?P<id>[^/]+)$"), {"GET": "get_workflow_run"}),
]
#: A create-run body is a few KB (``envVars`` alone may be 64 KB): more is refused with 413.
MAX_JSON_BODY_BYTES = 1024 * 1024
# ``files`` (bare: one file, the last part wins), ``files[]`` (appended) and ``files[N]``.
_FILE_FIELD = re.compile(r"^files(\[(\d*)\])?$")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the emulator answered (recorded before the answer is written)."""

    method: str
    path: str
    #: One of :data:`~promptjuggler_django.testing.ENDPOINTS`, ``None`` for an unknown route.
    endpoint: str | None
    #: The status answered, ``None`` when no answer was sent (reset, read timeout, cut body).
    status_code: int | None
    #: File names of the file parts received, in order (uploads only).
    file_names: tuple[str, ...] = ()
    #: ``"status"``, ``"latency"``, ``"read_timeout"`` or ``"reset"`` when a fault fired.
    faulted: str | None = None
    #: Whether the bearer key matched.
    authorized: bool = False
    #: Body bytes received (after chunked decoding).
    body_bytes: int = 0
    #: Request headers, lowercased names; ``authorization`` is never kept.
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    #: The ``error`` message answered, if any.
    error: str | None = None
    received_at: float = 0.0


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def json_response(status: int, payload: Any, **headers: str) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return Response(status, body, {"Content-Type": "application/json", **headers})


def error_response(status: int, message: str, **headers: str) -> Response:
    response = json_response(status, {"error": message}, **headers)
    response.error = message
    return response


class _FilePart:
    def __init__(self, headers: PartHeaders, keep_limit: int) -> None:
        self.headers = headers
        self.size = 0
        self.hash = hashlib.sha256()
        self.keep_limit = keep_limit
        self.kept: bytearray | None = bytearray()

    def update(self, data: bytes) -> None:
        self.size += len(data)
        self.hash.update(data)
        if self.kept is not None:
            if self.size > self.keep_limit:
                self.kept = None  # too big to keep: only the hash and size remain
            else:
                self.kept += data

    def incoming(self) -> IncomingFile:
        return IncomingFile(
            file_name=self.headers.filename or "",
            size=self.size,
            sha256=self.hash.hexdigest(),
            content=bytes(self.kept) if self.kept is not None else None,
            declared_content_type=self.headers.content_type,
            part_name=self.headers.name,
        )


class _UploadCollector:
    """Receives multipart parts; keeps file parts as PromptJuggler would pick them."""

    def __init__(self, keep_limit: int) -> None:
        self.keep_limit = keep_limit
        self.slots: dict[str, _FilePart] = {}
        self.errors: list[str] = []
        self.file_names: list[str] = []
        self._current: _FilePart | None = None
        self._appended = 0

    def begin(self, headers: PartHeaders) -> None:
        self._current = None
        match = _FILE_FIELD.match(headers.name or "")
        if match is None or not headers.filename:
            return  # a form field, or a file field without a filename: not a file to PromptJuggler
        self.file_names.append(headers.filename)
        if file_extension(headers.filename) not in ACCEPTED_EXTENSIONS:
            self.errors.append(
                f"Unsupported file type: {headers.filename}. Supported types: "
                + ", ".join(ACCEPTED_EXTENSIONS)
            )
            return
        part = _FilePart(headers, self.keep_limit)
        if match.group(1) is None:
            key = "files"
        elif match.group(2) == "":
            key = f"files[]#{self._appended}"
            self._appended += 1
        else:
            key = f"files[{int(match.group(2))}]"
        # A repeated field name replaces the earlier file (form parsers keep the last value);
        # that is how bare repeated ``files`` parts collapse into one document.
        self.slots[key] = part
        self._current = part

    def data(self, chunk: bytes) -> None:
        if self._current is not None:
            self._current.update(chunk)

    def end(self) -> None:
        self._current = None


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: FakePromptJuggler) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.emulator = emulator
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, EmulatorRequestHandler)

    def stop(self) -> None:
        """``shutdown()`` without waiting out ``serve_forever``'s poll interval.

        The serving loop only sees the shutdown request when its ``select()`` wakes up; an
        empty connection wakes it at once (tests start and stop an emulator per test).
        """
        stopper = threading.Thread(target=self.shutdown, daemon=True)
        stopper.start()
        host, port = self.server_address[:2]
        while stopper.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection((str(host), port), timeout=0.5).close()
            stopper.join(0.02)
        self.close_connections()
        self.server_close()

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections."""
        with self.connections_lock:
            sockets = list(self.connections)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class EmulatorRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "PromptJugglerEmulator/1.0"
    sys_version = ""
    #: Idle keep-alive connections close after this many seconds.
    timeout = 60
    # Headers and body are two writes: without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms.
    disable_nagle_algorithm = True
    server: EmulatorHTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):  # the peer may be gone, or a fault reset the socket
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def do_HEAD(self) -> None:
        self._handle(head=True)

    # -- request flow ------------------------------------------------------------------------

    def _handle(self, *, head: bool = False) -> None:
        # One handler instance serves every request of a keep-alive connection: reset per request.
        emulator = self.server.emulator
        self._head_only = head
        self._responded = False
        self._body: BodyReader | None = None
        self._file_names: list[str] = []
        self._received_at = time.time()
        self._authorized = emulator._key_matches(self.headers.get("Authorization"))
        self._path = unquote(urlsplit(self.path).path)
        self._endpoint, self._params, self._allowed = self._route(self._path)
        try:
            self._body = self._body_reader()
            fault = emulator._faults.take(self._endpoint) if self._endpoint else None
            if fault is not None:
                self._apply_fault(fault)
            else:
                self._send(self._answer(commit=True))
        except BodyTooLarge as exc:
            # Refused unread: the rest of the body is still on the wire, so the connection closes.
            self.close_connection = True
            self._send(error_response(413, "Request body too large"), error=str(exc))
        except BodyError as exc:
            self.close_connection = True
            if self._body is None:  # bad framing headers: answerable
                self._send(error_response(400, str(exc)))
            else:  # a cut or broken body: the client is gone or the stream is unusable
                self._record(None, error=str(exc))
        except OSError as exc:
            self.close_connection = True
            self._record(None, error=str(exc))
        except Exception:
            logger.exception("Emulator failed on %s %s", self.command, self._path)
            self.close_connection = True
            if not self._responded:
                self._send(error_response(500, "Internal emulator error"))

    @property
    def _reader(self) -> BodyReader:
        assert self._body is not None, "the body reader is made before any answer"
        return self._body

    def _route(self, path: str) -> tuple[str | None, dict[str, str], dict[str, str]]:
        for pattern, methods in _ROUTES:
            match = pattern.match(path)
            if match:
                return methods.get(self.command), match.groupdict(), methods
        return None, {}, {}

    def _body_reader(self) -> BodyReader:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length_header = self.headers.get("Content-Length")
        length: int | None = None
        if length_header is not None and not chunked:
            if not length_header.strip().isdigit():
                raise BodyError("invalid Content-Length")
            length = int(length_header)
        return BodyReader(
            self.rfile,
            content_length=length,
            chunked=chunked,
            limit=self.server.emulator.max_request_bytes,
        )

    def _answer(self, *, commit: bool) -> Response:
        """The real answer; ``commit=False`` parses the request but changes nothing."""
        allowed = self._allowed
        if self._path.startswith("/api/") and not self._authorized:
            self._reader.drain()
            return error_response(401, "Invalid or missing API key")
        if not allowed:
            self._reader.drain()
            return error_response(404, "Not found")
        if self._endpoint is None:
            self._reader.drain()
            return error_response(405, "Method not allowed", Allow=", ".join(allowed))
        handler = getattr(self, f"_endpoint_{self._endpoint}")
        response: Response = handler(commit)
        return response

    def _apply_fault(self, fault: Fault) -> None:
        emulator = self.server.emulator
        real = self._answer(commit=fault.applies_effect)
        if fault.latency and emulator._stopping.wait(fault.latency):
            return
        if fault.reset:
            self._record(None, faulted="reset")
            self._reset_connection()
        elif fault.read_timeout is not None:
            self._record(None, faulted="read_timeout")
            emulator._stopping.wait(fault.read_timeout)
            self.close_connection = True
        elif fault.status is not None:
            headers = {}
            retry_after = fault.retry_after_header()
            if retry_after is not None:
                headers["Retry-After"] = retry_after
            try:
                phrase = HTTPStatus(fault.status).phrase
            except ValueError:
                phrase = "Error"
            self._send(error_response(fault.status, phrase, **headers), faulted="status")
        else:
            self._send(real, faulted="latency")

    # -- endpoints ---------------------------------------------------------------------------

    def _endpoint_upload(self, commit: bool) -> Response:
        emulator = self.server.emulator
        kb_id = emulator._store.resolve(self._params["slug"])
        if kb_id is None:
            self._reader.drain()
            return error_response(404, "Knowledge base not found")
        try:
            boundary = boundary_from_content_type(self.headers.get("Content-Type"))
        except MultipartError:
            self._reader.drain()
            return error_response(422, "No files were uploaded (expected multipart/form-data)")
        collector = _UploadCollector(emulator.keep_content_bytes)
        parser = MultipartParser(boundary, collector.begin, collector.data, collector.end)
        try:
            for chunk in self._reader:
                parser.feed(chunk)
            parser.close()
        except MultipartError as exc:
            self._reader.drain()
            self._file_names = collector.file_names
            return error_response(400, f"Malformed multipart body: {exc}")
        self._file_names = collector.file_names
        if collector.errors:
            return error_response(422, collector.errors[0])
        if not collector.slots:
            return error_response(422, "No files were uploaded")
        limit = emulator.max_files_per_request
        if limit is not None and len(collector.slots) > limit:
            return error_response(422, f"Too many files: at most {limit} per request")
        files = [part.incoming() for part in collector.slots.values()]
        if not commit:
            return json_response(200, [])
        documents = emulator._store_upload(kb_id, files)
        return json_response(200, [doc.as_response() for doc in documents])

    def _endpoint_get_knowledge_base(self, commit: bool) -> Response:
        self._reader.drain()
        kb_id = self.server.emulator._store.resolve(self._params["slug"])
        if kb_id is None:
            return error_response(404, "Knowledge base not found")
        return json_response(200, self.server.emulator._store.knowledge_base_response(kb_id))

    def _endpoint_get_document(self, commit: bool) -> Response:
        self._reader.drain()
        doc_id = _parse_uuid(self._params["id"])
        doc = self.server.emulator._store.document(doc_id) if doc_id else None
        if doc is None:
            return error_response(404, "Document not found")
        return json_response(200, doc.as_response())

    def _endpoint_delete(self, commit: bool) -> Response:
        self._reader.drain()
        store = self.server.emulator._store
        doc_id = _parse_uuid(self._params["id"])
        if doc_id is None:
            return error_response(404, "Document not found")
        # Without commit (a fault that must not take effect) only check that it exists.
        exists = store.delete_document(doc_id) if commit else store.document(doc_id) is not None
        if not exists:
            return error_response(404, "Document not found")
        return Response(204)

    def _endpoint_create_prompt_run(self, commit: bool) -> Response:
        return self._create_run("prompt", commit)

    def _endpoint_create_workflow_run(self, commit: bool) -> Response:
        return self._create_run("workflow", commit)

    def _create_run(self, kind: str, commit: bool) -> Response:
        emulator = self.server.emulator
        raw = bytearray()
        for chunk in self._reader:
            raw += chunk
            if len(raw) > MAX_JSON_BODY_BYTES:
                self._reader.drain()
                return error_response(413, "Request body too large")
        content_type = self.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            return error_response(422, "Expected a JSON body (Content-Type: application/json)")
        try:
            body = json.loads(bytes(raw))
        except ValueError:
            return error_response(422, "The request body is not valid JSON")
        slug, version = self._params["slug"], self._params["version"]
        try:
            if not commit:  # a fault that must not take effect: judge the request only
                emulator._runs.validate(kind, slug, version, body)
                return json_response(200, {"id": str(uuid.uuid4()), "thread": str(uuid.uuid4())})
            run = emulator._start_run(kind, slug, version, body)
        except RunRequestError as exc:
            return error_response(exc.status, str(exc))
        return json_response(200, {"id": str(run.id), "thread": str(run.thread)})

    def _endpoint_get_prompt_run(self, commit: bool) -> Response:
        return self._get_run("prompt")

    def _endpoint_get_workflow_run(self, commit: bool) -> Response:
        return self._get_run("workflow")

    def _get_run(self, kind: str) -> Response:
        self._reader.drain()
        found = self.server.emulator._runs.response(kind, _parse_uuid(self._params["id"]))
        if found is None:
            return error_response(404, f"{kind.capitalize()} run not found")
        return json_response(200, found)

    # -- output ------------------------------------------------------------------------------

    def _record(
        self, status: int | None, *, faulted: str | None = None, error: str | None = None
    ) -> None:
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        body = self._body
        self.server.emulator._record_request(
            RecordedRequest(
                method=self.command,
                path=self._path,
                endpoint=self._endpoint,
                status_code=status,
                file_names=tuple(self._file_names),
                faulted=faulted,
                authorized=self._authorized,
                body_bytes=body.bytes_read if body is not None else 0,
                headers=headers,
                error=error,
                received_at=self._received_at,
            )
        )

    def _send(
        self, response: Response, *, faulted: str | None = None, error: str | None = None
    ) -> None:
        self._record(response.status, faulted=faulted, error=error or response.error)
        self._responded = True
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.status != 204:
            self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if response.body and response.status != 204 and not self._head_only:
            self.wfile.write(response.body)

    def _reset_connection(self) -> None:
        """Abort with a TCP RST (linger 0) instead of an orderly close."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # The socket only really closes once its file objects are closed too.
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass


def _parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
