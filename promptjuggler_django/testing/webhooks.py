"""Signed webhook deliveries from the emulator, recorded for tests.

PromptJuggler sends no event-name header and no delivery id: the body's shape is all a receiver
gets. Deliveries are signed when they are actually sent (a delayed one carries a fresh ``t=``).
A failing receiver never breaks the emulator: the error is recorded and the sender moves on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..signature import HEADER, sign
from .faults import PlannedDelivery
from .state import WebhookEvent

logger = logging.getLogger("promptjuggler_django.emulator")


@dataclass(frozen=True)
class RecordedDelivery:
    """One webhook POST the emulator made (or dropped on purpose)."""

    url: str
    body: bytes = field(repr=False)
    #: The ``PromptJuggler-Signature`` header value sent.
    header: str = field(repr=False)
    #: The receiver's HTTP status, or ``None`` when no answer came (see ``error``).
    status_code: int | None
    #: Why no status: a connection error, a timeout, or ``"dropped"`` by a webhook fault.
    error: str | None = None
    #: ``knowledgedocument.finished``, ``knowledgebase.finished``, ``promptrun.finished`` or
    #: ``workflowrun.finished`` (not sent on the wire), or
    #: ``None`` for :meth:`FakePromptJuggler.send_webhook`.
    event: str | None = None
    duplicate: bool = False
    dropped: bool = False
    sent_at: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    """Posts signed bodies with short timeouts; runs delayed deliveries on daemon threads."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 2.0))
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._records: list[RecordedDelivery] = []
        self._pending = 0
        self._client: httpx.Client | None = None
        self._closed = threading.Event()

    # -- records -----------------------------------------------------------------------------

    @property
    def records(self) -> list[RecordedDelivery]:
        with self._lock:
            return list(self._records)

    def forget(self) -> None:
        with self._lock:
            self._records.clear()

    def wait(self, count: int | None, timeout: float) -> list[RecordedDelivery]:
        """Wait until ``count`` deliveries are recorded (or, with ``None``, none is pending)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                done = len(self._records) >= count if count is not None else self._pending == 0
                if done:
                    return list(self._records)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(self._records)} webhook deliveries recorded, {self._pending} "
                        f"pending after {timeout}s (waited for {count if count else 'all'})"
                    )
                self._changed.wait(remaining)

    # -- sending -----------------------------------------------------------------------------

    def deliver_batch(
        self,
        url: str,
        secret: str,
        events: list[WebhookEvent],
        plan: list[PlannedDelivery],
    ) -> None:
        """Send the planned deliveries: immediate ones now, in order; delayed ones later."""
        for item in plan:
            event = events[item.index]
            if item.dropped:
                self._record(
                    RecordedDelivery(
                        url=url,
                        body=event.encode(),
                        header="",
                        status_code=None,
                        error="dropped",
                        event=event.name,
                        dropped=True,
                        sent_at=time.time(),
                    )
                )
            elif item.delay > 0:
                self._schedule(url, secret, event, item)
            else:
                self.post(url, event.encode(), secret, event=event.name, duplicate=item.duplicate)

    def post(
        self,
        url: str,
        body: bytes,
        secret: str,
        *,
        timestamp: int | None = None,
        event: str | None = None,
        duplicate: bool = False,
    ) -> RecordedDelivery:
        """One signed POST; never raises for the receiver's failures (they are recorded)."""
        header = sign(body, secret, timestamp)
        status: int | None = None
        error: str | None = None
        try:
            response = self._http().post(
                url,
                content=body,
                headers={"Content-Type": "application/json", HEADER: header},
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
            logger.warning("Webhook to %s failed: %s", url, error)
        except RuntimeError:
            if not self._closed.is_set():
                raise
            error = "emulator stopped"  # stop() closed the client under this delivery
        record = RecordedDelivery(
            url=url,
            body=body,
            header=header,
            status_code=status,
            error=error,
            event=event,
            duplicate=duplicate,
            sent_at=time.time(),
        )
        self._record(record)
        logger.info("Webhook %s -> %s: %s", event or "(raw)", url, status or error)
        return record

    def close(self) -> None:
        """Cancel delayed deliveries and close the HTTP client."""
        self._closed.set()
        with self._lock:
            client, self._client = self._client, None
            self._changed.notify_all()
        if client is not None:
            client.close()

    def reopen(self) -> None:
        self._closed.clear()

    # -- internals ---------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                # No proxies from the environment: deliveries go straight to the receiver.
                self._client = httpx.Client(timeout=self._timeout, trust_env=False)
            return self._client

    def _record(self, record: RecordedDelivery) -> None:
        with self._changed:
            self._records.append(record)
            self._changed.notify_all()

    def _schedule(self, url: str, secret: str, event: WebhookEvent, item: PlannedDelivery) -> None:
        with self._lock:
            self._pending += 1

        def later() -> None:
            try:
                if not self._closed.wait(item.delay):
                    self.post(
                        url, event.encode(), secret, event=event.name, duplicate=item.duplicate
                    )
            except Exception:  # a delivery thread must never die noisily
                logger.exception("Delayed webhook to %s failed", url)
            finally:
                with self._changed:
                    self._pending -= 1
                    self._changed.notify_all()

        threading.Thread(target=later, name="pj-emulator-webhook", daemon=True).start()
