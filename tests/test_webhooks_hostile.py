"""Generated hostile requests: none may get a 5xx, none may change anything.

A seeded generator (reproducible: the failing request's index and seed are in the assertion)
builds requests that are each one plausible mistake or attack away from a valid delivery, and
posts them through the whole Django stack at every webhook URL. Real rows exist for every id
the bodies name, so a request that slipped through would show up as a changed row.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client

from promptjuggler_django import signature
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, WebhookDelivery
from promptjuggler_django.webhooks import REFUSAL_STATUS, Refusal

from .webhook_support import (
    NOW,
    PRIMARY,
    SECONDARY,
    TOLERANCE,
    URL_NAMES,
    fixed_clock,  # noqa: F401  (fixture)
    make_documents,
    make_knowledge_base,
    url,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fixed_clock")]

REQUESTS = 10_000
SEED = 20_240_601
MAX_BODY = 2048  # small, so that oversized bodies stay cheap to generate


class Generator:
    """Builds one hostile request at a time from a seeded random source."""

    def __init__(self, rng: random.Random, document_ids: list[str], kb_id: str) -> None:
        self.rng = rng
        self.document_ids = document_ids
        self.kb_id = kb_id
        self.urls = [url(name) for name in URL_NAMES]
        self.mutations: list[Callable[[bytes], tuple[str, bytes, dict[str, str]]]] = [
            self.no_header,
            self.garbage_header,
            self.wrong_secret,
            self.tampered_body,
            self.flipped_signature,
            self.out_of_tolerance,
            self.unicode_digits,
            self.non_ascii_v1,
            self.conflicting_timestamps,
            self.unknown_scheme_only,
            self.signature_of_another_body,
            self.oversized_body,
            self.wrong_method,
            self.header_fragments,
        ]

    # Bodies -------------------------------------------------------------------------------------

    def body(self) -> bytes:
        rng = self.rng
        choice = rng.randrange(6)
        if choice == 0:
            payload: Any = {
                "id": rng.choice(self.document_ids),
                "status": rng.choice(["pending", "sealed", "ready", "failed", "x"]),
                "chunkCount": rng.randrange(100),
            }
        elif choice == 1:
            payload = {
                "id": self.kb_id,
                "status": rng.choice(["pending", "ready", "failed"]),
                "documentCount": rng.randrange(10),
                "chunkCount": rng.randrange(100),
            }
        elif choice == 2:
            payload = {"id": str(uuid.UUID(int=rng.getrandbits(128))), "status": "completed"}
        elif choice == 3:
            return rng.randbytes(rng.randrange(64))
        elif choice == 4:
            return b"[" * rng.randrange(1, 900)
        else:
            payload = {"id": rng.choice(self.document_ids), "status": "\u0000\ud800"}
        return json.dumps(payload).encode()

    def signed(self, body: bytes, *, secret: str = PRIMARY, timestamp: int = NOW) -> str:
        return signature.sign(body, secret, timestamp)

    # Mutations: each returns (method, body, headers) -------------------------------------------

    def no_header(self, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        return "POST", body, {}

    def garbage_header(self, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        raw = self.rng.randbytes(self.rng.randrange(200)).decode("latin-1")
        return "POST", body, {signature.HEADER: raw}

    def wrong_secret(self, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        secret = self.rng.choice(["", "whsec_test_primar", "whsec_test_primary ", "WHSEC_TEST"])
        header = f"t={NOW},v1={signature.compute(body, secret, NOW)}"
        return "POST", body, {signature.HEADER: header}

    def tampered_body(self, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        header = self.signed(body, secret=self.rng.choice([PRIMARY, SECONDARY]))
        mutated = bytearray(body or b"{}")
        how = self.rng.randrange(3)
        if how == 0:
            index = self.rng.randrange(len(mutated))
            mutated[index] ^= 1 << self.rng.randrange(8)
        elif how == 1:
            mutated += self.rng.choice([b" ", b"\n", b"\x00", b"}"])
        else:
            mutated = mutated[:-1] if len(mutated) > 1 else mutated + b"x"
        return "POST", bytes(mutated), {signature.HEADER: header}

    def flipped_signature(self, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        header = self.signed(body)
        index = self.rng.randrange(header.index("v1=") + 3, len(header))
        replacement = self.rng.choice([c for c in "0123456789abcdef" if c != header[index]])
        return "POST", body, {signature.HEADER: header[:index] + replacement + header[index + 1 :]}

    def out_of_tolerance(self, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        offset = self.rng.choice([1, -1]) * self.rng.randrange(TOLERANCE + 1, 10**9)
        timestamp = max(0, NOW + offset)
        return "POST", body, {signature.HEADER: self.signed(body, timestamp=timestamp)}

    def unicode_digits(self, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        zero = self.rng.choice([0x0660, 0x06F0, 0x0966, 0xFF10, 0x1D7CE])
        digits = "".join(chr(zero + int(d)) for d in str(NOW))
        v1 = signature.compute(body, PRIMARY, NOW)
        return "POST", body, {signature.HEADER: f"t={digits},v1={v1}"}

    def non_ascii_v1(self, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        v1 = list(signature.compute(body, PRIMARY, NOW))
        v1[self.rng.randrange(64)] = self.rng.choice("éß٣ａ\u00a0")
        return "POST", body, {signature.HEADER: f"t={NOW},v1={''.join(v1)}"}

    def conflicting_timestamps(self, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        v1 = signature.compute(body, PRIMARY, NOW)
        other = NOW + self.rng.randrange(1, TOLERANCE)
        parts = [f"t={NOW}", f"t={other}", f"v1={v1}"]
        self.rng.shuffle(parts)
        return "POST", body, {signature.HEADER: ",".join(parts)}

    def unknown_scheme_only(self, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        v1 = signature.compute(body, PRIMARY, NOW)
        scheme = self.rng.choice(["v0", "v2", "V1", "v1 x", "sig"])
        return "POST", body, {signature.HEADER: f"t={NOW},{scheme}={v1}"}

    def signature_of_another_body(self, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        other = self.body()
        if other == body:
            other += b" "
        return "POST", body, {signature.HEADER: self.signed(other)}

    def oversized_body(self, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        big = body + b" " * (MAX_BODY + 1 - len(body) + self.rng.randrange(4096))
        return "POST", big, {signature.HEADER: self.signed(big)}  # correctly signed, too big

    def wrong_method(self, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        method = self.rng.choice(["GET", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT", "PROPFIND"])
        return method, body, {signature.HEADER: self.signed(body)}

    def header_fragments(self, body: bytes) -> tuple[str, bytes, dict[str, str]]:
        v1 = signature.compute(body, PRIMARY, NOW)
        fragments = [f"t={NOW}", f"v1={v1}", "=", ",", " ", "t", "v1", "==", f"v1={v1[:32]}"]
        picked = [self.rng.choice(fragments) for _ in range(self.rng.randrange(1, 6))]
        header = "".join(picked)
        if signature.verify(body, header, [PRIMARY, SECONDARY], now=NOW):
            header = header.replace(v1, v1[::-1])  # keep it hostile
        return "POST", body, {signature.HEADER: header}

    def __iter__(self) -> Iterator[tuple[str, str, bytes, dict[str, str]]]:
        for _ in range(REQUESTS):
            mutation = self.rng.choice(self.mutations)
            method, body, headers = mutation(self.body())
            yield self.rng.choice(self.urls), method, body, headers


def snapshot() -> list[Any]:
    documents = list(KnowledgeDocument.objects.order_by("pk").values())
    bases = list(KnowledgeBase.objects.order_by("pk").values())
    return [documents, bases, WebhookDelivery.objects.count()]


@pytest.fixture
def quiet_security_log():
    """10,000 refusals would log 10,000 lines; the security suite checks the log."""
    names = ("django.security", "django.request", "promptjuggler_django.webhooks")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.mark.usefixtures("quiet_security_log")
def test_hostile_requests_change_nothing_and_never_get_a_5xx(settings) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "WEBHOOK_MAX_BODY_BYTES": MAX_BODY}
    kb = make_knowledge_base(remote_id=uuid.uuid4())
    documents = make_documents(kb, 5, remote_status="pending")
    before = snapshot()
    generator = Generator(
        random.Random(SEED), [str(d.remote_id) for d in documents], str(kb.remote_id)
    )
    client = Client()
    statuses: Counter[int] = Counter()
    for index, (target, method, body, headers) in enumerate(generator):
        response = client.generic(
            method, target, body, content_type="application/json", headers=headers
        )
        statuses[response.status_code] += 1
        assert response.status_code in (400, 405, 413), (
            f"request {index} (seed {SEED}): {method} {target} -> {response.status_code}"
        )
        reason = Refusal(response.json()["error"])  # every refusal says why
        assert REFUSAL_STATUS[reason] == response.status_code
    assert sum(statuses.values()) >= 10_000
    assert set(statuses) == {400, 405, 413}, statuses
    assert snapshot() == before
