"""Schemathesis against the REST API's own OpenAPI schema.

The schema is the one DRF's generator renders (what ``./manage.py generateschema`` serves); every
operation gets bounded, reproducible generated requests (schema-conforming and not), sent through
Django's WSGI handler by an authenticated user. Each answer must not be a server error, and its
status code, content type and body must be the ones the schema documents for that operation.

To reach the success answers and not only the refusals: some generated files start with a PDF
signature (Schemathesis names a file part after the format its bytes start with, so it becomes
``files.pdf``, a supported type), and some ``{id}`` values are the test user's own documents or
another user's. Another user's document must never be answered with a 2xx.

The cases sent and the answers per status code are counted per operation and printed at the end
of the module; each operation must have seen a 2xx and no 5xx.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.core.files.base import ContentFile
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from rest_framework.schemas.openapi import SchemaGenerator
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.transport.serialization import Binary

from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument, Run, RunKind

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
PASSWORD = "fuzz-password"
PDF_SIGNATURE = b"%PDF-1.4\n"

schema = schemathesis.openapi.from_dict(
    SchemaGenerator(title="Documents", version="1").get_schema(request=None, public=True)
)

#: Documents the generated ``{id}`` values may name: the test user's own and another user's.
#: Filled by the ``documents`` fixture before any case is generated.
SEEDED: dict[str, list[int]] = {"own": [], "theirs": []}
#: The same for runs (of ``ASK_PROMPT``, the test settings' ``ask-handbook``).
SEEDED_RUNS: dict[str, list[int]] = {"own": [], "theirs": []}


def seeded_for(path: str) -> dict[str, list[int]]:
    return SEEDED_RUNS if path.startswith("/api/runs/") else SEEDED


#: Operation label → status code → answers, over the whole module (printed at its end).
ANSWERS: dict[str, Counter[int]] = {}
#: Operation label → requests that named another user's document.
THEIRS_ASKED: Counter[str] = Counter()


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    """The generated ``id``, or a seeded document's (a seeded run's, for a run)."""
    if not isinstance(path_parameters, dict) or "id" not in path_parameters:
        return st.just(path_parameters)
    seeds = seeded_for(context.operation.path if context.operation else "")
    seeded = st.sampled_from(seeds["own"] + seeds["theirs"])
    return st.one_of(st.just(path_parameters), seeded.map(lambda pk: {"id": str(pk)}))


@schema.hook
def flatmap_body(context: Any, body: Any) -> Any:
    """The generated upload, or the same with every file a PDF, into an existing knowledge base."""
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, list) or not files or not all(isinstance(f, Binary) for f in files):
        return st.just(body)
    signed = {**body, "files": [Binary(PDF_SIGNATURE + f.data) for f in files]}
    if "knowledge_base" in body:
        signed["knowledge_base"] = "kb_test"
    return st.sampled_from([body, signed])


@pytest.fixture
def wsgi_app() -> Iterator[WSGIHandler]:
    """Django's WSGI handler, minus closing the connection per request (as Django's test client).

    The test's transaction holds the connection; ``close_old_connections`` would end it.
    """
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def auth_headers(django_user_model: Any) -> dict[str, str]:
    """A fresh user, authenticated on every request with HTTP Basic (DRF's default classes)."""
    django_user_model.objects.create_user("fuzz", password=PASSWORD)
    token = base64.b64encode(f"fuzz:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def documents(auth_headers: dict[str, str], django_user_model: Any) -> Iterator[None]:
    knowledge_base = KnowledgeBase.objects.create(slug="kb_test")
    fuzz = django_user_model.objects.get(username="fuzz")
    other = django_user_model.objects.create_user("other", password="pw")

    def make(owner: Any, name: str) -> int:
        document = KnowledgeDocument.objects.create(
            knowledge_base=knowledge_base,
            owner=owner,
            file=ContentFile(b"text", name=name),
            file_name=name,
            file_size=4,
        )
        return document.pk

    def ran(owner: Any, question: str) -> int:
        run = Run.objects.create(
            kind=RunKind.PROMPT, slug="ask-handbook", inputs={"question": question}, owner=owner
        )
        # Old enough not to hold up the user's next question.
        Run.objects.filter(pk=run.pk).update(created_at=run.created_at - timedelta(days=1))
        return run.pk

    SEEDED["own"] = [make(fuzz, f"own-{i}.txt") for i in range(3)]
    SEEDED["theirs"] = [make(other, "theirs.txt")]
    SEEDED_RUNS["own"] = [ran(fuzz, f"Question {i}?") for i in range(3)]
    SEEDED_RUNS["theirs"] = [ran(other, "Theirs?")]
    yield
    SEEDED["own"], SEEDED["theirs"] = [], []
    SEEDED_RUNS["own"], SEEDED_RUNS["theirs"] = [], []


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    lines = ["", "Schemathesis: cases sent, and answers by status code"]
    for label, counts in ANSWERS.items():
        by_code = ", ".join(f"{code}: {n}" for code, n in sorted(counts.items()))
        lines.append(f"  {label}: {counts.total()} cases ({by_code})")
    total = sum(c.total() for c in ANSWERS.values())
    errors = sum(n for c in ANSWERS.values() for code, n in c.items() if code >= 500)
    lines.append(f"  total: {total} cases, {errors} answered 5xx")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines))


@pytest.fixture
def answers(request: pytest.FixtureRequest) -> Iterator[Counter[int]]:
    """This operation's answers by status code; it must have seen a success and no 5xx."""
    counts: Counter[int] = Counter()
    yield counts
    label = request.node.name.partition("[")[2].rstrip("]")
    ANSWERS[label] = counts
    assert counts, "no case was sent"
    assert not [code for code in counts if code >= 500], counts
    assert [code for code in counts if 200 <= code < 300], f"never a success: {counts}"
    if "{id}" in label:
        assert THEIRS_ASKED[label], "another user's document was never asked for"


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_the_api_answers_as_its_schema_documents(
    case: Any,
    wsgi_app: WSGIHandler,
    auth_headers: dict[str, str],
    documents: None,
    answers: Counter[int],
) -> None:
    response = case.call(app=wsgi_app, headers=auth_headers)
    answers[response.status_code] += 1
    theirs = seeded_for(case.operation.path)["theirs"]
    if case.path_parameters and int_or_none(case.path_parameters.get("id")) in theirs:
        THEIRS_ASKED[case.operation.label] += 1
        assert not 200 <= response.status_code < 300, "another user's object was served"
    case.validate_response(response, checks=CHECKS)


def int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
