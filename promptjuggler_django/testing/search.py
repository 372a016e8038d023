"""Knowledge-base search for the emulator's prompts: answers quoted from the stored documents.

PromptJuggler has no search endpoint: a prompt with a knowledge-search tool searches a knowledge
base and a model writes the answer. The emulator has no model, so a prompt published with
``knowledge_base=`` (:meth:`FakePromptJuggler.add_prompt`) answers deterministically instead:
the passages of the knowledge base's ``ready`` documents that share the most words with the
question, quoted with the file names they came from. Tests and the demo then see answers
grounded in what was uploaded, and a document that is not ``ready`` yet is visibly not found.

The rules, kept simple enough to predict in a test:

- **Passages.** A document's bytes are decoded as UTF-8 (errors replaced). ``.txt`` and ``.md``
  split at blank lines and before list items; Markdown headings separate passages and are not
  passages themselves (nor is ``**bold**`` markup quoted). ``.html`` loses ``<head>``,
  ``<script>``, ``<style>``, headings and tags; block tags (``<p>``, ``<li>``, ``<br>``, …)
  separate passages. ``.csv``/``.tsv``: each row is a passage, written ``column: value; …``
  with the header row's names. ``.docx``: each paragraph of ``word/document.xml``. PDFs (their
  text sits in compressed streams the emulator does not parse), documents without extractable
  text and documents whose bytes were not kept are skipped. A passage longer than
  :data:`PASSAGE_CHARS` is cut into groups of whole sentences.
- **Score.** Words are lower-cased runs of letters and digits, :data:`STOP_WORDS` dropped, and a
  plural ``s`` folded (``days`` matches ``day``). A passage scores the number of distinct
  question words it contains.
- **Answer.** Up to :data:`MAX_PASSAGES` passages that score more than 0 and at least half the
  best score, best first; ties go to the file name (alphabetical), then the upload order, then
  the position in the file. Each is quoted as ``According to <file>: "<passage>" (<file>)``, one
  per line. Nothing found: ``I found nothing about that in <knowledge base slug>.``
- **Transcript.** A ``knowledge_search`` tool item (status ``ok``, ``queries`` the question,
  ``citations`` one ``{title: file name, url: CITATION_URL}`` per quoted document), then the
  text item with the same citations. The official SDK documents a tool item's ``queries`` and
  ``citations`` as filled only by PromptJuggler's web search: the emulator fills them so a test
  sees what was searched and found, and code that lists sources must cope with empty lists.

Pure functions over document snapshots: no state and no lock. The run book gathers the
documents under the store's lock (copies) and calls :func:`answer` outside every lock.
"""

from __future__ import annotations

import csv
import html
import io
import re
import uuid
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .state import FakeDocument, file_extension

#: The tool item's ``name`` in a grounded run's transcript.
TOOL_NAME = "knowledge_search"
#: The tool item's ``status``: the official SDK's ``ToolStatus`` is ``ok``/``error``/``pending``.
TOOL_STATUS = "ok"
#: A citation's ``url``: the SDK requires a string, and a document has no public address, so a
#: stable one that can never resolve (``.invalid`` is reserved) and names the document.
CITATION_URL = "https://promptjuggler.invalid/knowledge-documents/{id}"
#: At most this many passages are quoted in one answer.
MAX_PASSAGES = 3
#: Paragraphs longer than this (characters) are cut into groups of whole sentences.
PASSAGE_CHARS = 400
#: ``word/document.xml`` is read up to this many bytes (a small zip can inflate a lot).
MAX_DOCX_XML_BYTES = 8 * 1024 * 1024

#: Words too common to say what a question is about.
STOP_WORDS = frozenset(
    """a about after all also am an and any are as at be been before but by can could did do
    does for from had has have how i if in into is it its many me much my no not of on or our
    should so than that the their them then there these they this to us was we were what when
    where which who why will with would you your""".split()  # noqa: SIM905 (a list is longer)
)

_WORD = re.compile(r"[^\W_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}(?:\s|$)")
_MD_MARKUP = re.compile(r"\*\*|__|`")
_HTML_DROPPED = re.compile(
    r"<!--.*?-->|<(head|script|style|h[1-6])\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL
)
_HTML_BLOCK = re.compile(
    r"</?(?:p|div|li|ul|ol|br|hr|tr|td|th|table|section|article|blockquote|pre|dt|dd|dl|"
    r"header|footer|main|nav|aside|figure|figcaption|caption|body|html)\b[^>]*>",
    re.IGNORECASE,
)
_HTML_TAG = re.compile(r"<[^>]*>")
_DOCX_PARAGRAPH = re.compile(r"<w:p[ >].*?</w:p>", re.DOTALL)
_DOCX_TEXT = re.compile(r"<w:t(?:\s[^>]*)?>([^<]*)</w:t>")


@dataclass(frozen=True)
class Passage:
    """A searchable piece of a document."""

    file_name: str
    document_id: uuid.UUID
    #: Where its document was in the knowledge base (upload order), for tie-breaks.
    document_order: int
    #: Where it is in its document, from 0.
    position: int
    text: str
    words: frozenset[str]


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: int


@dataclass(frozen=True)
class Answer:
    """What a grounded prompt run produces: its ``output`` and its transcript's items."""

    question: str
    output: str
    hits: tuple[Hit, ...]

    @property
    def citations(self) -> list[dict[str, Any]]:
        """One ``{title, url}`` per quoted document (deduplicated by URL, as PromptJuggler
        does), in the answer's order: the file name and :data:`CITATION_URL`."""
        quoted = dict.fromkeys(
            (hit.passage.document_id, hit.passage.file_name) for hit in self.hits
        )
        return [{"title": name, "url": CITATION_URL.format(id=doc_id)} for doc_id, name in quoted]

    def tool_item(self) -> dict[str, Any]:
        """The transcript's tool item: the search that was made and what it found."""
        return {
            "type": "tool",
            "name": TOOL_NAME,
            "status": TOOL_STATUS,
            "queries": [self.question],
            "citations": self.citations,
        }


def answer(question: str, knowledge_base: str, documents: Sequence[FakeDocument]) -> Answer:
    """Answer ``question`` from ``documents`` (in upload order) of the knowledge base named
    ``knowledge_base`` (used in the nothing-found answer)."""
    hits = search(question, documents)
    if not hits:
        return Answer(question, f"I found nothing about that in {knowledge_base}.", ())
    lines = [
        f'According to {hit.passage.file_name}: "{hit.passage.text}" ({hit.passage.file_name})'
        for hit in hits
    ]
    return Answer(question, "\n".join(lines), tuple(hits))


def search(question: str, documents: Sequence[FakeDocument]) -> list[Hit]:
    """The best passages for ``question``, best first (see the module's rules)."""
    wanted = words(question)
    if not wanted:
        return []
    scored = [
        Hit(passage, len(wanted & passage.words))
        for order, doc in enumerate(documents)
        for passage in passages(doc, order)
    ]
    scored = [hit for hit in scored if hit.score > 0]
    if not scored:
        return []
    best = max(hit.score for hit in scored)
    scored = [hit for hit in scored if 2 * hit.score >= best]
    scored.sort(
        key=lambda hit: (
            -hit.score,
            hit.passage.file_name,
            hit.passage.document_order,
            hit.passage.position,
        )
    )
    return scored[:MAX_PASSAGES]


def words(text: str) -> frozenset[str]:
    """The words that count for a match: lower-cased, stop words dropped, plural ``s`` folded."""
    found = set()
    for word in _WORD.findall(text.lower()):
        if word in STOP_WORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        found.add(word)
    return frozenset(found)


def passages(document: FakeDocument, order: int = 0) -> list[Passage]:
    """A document's passages; none when it is not searchable."""
    if document.content is None:
        return []
    texts = _EXTRACTORS.get(file_extension(document.file_name), _nothing)(document.content)
    pieces = [piece for text in texts for piece in _cut(" ".join(text.split()))]
    return [
        Passage(document.file_name, document.id, order, position, piece, words(piece))
        for position, piece in enumerate(pieces)
    ]


# -- extraction: bytes -> paragraphs ---------------------------------------------------------


def _decode(content: bytes) -> str:
    return content.decode("utf-8", errors="replace").lstrip("\ufeff")


def _plain_blocks(text: str, *, markdown: bool = False) -> list[str]:
    """Paragraphs: blank lines and list items start one; Markdown headings end one."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if markdown and _MD_HEADING.match(line):
            blocks.append([])
            continue
        if not line.strip():
            blocks.append([])
            continue
        if _LIST_ITEM.match(line) and blocks[-1]:
            blocks.append([])
        blocks[-1].append(_MD_MARKUP.sub("", line) if markdown else line)
    return [" ".join(block) for block in blocks if block]


def _text(content: bytes) -> list[str]:
    return _plain_blocks(_decode(content))


def _markdown(content: bytes) -> list[str]:
    return _plain_blocks(_decode(content), markdown=True)


def _html(content: bytes) -> list[str]:
    text = _HTML_DROPPED.sub("\n\n", _decode(content))
    text = _HTML_TAG.sub("", _HTML_BLOCK.sub("\n\n", text))
    return [html.unescape(block) for block in re.split(r"\n\s*\n", text.strip()) if block.strip()]


def _table(delimiter: str) -> Callable[[bytes], list[str]]:
    def rows(content: bytes) -> list[str]:
        table = list(csv.reader(io.StringIO(_decode(content)), delimiter=delimiter))
        table = [row for row in table if any(cell.strip() for cell in row)]
        if len(table) < 2:
            return [" ".join(row) for row in table]
        header, *body = table
        return [
            "; ".join(
                f"{name.strip()}: {cell.strip()}" if name.strip() else cell.strip()
                for name, cell in zip(header, row, strict=False)
                if cell.strip()
            )
            for row in body
        ]

    return rows


def _docx(content: bytes) -> list[str]:
    try:
        with (
            zipfile.ZipFile(io.BytesIO(content)) as archive,
            archive.open("word/document.xml") as part,
        ):
            xml = part.read(MAX_DOCX_XML_BYTES).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, KeyError, OSError, RuntimeError, ValueError):
        return []  # not a real .docx: nothing to extract
    return [
        html.unescape("".join(_DOCX_TEXT.findall(paragraph)))
        for paragraph in _DOCX_PARAGRAPH.findall(xml)
    ]


def _nothing(content: bytes) -> list[str]:
    return []


#: How each searchable extension becomes paragraphs.
_EXTRACTORS: dict[str, Callable[[bytes], list[str]]] = {
    ".txt": _text,
    ".md": _markdown,
    ".html": _html,
    ".csv": _table(","),
    ".tsv": _table("\t"),
    ".docx": _docx,
    # ".pdf": skipped, see the module docstring
}


def _cut(paragraph: str) -> Iterable[str]:
    """A paragraph as passages of at most :data:`PASSAGE_CHARS`, cut between sentences (a
    sentence longer than that is a passage of its own)."""
    if not paragraph:
        return []
    if len(paragraph) <= PASSAGE_CHARS:
        return [paragraph]
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        if current and len(current) + 1 + len(sentence) > PASSAGE_CHARS:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return pieces
