"""The emulator's knowledge-search prompts: answers quoted from the ready documents of a
knowledge base, the rules that pick the passages, the transcript, and the command's option."""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from collections.abc import Iterator

import httpx
import pytest
from django.core.management import CommandError, call_command

from promptjuggler_django.testing import FakeDocument, FakePromptJuggler
from promptjuggler_django.testing.search import CITATION_URL, passages, words
from tests.test_emulator import KEY, SECRET, WebhookReceiver, emulator_command, upload
from tests.test_emulator_runs import http  # noqa: F401 (a fixture: the API, with the key)

HANDBOOK = (
    b"Welcome to the company.\n\n"
    b"Employees get 25 vacation days per year.\n"
    b"Unused vacation days expire in March.\n\n"
    b"Sick days need a doctor's note after three days.\n"
)


@pytest.fixture
def fake() -> Iterator[FakePromptJuggler]:
    with FakePromptJuggler(KEY, webhook_secret=SECRET, knowledge_bases=["kb_handbook"]) as f:
        f.add_prompt("ask", knowledge_base="kb_handbook")
        yield f


def ask(http: httpx.Client, fake: FakePromptJuggler, question: str, **body: object) -> dict:
    """Start a run of ``ask``, finish it, and read it back as the API answers it."""
    created = http.post(
        "/api/v1/prompts/ask/1/runs", json={"inputs": {"question": question}, **body}
    )
    assert created.status_code == 200, created.text
    fake.finish_run(created.json()["id"])
    return http.get(f"/api/v1/promptruns/{created.json()['id']}").json()


def ready(fake: FakePromptJuggler, file_name: str, content: bytes, slug: str = "kb_handbook"):
    return fake.add_document(slug, file_name, content, status="ready")


def document(file_name: str, content: bytes | None) -> FakeDocument:
    return FakeDocument(
        id=uuid.uuid4(),
        knowledge_base_slug="kb",
        file_name=file_name,
        bytes=len(content or b""),
        mime_type="",
        status="ready",
        chunk_count=1,
        sha256="",
        content=content,
    )


def texts(file_name: str, content: bytes | None) -> list[str]:
    return [p.text for p in passages(document(file_name, content))]


# -- answers ---------------------------------------------------------------------------------


def test_the_answer_quotes_the_best_passage_and_its_file(fake, http):
    ready(fake, "handbook.txt", HANDBOOK)
    ready(fake, "travel.txt", b"Trains for journeys under five hours.\n")
    run = ask(http, fake, "How many vacation days do I get per year?")
    assert run["status"] == "completed"
    assert run["output"].splitlines()[0] == (
        'According to handbook.txt: "Employees get 25 vacation days per year. '
        'Unused vacation days expire in March." (handbook.txt)'
    )
    assert "travel.txt" not in run["output"]


def test_nothing_found_says_so_and_cites_nothing(fake, http):
    ready(fake, "handbook.txt", HANDBOOK)
    run = ask(http, fake, "What about unicorns?")
    assert run["output"] == "I found nothing about that in kb_handbook."
    tool, text = run["transcript"]
    assert tool["citations"] == [] and text["citations"] == []
    # a question of stop words only asks about nothing
    assert ask(http, fake, "What is it?")["output"] == run["output"]


def test_an_empty_knowledge_base_finds_nothing(fake, http):
    assert ask(http, fake, "vacation")["output"] == "I found nothing about that in kb_handbook."


def test_more_shared_words_rank_first_and_weak_matches_are_left_out(fake, http):
    ready(
        fake,
        "a.txt",
        b"Parking is free.\n\n"  # 2 of the 5 words: under half the best, left out
        b"Permits for cars and bicycles are renewed yearly.\n\n"  # 3 of 5
        b"Parking permits for bicycles and cars are free.\n",  # all 5
    )
    run = ask(http, fake, "Free parking permits for bicycles and cars?")
    assert run["output"].splitlines() == [
        'According to a.txt: "Parking permits for bicycles and cars are free." (a.txt)',
        'According to a.txt: "Permits for cars and bicycles are renewed yearly." (a.txt)',
    ]
    assert [c["title"] for c in run["transcript"][0]["citations"]] == ["a.txt"]


def test_ties_go_to_the_file_name_then_the_position_and_three_at_most(fake, http):
    ready(fake, "b.txt", b"Badge one.\n\nBadge two.\n")
    ready(fake, "a.txt", b"Badge three.\n\nBadge four.\n")  # uploaded later, named first
    run = ask(http, fake, "badge")
    assert run["output"].splitlines() == [
        'According to a.txt: "Badge three." (a.txt)',
        'According to a.txt: "Badge four." (a.txt)',
        'According to b.txt: "Badge one." (b.txt)',
    ]
    assert [c["title"] for c in run["transcript"][1]["citations"]] == ["a.txt", "b.txt"]


def test_only_ready_documents_with_kept_bytes_are_searched(http):
    with FakePromptJuggler(KEY, knowledge_bases=["kb_handbook"], keep_content_bytes=100) as fake:
        fake.add_prompt("ask", knowledge_base="kb_handbook")
        fake.add_document("kb_handbook", "pending.txt", b"Vacation pending.")
        fake.add_document("kb_handbook", "sealed.txt", b"Vacation sealed.", status="sealed")
        fake.add_document("kb_handbook", "failed.txt", b"Vacation failed.", status="failed")
        ready(fake, "big.txt", b"Vacation big. " * 20)  # 280 bytes: content not kept
        gone = ready(fake, "deleted.txt", b"Vacation deleted.")
        with httpx.Client(base_url=fake.url, headers={"Authorization": f"Bearer {KEY}"}) as c:
            assert c.delete(f"/api/v1/knowledge-documents/{gone.id}").status_code == 204
            assert ask(c, fake, "vacation")["output"].startswith("I found nothing")
            ready(fake, "ready.txt", b"Vacation ready.")
            assert ask(c, fake, "vacation")["output"] == (
                'According to ready.txt: "Vacation ready." (ready.txt)'
            )


def test_the_answer_is_made_when_the_run_finishes(fake, http):
    created = http.post("/api/v1/prompts/ask/1/runs", json={"inputs": {"question": "vacation"}})
    (doc,) = upload(http, ("handbook.txt", HANDBOOK), slug="kb_handbook").json()
    fake.finish(doc["id"])  # ready after the run started, before it finished: it counts
    fake.finish_run(created.json()["id"])
    assert fake.run(created.json()["id"]).output.startswith("According to handbook.txt")


def test_the_transcript_has_the_search_then_the_cited_text(fake, http):
    doc = ready(fake, "handbook.txt", HANDBOOK)
    run = ask(http, fake, "How many vacation days?")
    citation = {"title": "handbook.txt", "url": CITATION_URL.format(id=doc.id)}
    assert run["transcript"] == [
        {
            "type": "tool",
            "name": "knowledge_search",
            "status": "ok",
            "queries": ["How many vacation days?"],
            "citations": [citation],
        },
        {"type": "text", "content": run["output"], "citations": [citation]},
    ]
    assert citation["url"].startswith("https://promptjuggler.invalid/")
    assert run["tokenUsage"]["output"] > 1 and run["cost"]["total"] > 0
    # the snapshot a test reads is a copy: changing it changes nothing
    stored = fake.run(run["id"])
    stored.transcript.clear()
    assert fake.run(run["id"]).transcript == run["transcript"]


def test_a_follow_up_in_the_thread_answers_its_own_question(fake, http):
    ready(fake, "handbook.txt", HANDBOOK)
    first = http.post(
        "/api/v1/prompts/ask/1/runs", json={"inputs": {"question": "vacation days?"}}
    ).json()
    fake.finish_run(first["id"])
    follow_up = ask(http, fake, "And sick leave?", thread=first["thread"])
    assert fake.run(follow_up["id"]).thread == uuid.UUID(first["thread"])
    assert follow_up["output"].startswith('According to handbook.txt: "Sick days need')
    assert follow_up["transcript"][0]["queries"] == ["And sick leave?"]


def test_an_explicit_output_or_a_failure_skips_the_search(fake, http):
    ready(fake, "handbook.txt", HANDBOOK)
    one = http.post("/api/v1/prompts/ask/1/runs", json={"inputs": {"question": "vacation"}})
    two = http.post("/api/v1/prompts/ask/1/runs", json={"inputs": {"question": "vacation"}})
    fake.finish_run(one.json()["id"], output="Twenty-five.")
    fake.finish_run(two.json()["id"], status="failed")
    assert [i["type"] for i in fake.run(one.json()["id"]).transcript] == ["text"]
    failed = fake.run(two.json()["id"])
    assert (failed.output, failed.transcript) == (None, [])


# -- the knowledge base and the question -----------------------------------------------------


def test_the_knowledge_base_resolves_by_former_slug_and_id(fake, http):
    ready(fake, "handbook.txt", HANDBOOK)
    kb = fake.rename_knowledge_base("kb_handbook", "kb_people")
    fake.add_prompt("ask", knowledge_base="kb_handbook")  # the old slug still names it
    assert ask(http, fake, "vacation")["output"].startswith("According to handbook.txt")
    assert ask(http, fake, "unicorns")["output"] == "I found nothing about that in kb_people."
    fake.add_prompt("ask", knowledge_base=str(kb.id))
    assert ask(http, fake, "vacation")["output"].startswith("According to handbook.txt")


def test_the_question_input_is_required_and_can_be_renamed(fake, http):
    answer = http.post("/api/v1/prompts/ask/1/runs", json={"inputs": {"query": "vacation"}})
    assert answer.status_code == 422
    prompt = fake.add_prompt("lookup", inputs=("lang",), knowledge_base="kb_handbook",
                             question_input="query")  # fmt: skip
    assert prompt.inputs == ("lang", "query")
    ready(fake, "handbook.txt", HANDBOOK)
    created = http.post(
        "/api/v1/prompts/lookup/1/runs", json={"inputs": {"query": "vacation", "lang": "en"}}
    ).json()
    fake.finish_run(created["id"])
    assert fake.run(created["id"]).output.startswith("According to handbook.txt")


def test_publishing_a_search_prompt_checks_its_arguments(fake):
    with pytest.raises(KeyError):
        fake.add_prompt("p", knowledge_base="kb_missing")
    with pytest.raises(ValueError, match="computes its output"):
        fake.add_prompt("p", knowledge_base="kb_handbook", output="fixed")


# -- passages --------------------------------------------------------------------------------


def test_words_fold_case_plurals_and_stop_words():
    assert words("How many Vacation DAYS do I get? days_off") == {"vacation", "day", "get", "off"}
    assert words("the process is") == {"process"}


def test_plain_text_splits_at_blank_lines_and_list_items():
    text = b"Travel policy\n\n1. Book trains.\n2. Hotels: up to 150 EUR\na night.\n- Meals.\n"
    assert texts("t.txt", text) == [
        "Travel policy",
        "1. Book trains.",
        "2. Hotels: up to 150 EUR a night.",
        "- Meals.",
    ]


def test_markdown_headings_separate_passages_and_markup_is_not_quoted():
    text = b"# Handbook\n## Holidays\nEveryone has **27 days**.\n# Equipment\nA `laptop`."
    assert texts("h.md", text) == ["Everyone has 27 days.", "A laptop."]


def test_html_loses_its_head_scripts_headings_and_tags():
    page = (
        b"<html><head><title>Checklist</title><style>p{}</style></head><body>"
        b"<h1>Onboarding</h1><script>var vacation=1;</script><!-- note -->"
        b"<ol><li>Collect your <b>laptop</b>.</li><li>Meet&nbsp;your buddy &amp; team.</li></ol>"
        b"<p>Line one<br>line two</p></body></html>"
    )
    assert texts("c.html", page) == [
        "Collect your laptop.",
        "Meet your buddy & team.",
        "Line one",
        "line two",
    ]


def test_csv_and_tsv_rows_carry_their_column_names():
    assert texts("o.csv", b"city,desks\nBerlin,120\n\nLisbon,\n") == [
        "city: Berlin; desks: 120",
        "city: Lisbon",
    ]
    assert texts("o.tsv", b"city\tdesks\nToronto\t60\n") == ["city: Toronto; desks: 60"]


def test_docx_paragraphs_are_read_and_pdfs_and_unreadable_files_are_skipped():
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(
            "word/document.xml",
            '<w:document><w:body><w:p w:rsidR="1"><w:r><w:t>Holidays: </w:t></w:r>'
            '<w:r><w:t xml:space="preserve">27 days &amp; more</w:t></w:r></w:p>'
            "<w:p><w:r><w:t>Second.</w:t></w:r></w:p></w:body></w:document>",
        )
    assert texts("w.docx", archive.getvalue()) == ["Holidays: 27 days & more", "Second."]
    assert texts("fake.docx", b"not a zip") == []
    assert texts("r.pdf", b"%PDF-1.7 vacation days") == []
    assert texts("r.txt", None) == []  # bytes not kept
    assert texts("noextension", b"vacation") == []


def test_bytes_are_decoded_as_utf8_with_errors_replaced():
    assert texts("u.txt", b"\xef\xbb\xbfCaf\xc3\xa9 \xff open") == ["Caf\u00e9 \ufffd open"]


def test_long_paragraphs_are_cut_between_sentences():
    sentence = "Employees get many benefits every single year. " * 20
    pieces = texts("long.txt", sentence.encode())
    assert len(pieces) > 1
    assert all(len(p) <= 400 for p in pieces)
    assert all(p.endswith("year.") for p in pieces)
    assert " ".join(pieces) == sentence.strip()


# -- the command ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--search-prompt", "ask"], "'ask' is not SLUG=KB_SLUG"),
        (["--search-prompt", "=kb_x"], "is not SLUG=KB_SLUG"),
        (["--knowledge-base", "kb_a", "--search-prompt", "ask=kb_b"], "--knowledge-base kb_b"),
        (["--knowledge-base", "kb_a", "--search-prompt", "a/b=kb_a"], "invalid prompt slug"),
        (["--run-delay", "-1"], "0 to 86400 seconds"),
    ],
)
def test_the_command_refuses_a_search_prompt_it_cannot_publish(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("promptjuggler_emulator", "--port", "0", *args, stdout=io.StringIO())


def test_the_command_publishes_a_search_prompt_and_finishes_runs():
    receiver = WebhookReceiver(secret="whsec_test_primary")
    try:
        with emulator_command(
            "--port=0",
            "--processing-delay=0",
            "--run-delay=0",
            "--knowledge-base=kb_cli",
            "--search-prompt=ask=kb_cli",
            f"--webhook-url={receiver.url}",
        ) as command:
            headers = {"Authorization": "Bearer pj_test_key"}
            with httpx.Client(base_url=command.url, headers=headers) as c:
                upload(c, ("handbook.txt", HANDBOOK), slug="kb_cli")
                receiver.wait(2)  # the document's and the knowledge base's events: it is ready
                created = c.post(
                    "/api/v1/prompts/ask/production/runs",
                    json={"inputs": {"question": "How many vacation days?"}},
                ).json()
                receiver.wait(3)
                assert receiver.bodies()[2] == {"id": created["id"], "status": "completed"}
                run = c.get(f"/api/v1/promptruns/{created['id']}").json()
    finally:
        receiver.close()
    assert run["output"].startswith('According to handbook.txt: "Employees get 25')
    assert command.returncode == 0, command.err
    prompt_line = "  Prompt ask answers its 'question' input from kb_cli (version 1, 'production'"
    assert any(line.startswith(prompt_line) for line in command.banner), command.banner
    assert "runs complete 0s after they start" in command.banner[-1]


def test_a_run_finished_by_its_timer_answers_from_the_documents():
    with FakePromptJuggler(KEY, knowledge_bases=["kb_handbook"], run_delay=0) as quick:
        quick.add_prompt("ask", knowledge_base="kb_handbook")
        ready(quick, "handbook.txt", HANDBOOK)
        with httpx.Client(base_url=quick.url, headers={"Authorization": f"Bearer {KEY}"}) as c:
            created = c.post(
                "/api/v1/prompts/ask/1/runs", json={"inputs": {"question": "vacation"}}
            ).json()
        deadline = time.monotonic() + 5
        while quick.run(created["id"]).status == "pending" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert quick.run(created["id"]).output.startswith("According to handbook.txt")
