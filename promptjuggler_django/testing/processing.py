"""Automatic processing: documents seal after half the delay and finish after the whole delay.

One daemon thread sleeps until the next due step. Documents that come due together finish in
one batch, so their knowledge base's ``knowledgebase.finished`` follows their document events,
as it does when PromptJuggler finishes a multi-file upload.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable

logger = logging.getLogger("promptjuggler_django.emulator")

_SEAL, _FINISH = "seal", "finish"


class Processor:
    """Runs ``seal(ids)`` and ``finish(ids)`` callbacks when documents come due."""

    def __init__(
        self,
        delay: float,
        seal: Callable[[list[uuid.UUID]], None],
        finish: Callable[[list[uuid.UUID]], None],
    ) -> None:
        self.delay = delay
        self._seal = seal
        self._finish = finish
        self._queue: list[tuple[float, int, str, uuid.UUID]] = []
        self._counter = itertools.count()
        self._wake = threading.Condition()
        self._stopped = False
        self._busy = False
        self._thread = threading.Thread(
            target=self._run, name="pj-emulator-processing", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def schedule(self, document_ids: list[uuid.UUID]) -> None:
        now = time.monotonic()
        with self._wake:
            for doc_id in document_ids:
                heapq.heappush(
                    self._queue, (now + self.delay / 2, next(self._counter), _SEAL, doc_id)
                )
                heapq.heappush(
                    self._queue, (now + self.delay, next(self._counter), _FINISH, doc_id)
                )
            self._wake.notify_all()

    def clear(self) -> None:
        with self._wake:
            self._queue.clear()

    def idle(self) -> bool:
        with self._wake:
            return not self._queue and not self._busy

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped:
                    if self._queue and self._queue[0][0] <= time.monotonic():
                        break
                    timeout = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._wake.wait(timeout)
                if self._stopped:
                    return
                now = time.monotonic()
                due: dict[str, list[uuid.UUID]] = {_SEAL: [], _FINISH: []}
                while self._queue and self._queue[0][0] <= now:
                    _at, _n, step, doc_id = heapq.heappop(self._queue)
                    due[step].append(doc_id)
                self._busy = True
            try:
                if due[_SEAL]:
                    self._seal(due[_SEAL])
                if due[_FINISH]:
                    self._finish(due[_FINISH])
            except Exception:  # keep processing whatever one batch did
                logger.exception("Emulator processing step failed")
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()
