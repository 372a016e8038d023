"""The official Python SDK (``promptjuggler==1.7.0``), unchanged, against the emulator.

An independent client: if the SDK's generated models and multipart encoding accept what the
emulator says and sends, the emulator speaks the real wire format.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

promptjuggler = pytest.importorskip("promptjuggler")

from promptjuggler import (  # noqa: E402
    ApiError,
    KnowledgeBaseResponse,
    KnowledgeDocumentResponse,
    PromptJuggler,
    verify_webhook_signature,
)

from promptjuggler_django.testing import FakePromptJuggler  # noqa: E402
from tests.test_emulator import SECRET, WebhookReceiver  # noqa: E402

KEY = "pj_sdk_key"


@pytest.fixture
def fake() -> Iterator[FakePromptJuggler]:
    with FakePromptJuggler(KEY, knowledge_bases=["kb_sdk"]) as f:
        yield f


@pytest.fixture
def sdk(fake: FakePromptJuggler) -> PromptJuggler:
    return PromptJuggler(KEY, base_url=fake.url)


def test_upload_one_file(sdk, fake):
    (doc,) = sdk.upload_documents("kb_sdk", [("guide.md", b"# Guide\n" * 300)])
    assert isinstance(doc, KnowledgeDocumentResponse)
    assert (doc.file_name, doc.bytes, doc.status, doc.chunk_count) == (
        "guide.md",
        2400,
        "pending",
        0,
    )
    stored = fake.document(doc.id)
    assert stored is not None and stored.part_name == "files[0]"
    assert stored.declared_content_type == "text/markdown"  # the SDK guesses it from the name


def test_upload_several_files_in_one_request(sdk, fake):
    docs = sdk.upload_documents(
        "kb_sdk", [("a.txt", b"alpha"), ("b.csv", b"x,y\n1,2\n"), ("c.pdf", b"%PDF-1.7")]
    )
    assert [d.file_name for d in docs] == ["a.txt", "b.csv", "c.pdf"]
    assert fake.request_count("upload") == 1
    assert [d.part_name for d in fake.documents()] == ["files[0]", "files[1]", "files[2]"]
    assert [d.content for d in fake.documents()] == [b"alpha", b"x,y\n1,2\n", b"%PDF-1.7"]


def test_get_knowledge_base_and_document_through_processing(sdk, fake):
    docs = sdk.upload_documents("kb_sdk", [("a.txt", b"a" * 2500), ("b.txt", b"b" * 10)])
    kb = sdk.get_knowledge_base("kb_sdk")
    assert isinstance(kb, KnowledgeBaseResponse)
    assert (kb.status, kb.document_count, kb.chunk_count) == ("pending", 2, 0)
    assert kb.id == fake.knowledge_base("kb_sdk").id
    assert [(d.file_name, d.mime_type) for d in kb.documents] == [
        ("a.txt", "text/plain"),
        ("b.txt", "text/plain"),
    ]
    fake.seal()
    assert sdk.get_knowledge_document(docs[0].id).status == "sealed"
    fake.finish()
    got = sdk.get_knowledge_document(str(docs[0].id))
    assert (got.status, got.chunk_count, got.bytes) == ("ready", 2, 2500)
    kb = sdk.get_knowledge_base("kb_sdk")
    assert (kb.status, kb.document_count, kb.chunk_count) == ("ready", 2, 3)


def test_delete_document(sdk, fake):
    (doc,) = sdk.upload_documents("kb_sdk", [("a.txt", b"x")])
    assert sdk.delete_knowledge_document(doc.id) is None
    assert fake.document(doc.id) is None
    with pytest.raises(ApiError) as excinfo:
        sdk.delete_knowledge_document(doc.id)
    assert excinfo.value.status_code == 404


def test_bad_key_is_401(fake):
    bad = PromptJuggler("pj_wrong", base_url=fake.url)
    with pytest.raises(ApiError) as excinfo:
        bad.get_knowledge_base("kb_sdk")
    assert excinfo.value.status_code == 401
    with pytest.raises(ApiError) as excinfo:
        bad.upload_documents("kb_sdk", [("a.txt", b"x")])
    assert excinfo.value.status_code == 401
    assert fake.documents() == []


def test_unknown_slug_or_id_is_404(sdk):
    for call in (
        lambda: sdk.get_knowledge_base("kb_missing"),
        lambda: sdk.upload_documents("kb_missing", [("a.txt", b"x")]),
        lambda: sdk.get_knowledge_document(uuid.uuid4()),
    ):
        with pytest.raises(ApiError) as excinfo:
            call()
        assert excinfo.value.status_code == 404
        assert "not found" in str(excinfo.value)  # the SDK surfaces the {"error": …} message


def test_unsupported_type_is_422(sdk, fake):
    with pytest.raises(ApiError) as excinfo:
        sdk.upload_documents("kb_sdk", [("ok.txt", b"x"), ("tool.exe", b"MZ")])
    assert excinfo.value.status_code == 422
    assert "tool.exe" in str(excinfo.value)
    assert fake.documents() == []


def test_injected_status_faults_reach_the_sdk(sdk, fake):
    fake.set_fault("get_knowledge_base", status=500, times=1)
    with pytest.raises(ApiError) as excinfo:
        sdk.get_knowledge_base("kb_sdk")
    assert excinfo.value.status_code == 500
    assert sdk.get_knowledge_base("kb_sdk").document_count == 0


def test_sdk_quietly_retries_503_with_retry_after_on_gets(sdk, fake):
    # urllib3's default Retry honours Retry-After on 413/429/503 for idempotent methods, so
    # the SDK retries a GET by itself; the emulator's request log shows both attempts.
    fake.set_fault("get_knowledge_base", status=503, retry_after=0, times=1)
    assert sdk.get_knowledge_base("kb_sdk").status == "ready"
    assert [r.status_code for r in fake.requests] == [503, 200]


def test_sdk_verifies_emulator_signed_webhooks(sdk, fake):
    receiver = WebhookReceiver()
    try:
        fake.set_webhook(receiver.url, SECRET)
        sdk.upload_documents("kb_sdk", [("a.txt", b"x" * 1200)])
        fake.finish()
        received = receiver.wait(2)
    finally:
        receiver.close()
    for delivery in received:
        assert delivery.header is not None
        # The SDK wants the body as str (it silently fails on bytes).
        assert verify_webhook_signature(delivery.body.decode(), delivery.header, SECRET)
        assert not verify_webhook_signature(delivery.body.decode(), delivery.header, "whsec_other")


# -- runs ------------------------------------------------------------------------------------


def test_sdk_runs_a_prompt_and_reads_it_back(sdk, fake):
    from promptjuggler import CreatePromptRunResponse, PromptRun

    fake.add_prompt("ask", tags={"production": 1}, inputs=("question",))
    created = sdk.run_prompt(
        "ask", "production", {"question": "Vacation?"}, metadata={"local_run": "5", "t": ["a"]}
    )
    assert isinstance(created, CreatePromptRunResponse)
    stored = fake.run(created.id)
    assert stored is not None and stored.metadata == {"local_run": "5", "t": ["a"]}
    pending = sdk.get_prompt_run(created.id)
    assert isinstance(pending, PromptRun)
    assert (pending.status, pending.finished_at, pending.cost) == ("pending", None, None)
    fake.finish_run(created.id, output="25 days.", emitted=[{"tool": "cite", "payload": {"n": 1}}])
    run = sdk.get_prompt_run(str(created.id))
    assert (run.status, run.output) == ("completed", "25 days.")
    assert run.finished_at is not None and run.token_usage is not None
    assert run.cost is not None and run.cost.total > 0
    assert [e.tool for e in run.emitted] == ["cite"]
    assert len(run.transcript) == 2  # text, then the emitted data: the SDK parses both kinds
    follow_up = sdk.run_prompt("ask", 1, {"question": "And sick days?"}, thread=created.thread)
    assert follow_up.thread == created.thread


def test_sdk_reads_a_run_answered_from_a_knowledge_base(sdk, fake):
    fake.add_document("kb_sdk", "handbook.txt", b"Employees get 25 vacation days.", "ready")
    fake.add_prompt("ask", knowledge_base="kb_sdk")
    created = sdk.run_prompt("ask", 1, {"question": "How many vacation days?"})
    fake.finish_run(created.id)
    run = sdk.get_prompt_run(created.id)
    assert run.output == (
        'According to handbook.txt: "Employees get 25 vacation days." (handbook.txt)'
    )
    tool, text = (item.actual_instance for item in run.transcript)
    assert (tool.type, tool.name, tool.status, tool.queries) == (
        "tool",
        "knowledge_search",
        "ok",
        ["How many vacation days?"],
    )
    assert [c.title for c in tool.citations] == ["handbook.txt"]
    assert (text.type, text.content) == ("text", run.output)
    assert text.citations == tool.citations


def test_sdk_runs_a_workflow_and_reads_it_back(sdk, fake):
    from promptjuggler import WorkflowRun

    fake.add_workflow("triage", outputs={"label": "billing", "note": None})
    created = sdk.run_workflow("triage", "__latest__", {"ticket": "refund"}, priority="low")
    assert fake.run(created.id).priority == "low"
    fake.finish_run(created.id)
    run = sdk.get_workflow_run(created.id)
    assert isinstance(run, WorkflowRun)
    assert (run.status, run.outputs, run.errors) == (
        "completed",
        {"label": "billing", "note": None},
        [],
    )


def test_sdk_sees_the_emulators_run_refusals(sdk, fake):
    fake.add_prompt("ask", inputs=("question",))
    with pytest.raises(ApiError) as info:
        sdk.run_prompt("missing", 1, {})
    assert info.value.status_code == 404
    with pytest.raises(ApiError) as info:
        sdk.run_prompt("ask", 1, {"other": "x"})
    assert info.value.status_code == 422
    assert fake.runs() == []
