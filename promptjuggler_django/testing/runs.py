"""The emulator's prompts, workflows and runs: what ``POST …/runs`` accepts and what a run becomes.

PromptJuggler runs published prompts and workflows asynchronously: a create answers at once with
``{"id", "thread"}``, the run stays ``pending`` until it finishes, then ``promptrun.finished`` /
``workflowrun.finished`` (``{"id", "status"}`` only) is sent and ``GET /promptruns/{id}`` /
``/workflowruns/{id}`` has the result. The rules for a create body are the emulator's own reading
of the API reference, kept apart from the app's so a client/service mismatch fails a test.

Like :mod:`.state`, everything runs under one lock, callers get copies, and the webhook events a
change causes are returned, never sent from inside the lock. A prompt published with a knowledge
base answers from its documents (:mod:`.search`) when the run finishes: the run book asks the
store for copies of them, and searches, outside its own lock.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import search
from .state import FakeDocument, WebhookEvent

PROMPT_RUN_EVENT = "promptrun.finished"
WORKFLOW_RUN_EVENT = "workflowrun.finished"

#: What a create body's ``priority`` may be (the API's default is ``normal``).
PRIORITIES: tuple[str, ...] = ("onsite", "normal", "low")
#: ``envVars`` limits from the API reference.
MAX_ENV_VARS = 50
MAX_ENV_VARS_BYTES = 64 * 1024
_ENV_VAR_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
#: The version that names the newest published revision.
LATEST = "__latest__"

#: Produces a prompt run's output from its inputs.
OutputFactory = Callable[[Mapping[str, str]], "str | None"]
#: Produces a workflow run's outputs (node name → text) from its inputs.
OutputsFactory = Callable[[Mapping[str, str]], "Mapping[str, str | None]"]
#: A knowledge base's current slug and its searchable documents (copies), by slug, former slug
#: or id; ``KeyError`` when there is no such knowledge base (``Store.searchable_documents``).
KnowledgeSource = Callable[[str], "tuple[str, list[FakeDocument]]"]


class RunRequestError(ValueError):
    """A create-run request PromptJuggler would refuse; ``status`` is 404 or 422."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class FakeRunnable:
    """A published prompt or workflow (see :meth:`FakePromptJuggler.add_prompt`)."""

    kind: str  # "prompt" or "workflow"
    slug: str
    #: Published revision numbers; the highest is ``__latest__``.
    versions: tuple[int, ...] = (1,)
    #: Tag → revision, e.g. ``{"production": 2}``.
    tags: dict[str, int] = field(default_factory=dict)
    #: Input names a run must supply (others are accepted and ignored).
    inputs: tuple[str, ...] = ()
    #: ``None`` for the default (the inputs echoed), a string, or a callable of the inputs.
    output: str | OutputFactory | None = None
    #: Workflows: node name → text, or a callable of the inputs.
    outputs: Mapping[str, str | None] | OutputsFactory | None = None
    #: Prompts: the knowledge base (slug, former slug or id) whose ``ready`` documents answer
    #: each run (see :mod:`.search`); ``None`` for a prompt without knowledge search.
    knowledge_base: str | None = None
    #: Prompts with a knowledge base: the input that carries the question.
    question_input: str = "question"

    def resolve(self, version: str) -> int | None:
        """The revision a path's version segment names, or ``None``."""
        if version == LATEST:
            return max(self.versions) if self.versions else None
        if version.isascii() and version.isdigit():
            number = int(version)
            return number if number in self.versions else None
        return self.tags.get(version)


@dataclass
class FakeRun:
    """A run as the emulator stores it (a snapshot copy when handed to tests)."""

    id: uuid.UUID
    kind: str  # "prompt" or "workflow"
    slug: str
    version: int
    thread: uuid.UUID
    inputs: dict[str, str]
    status: str = "pending"
    priority: str = "normal"
    environment: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    channel: str | None = None
    #: The run's ``envVars``: kept for assertions, never in a repr.
    env_vars: dict[str, str] = field(default_factory=dict, repr=False)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    output: str | None = None
    emitted: list[dict[str, Any]] = field(default_factory=list)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, str | None] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    error: str | None = None
    token_usage: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None

    @property
    def event(self) -> str:
        return PROMPT_RUN_EVENT if self.kind == "prompt" else WORKFLOW_RUN_EVENT

    def as_response(self) -> dict[str, Any]:
        """``PromptRun`` or ``WorkflowRun``, camelCase, as ``GET`` answers it."""
        body: dict[str, Any] = {
            "id": str(self.id),
            "status": self.status,
            "createdAt": _iso(self.created_at),
            "finishedAt": _iso(self.finished_at) if self.finished_at else None,
        }
        if self.kind == "prompt":
            body.update(
                output=self.output,
                emitted=copy.deepcopy(self.emitted),
                transcript=copy.deepcopy(self.transcript),
                error=self.error,
            )
        else:
            body.update(outputs=dict(self.outputs), errors=list(self.errors))
        body.update(tokenUsage=copy.deepcopy(self.token_usage), cost=copy.deepcopy(self.cost))
        return body

    def finished_event(self) -> WebhookEvent:
        return WebhookEvent(self.event, self.id, {"id": str(self.id), "status": self.status})


class RunBook:
    """Published prompts and workflows, and their runs."""

    def __init__(self, knowledge: KnowledgeSource | None = None) -> None:
        self.lock = threading.RLock()
        #: Where knowledge-search prompts find documents; ``None``: they find nothing.
        self._knowledge = knowledge
        self._runnables: dict[tuple[str, str], FakeRunnable] = {}
        self._runs: dict[uuid.UUID, FakeRun] = {}

    # -- setup -------------------------------------------------------------------------------

    def publish(self, runnable: FakeRunnable) -> FakeRunnable:
        if not runnable.slug or "/" in runnable.slug:
            raise ValueError(f"invalid {runnable.kind} slug {runnable.slug!r}")
        if not runnable.versions or any(v < 1 for v in runnable.versions):
            raise ValueError("versions must be positive revision numbers")
        if any(v not in runnable.versions for v in runnable.tags.values()):
            raise ValueError("every tag must name one of the versions")
        if runnable.knowledge_base is not None:
            if runnable.kind != "prompt":
                raise ValueError("only a prompt can search a knowledge base")
            if runnable.output is not None:
                raise ValueError("a prompt that searches a knowledge base computes its output")
            if runnable.question_input not in runnable.inputs:
                runnable = dataclasses.replace(
                    runnable, inputs=(*runnable.inputs, runnable.question_input)
                )
        with self.lock:
            self._runnables[(runnable.kind, runnable.slug)] = runnable
            return dataclasses.replace(runnable)

    # -- the API -----------------------------------------------------------------------------

    def validate(self, kind: str, slug: str, version: str, body: Any) -> tuple[FakeRunnable, int]:
        """What a create request names, or :class:`RunRequestError` (404, then 422)."""
        with self.lock:
            runnable = self._runnables.get((kind, slug))
        if runnable is None:
            raise RunRequestError(404, f"{kind.capitalize()} not found")
        revision = runnable.resolve(version)
        if revision is None:
            raise RunRequestError(404, f"{kind.capitalize()} version not found")
        _check_body(kind, body, runnable.inputs)
        return runnable, revision

    def create(self, kind: str, slug: str, version: str, body: Any) -> FakeRun:
        """Validate and store a ``pending`` run; returns a copy."""
        runnable, revision = self.validate(kind, slug, version, body)
        thread = body.get("thread")
        run = FakeRun(
            id=uuid.uuid4(),
            kind=kind,
            slug=runnable.slug,
            version=revision,
            thread=uuid.UUID(thread) if thread else uuid.uuid4(),
            inputs=dict(body["inputs"]),
            priority=body.get("priority") or "normal",
            environment=body.get("environment"),
            metadata=copy.deepcopy(body.get("metadata") or {}),
            channel=(body.get("channel") or "default") if kind == "prompt" else None,
            env_vars=dict(body.get("envVars") or {}),
        )
        with self.lock:
            self._runs[run.id] = run
            return dataclasses.replace(run)

    def response(self, kind: str, run_id: uuid.UUID | None) -> dict[str, Any] | None:
        with self.lock:
            run = self._runs.get(run_id) if run_id else None
            return run.as_response() if run is not None and run.kind == kind else None

    # -- finishing ---------------------------------------------------------------------------

    def finish(
        self,
        run_id: uuid.UUID,
        *,
        status: str,
        output: str | _Unset | None,
        outputs: Mapping[str, str | None] | None,
        error: str | None,
        errors: Iterable[str] | None,
        emitted: Iterable[Mapping[str, Any]] | None,
        token_usage: Mapping[str, Any] | None,
        cost: Mapping[str, Any] | None,
    ) -> WebhookEvent:
        """Give a run its result and status; returns its ``*.finished`` event (sent again if the
        run had already finished: a way to replay an event). A knowledge-search prompt without
        an explicit ``output`` answers from the documents that are ready now."""
        grounded = None
        if isinstance(output, _Unset) and status != "failed":
            grounded = self._search(run_id)
        with self.lock:
            run = self._runs.get(run_id)
            if run is None:
                raise KeyError(f"no run {run_id} in the emulator")
            runnable = self._runnables.get((run.kind, run.slug))
            failed = status == "failed"
            run.status = status
            run.finished_at = None if status == "pending" else datetime.now(UTC)
            run.error = error if error is not None else ("Run failed" if failed else None)
            if run.kind == "prompt":
                if grounded is not None:
                    output = grounded.output
                elif isinstance(output, _Unset):
                    output = None if failed else _default_output(runnable, run.inputs)
                run.output = output
                run.emitted = [dict(e) for e in emitted or ()]
                run.transcript = _transcript(output, run.emitted, grounded)
                produced = output or ""
            else:
                if outputs is None:
                    outputs = {} if failed else _default_outputs(runnable, run.inputs)
                run.outputs = dict(outputs)
                run.errors = list(errors or ([run.error] if failed and run.error else []))
                produced = "".join(v or "" for v in run.outputs.values())
            usage = (
                dict(token_usage)
                if token_usage is not None
                else _default_usage(run.inputs, produced)
            )
            run.token_usage = usage
            run.cost = dict(cost) if cost is not None else _default_cost(usage)
            return run.finished_event()

    def _search(self, run_id: uuid.UUID) -> search.Answer | None:
        """The answer of a knowledge-search prompt's run, or ``None`` for any other run. The
        store's lock is taken (inside :attr:`_knowledge`) and the search made outside ours, so a
        slow search never holds up the run endpoints."""
        with self.lock:
            run = self._runs.get(run_id)
            runnable = self._runnables.get(("prompt", run.slug)) if run else None
            if run is None or run.kind != "prompt" or runnable is None:
                return None
            if runnable.knowledge_base is None:
                return None
            handle, question = runnable.knowledge_base, run.inputs.get(runnable.question_input)
        try:
            name, documents = self._knowledge(handle) if self._knowledge else (handle, [])
        except KeyError:  # the prompt names a knowledge base the account does not have
            name, documents = handle, []
        return search.answer(question or "", name, documents)

    def pending_ids(self) -> list[uuid.UUID]:
        with self.lock:
            return [r.id for r in self._runs.values() if r.status == "pending"]

    # -- inspection --------------------------------------------------------------------------

    def run(self, run_id: uuid.UUID | str) -> FakeRun | None:
        key = _as_uuid(run_id)
        with self.lock:
            found = self._runs.get(key) if key else None
            return copy.deepcopy(found) if found else None

    def runs(self, kind: str | None = None, slug: str | None = None) -> list[FakeRun]:
        with self.lock:
            return [
                copy.deepcopy(r)
                for r in self._runs.values()
                if (kind is None or r.kind == kind) and (slug is None or r.slug == slug)
            ]

    def reset(self) -> None:
        """Forget every run; prompts and workflows stay (they are the account's setup)."""
        with self.lock:
            self._runs.clear()


class _Unset:
    """The default of ``output``: ``None`` is a real output (a turn of only tool calls)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


def _check_body(kind: str, body: Any, required: tuple[str, ...]) -> None:
    """PromptJuggler's 422s for a create body, as the API reference describes them."""
    if not isinstance(body, dict):
        raise RunRequestError(422, "The request body must be a JSON object")
    inputs = body.get("inputs")
    if not isinstance(inputs, dict):
        raise RunRequestError(422, "inputs: required, an object of strings")
    for name, value in inputs.items():
        if not isinstance(value, str):
            raise RunRequestError(422, f"inputs.{name}: must be a string")
    missing = [name for name in required if name not in inputs]
    if missing:
        raise RunRequestError(422, f"Missing inputs: {', '.join(missing)}")
    thread = body.get("thread")
    if thread is not None and _as_uuid(thread) is None:
        raise RunRequestError(422, "thread: must be a UUID")
    priority = body.get("priority")
    if priority is not None and priority not in PRIORITIES:
        raise RunRequestError(422, f"priority: must be one of {', '.join(PRIORITIES)}")
    for key in ("environment", "channel"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise RunRequestError(422, f"{key}: must be a string")
    if kind == "workflow" and body.get("channel") is not None:
        raise RunRequestError(422, "channel: only prompt runs have a memory channel")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise RunRequestError(422, "metadata: must be an object")
        for name, value in metadata.items():
            strings = isinstance(value, list) and all(isinstance(v, str) for v in value)
            if not isinstance(value, str) and not strings:
                raise RunRequestError(422, f"metadata.{name}: a string or an array of strings")
    env_vars = body.get("envVars")
    if env_vars is not None:
        if not isinstance(env_vars, dict) or len(env_vars) > MAX_ENV_VARS:
            raise RunRequestError(422, f"envVars: an object of at most {MAX_ENV_VARS} entries")
        for name, value in env_vars.items():
            if not _ENV_VAR_NAME.match(name) or not isinstance(value, str):
                raise RunRequestError(422, f"envVars: {name!r} must be UPPER_CASE with a string")
        if len(json.dumps(env_vars).encode()) > MAX_ENV_VARS_BYTES:
            raise RunRequestError(422, "envVars: at most 64 KB")


def _default_output(runnable: FakeRunnable | None, inputs: Mapping[str, str]) -> str | None:
    configured = runnable.output if runnable is not None else None
    if callable(configured):
        return configured(inputs)
    if configured is not None:
        return configured
    shown = ", ".join(f"{k}={v}" for k, v in sorted(inputs.items()))
    return f"{runnable.slug if runnable else 'prompt'} answered ({shown})"


def _default_outputs(
    runnable: FakeRunnable | None, inputs: Mapping[str, str]
) -> Mapping[str, str | None]:
    configured = runnable.outputs if runnable is not None else None
    if callable(configured):
        return configured(inputs)
    if configured is not None:
        return configured
    return {"output": _default_output(runnable, inputs)}


def _transcript(
    output: str | None, emitted: list[dict[str, Any]], grounded: search.Answer | None = None
) -> list[dict[str, Any]]:
    """A prompt run's items: the knowledge search (if any), the text, then the emitted data."""
    items: list[dict[str, Any]] = [grounded.tool_item()] if grounded is not None else []
    if output:
        citations = grounded.citations if grounded is not None else []
        items.append({"type": "text", "content": output, "citations": citations})
    items.extend(
        {"type": "data", "tool": e.get("tool", ""), "payload": e.get("payload", {})}
        for e in emitted
    )
    return items


def _default_usage(inputs: Mapping[str, str], produced: str) -> dict[str, Any]:
    """About one token per four characters, like the tokenizers' rule of thumb."""
    spent_in = 1 + sum(len(k) + len(v) for k, v in inputs.items()) // 4
    spent_out = 1 + len(produced) // 4
    return {
        "input": spent_in,
        "inputCached": 0,
        "output": spent_out,
        "reasoning": 0,
        "total": spent_in + spent_out,
        "serviceTier": "default",
        "inputCacheWrite": 0,
    }


def _default_cost(usage: Mapping[str, Any]) -> dict[str, Any]:
    """A deterministic price: $1 per million input tokens, $4 per million output tokens."""
    tokens_in, tokens_out = usage.get("input"), usage.get("output")
    tokens_in = tokens_in if isinstance(tokens_in, int) else 0
    tokens_out = tokens_out if isinstance(tokens_out, int) else 0
    spent_in, spent_out = tokens_in / 1e6, 4 * tokens_out / 1e6
    zero = {"input": 0, "cachedInput": 0, "cacheWrite": 0, "output": 0, "webSearch": 0, "total": 0}
    success = {**zero, "input": spent_in, "output": spent_out, "total": spent_in + spent_out}
    return {"success": success, "retries": zero, "total": spent_in + spent_out}


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _as_uuid(value: Any) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
