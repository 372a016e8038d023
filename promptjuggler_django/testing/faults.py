"""Fault rules: what the emulator does instead of (or on top of) answering normally.

Request faults are kept in the order they were set; each request takes the first rule that
matches its endpoint and whose dice roll (``fraction``) succeeds. A rule with ``times`` is
dropped once it has fired that often; a rule without it stays until cleared. Webhook faults are
one policy at a time (setting one replaces the previous).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

#: Endpoint names a request fault can target (``"*"`` matches them all).
ENDPOINTS: tuple[str, ...] = (
    "upload",
    "get_knowledge_base",
    "get_document",
    "delete",
    "create_prompt_run",
    "create_workflow_run",
    "get_prompt_run",
    "get_workflow_run",
)


@dataclass
class Fault:
    """One request fault rule (see :meth:`FakePromptJuggler.set_fault`)."""

    endpoint: str = "*"
    status: int | None = None
    retry_after: float | str | None = None
    latency: float = 0.0
    read_timeout: float | None = None
    reset: bool = False
    after_effect: bool = False
    times: int | None = None
    fraction: float | None = None
    seed: int | None = None
    fired: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.endpoint != "*" and self.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be '*' or one of {', '.join(ENDPOINTS)}")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError("status must be an HTTP error code (400-599)")
        if self.latency < 0 or (self.read_timeout is not None and self.read_timeout < 0):
            raise ValueError("latency and read_timeout must be >= 0")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 (or None for until cleared)")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError("fraction must be in (0, 1]")
        if sum((self.status is not None, self.read_timeout is not None, self.reset)) > 1:
            raise ValueError("choose one of status, read_timeout and reset per rule")
        if self.status is None and self.read_timeout is None and not self.reset:
            if not self.latency:
                raise ValueError("a fault needs status, latency, read_timeout or reset")
        self._rng = random.Random(self.seed)  # noqa: S311 - test dice, not cryptography

    @property
    def kind(self) -> str:
        """What a request that hit this rule records as ``RecordedRequest.faulted``."""
        if self.reset:
            return "reset"
        if self.read_timeout is not None:
            return "read_timeout"
        if self.status is not None:
            return "status"
        return "latency"

    @property
    def applies_effect(self) -> bool:
        """Whether the request's real effect happens (always for pure latency)."""
        return self.after_effect or self.kind == "latency"

    def retry_after_header(self) -> str | None:
        value = self.retry_after
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)


class FaultBook:
    """The active request fault rules, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._rules.append(fault)

    def clear(self, endpoint: str | None = None) -> None:
        with self._lock:
            if endpoint is None:
                self._rules.clear()
            else:
                self._rules = [r for r in self._rules if r.endpoint != endpoint]

    def active(self) -> list[Fault]:
        with self._lock:
            return list(self._rules)

    def take(self, endpoint: str) -> Fault | None:
        """The rule this request triggers, counting it as fired, or ``None``."""
        with self._lock:
            for rule in self._rules:
                if rule.endpoint not in ("*", endpoint):
                    continue
                if rule.fraction is not None and rule._rng.random() >= rule.fraction:
                    continue
                rule.fired += 1
                if rule.times is not None and rule.fired >= rule.times:
                    self._rules.remove(rule)
                return rule
            return None


@dataclass
class WebhookFault:
    """How webhook deliveries misbehave (see :meth:`FakePromptJuggler.set_webhook_fault`)."""

    duplicate: int = 0
    delay: float = 0.0
    reorder: bool = False
    drop: float = 0.0
    times: int | None = None
    seed: int | None = None
    fired: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.duplicate < 0 or self.delay < 0:
            raise ValueError("duplicate and delay must be >= 0")
        if not 0 <= self.drop <= 1:
            raise ValueError("drop must be a fraction in [0, 1]")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 (or None for until cleared)")
        self._rng = random.Random(self.seed)  # noqa: S311 - test dice, not cryptography


@dataclass(frozen=True)
class PlannedDelivery:
    """One POST to make: which event of the batch, after how long, or dropped."""

    index: int
    delay: float = 0.0
    dropped: bool = False
    duplicate: bool = False


class WebhookFaultBook:
    """Turns a batch of events into planned deliveries under the current webhook fault."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fault: WebhookFault | None = None

    def set(self, fault: WebhookFault | None) -> None:
        with self._lock:
            self._fault = fault

    @property
    def current(self) -> WebhookFault | None:
        with self._lock:
            return self._fault

    def plan(self, count: int) -> list[PlannedDelivery]:
        """Plan ``count`` events' deliveries. ``times`` counts events the fault touched."""
        with self._lock:
            fault = self._fault
            if fault is None:
                return [PlannedDelivery(i) for i in range(count)]
            faulted: list[int] = []
            for i in range(count):
                if fault.times is not None and fault.fired >= fault.times:
                    break
                fault.fired += 1
                faulted.append(i)
            if fault.times is not None and fault.fired >= fault.times:
                self._fault = None
            order = list(range(count))
            if fault.reorder and len(faulted) > 1:
                shuffled = faulted[:]
                fault._rng.shuffle(shuffled)
                if shuffled == faulted:  # a shuffle may be the identity: tests need a change
                    shuffled = faulted[1:] + faulted[:1]
                for slot, index in zip(faulted, shuffled, strict=True):
                    order[slot] = index
            chosen = set(faulted)
            planned: list[PlannedDelivery] = []
            for index in order:
                if index not in chosen:
                    planned.append(PlannedDelivery(index))
                    continue
                if fault.drop and fault._rng.random() < fault.drop:
                    planned.append(PlannedDelivery(index, dropped=True))
                    continue
                for copy in range(1 + fault.duplicate):
                    planned.append(PlannedDelivery(index, delay=fault.delay, duplicate=copy > 0))
            return planned
