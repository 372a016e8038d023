"""Asking the knowledge base: the rules the Ask page and the REST API share.

Runs cost money, so the user never names what runs: a question always starts ``ASK_PROMPT`` at
``ASK_PROMPT_VERSION`` with the question as input ``ASK_INPUT``, owned by the asking user, and a
follow-up continues only one of the user's own runs of that prompt. A user has at most one
question waiting for its answer at a time (:data:`BUSY_FOR` bounds how long one can block the
next), which caps what one account can spend in a burst. The run itself is started, sent and
completed by :mod:`promptjuggler_django.runs`; this module words its state for people, lists
its sources from the stored transcript, and never touches PromptJuggler.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import runs
from .conf import pj_settings
from .display import Phase, format_moment
from .models import Run, RunKind, RunSendState

__all__ = [
    "BUSY_FOR",
    "MAX_QUESTION_LENGTH",
    "AskConfig",
    "AskForm",
    "AskRefused",
    "ask",
    "ask_config",
    "ask_runs",
    "clean_question",
    "conversation",
    "question_of",
    "run_message",
    "run_payload",
    "run_phase",
    "run_sources",
]

#: The longest question accepted, in characters.
MAX_QUESTION_LENGTH = 4000
#: An unanswered question blocks the user's next one for at most this long (a run whose
#: webhook is late is polled by ``promptjuggler_sync``; a lost one must not lock the user out).
BUSY_FOR = timedelta(minutes=10)


@dataclass(frozen=True)
class AskConfig:
    """The prompt every question starts: ``ASK_PROMPT`` at ``ASK_PROMPT_VERSION``."""

    slug: str
    version: int | str
    input: str


def ask_config() -> AskConfig | None:
    """The configured prompt, or ``None`` when ``ASK_PROMPT`` is not set (asking is off)."""
    slug = pj_settings.ASK_PROMPT
    if not slug:
        return None
    return AskConfig(slug, pj_settings.ASK_PROMPT_VERSION, pj_settings.ASK_INPUT)


class AskRefused(Exception):
    """A question that is not started; ``code`` says why, the message says it to the user."""

    #: ``not_configured``, ``busy``, ``unknown_previous`` or ``not_started``.
    code: str

    def __init__(self, code: str, message: Any) -> None:
        super().__init__(str(message))
        self.code = code


def clean_question(value: str) -> str:
    """The question without surrounding space; ``ValidationError`` for an empty, overlong or
    unencodable one (PromptJuggler takes UTF-8 JSON strings)."""
    question = value.strip()
    if not question:
        raise ValidationError(_("Type a question."), code="required")
    if len(question) > MAX_QUESTION_LENGTH:
        raise ValidationError(
            _("Ask in at most %(max)d characters."),
            code="max_length",
            params={"max": MAX_QUESTION_LENGTH},
        )
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            _("The question has characters that cannot be sent."), code="invalid"
        ) from None
    return question


class AskForm(forms.Form):
    """A question, and the run it follows up (hidden: the conversation's latest run)."""

    question = forms.CharField(
        label=_("Your question"),
        max_length=MAX_QUESTION_LENGTH,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    previous = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def clean_question(self) -> str:
        return clean_question(self.cleaned_data["question"])


def ask_runs(user: Any, config: AskConfig | None = None) -> QuerySet[Run]:
    """The user's runs of the ask prompt, newest first (none for anonymous users or when
    asking is off)."""
    config = config or ask_config()
    if config is None or not getattr(user, "is_authenticated", False):
        return Run.objects.none()
    return Run.objects.filter(owner=user, kind=RunKind.PROMPT, slug=config.slug)


def _waiting(runs_: QuerySet[Run], now: Any) -> QuerySet[Run]:
    """Runs still waiting for their answer, started less than :data:`BUSY_FOR` ago."""
    unanswered = Q(send_state__in=(RunSendState.QUEUED, RunSendState.SENDING)) | Q(
        send_state=RunSendState.STARTED, result_fetched_at__isnull=True
    )
    return runs_.filter(unanswered, created_at__gt=now - BUSY_FOR)


def ask(
    user: Any, question: str, *, previous: int | None = None, config: AskConfig | None = None
) -> Run:
    """Start the ask prompt for ``user`` with ``question``, continuing run ``previous``'s thread
    when given (it must be one of the user's runs of the ask prompt, already started).

    ``config`` is the prompt to start, :func:`ask_config` by default: code may choose it (per
    user, say); a request must never.

    Raises :class:`AskRefused` when asking is off, the user already waits for an answer, or
    ``previous`` is not theirs or not started; ``ValidationError`` for a bad question. The run
    is sent after the surrounding transaction commits.
    """
    config = config or ask_config()
    if config is None:
        raise AskRefused("not_configured", _("Asking is not set up on this site."))
    question = clean_question(question)
    with transaction.atomic():
        # One question at a time per user: concurrent requests of one user queue up here.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        mine = ask_runs(user, config)
        if _waiting(mine, timezone.now()).exists():
            raise AskRefused(
                "busy",
                _(
                    "Your previous question is still waiting for its answer: ask again once "
                    "it has come."
                ),
            )
        inputs = {config.input: question}
        if previous is None:
            return runs.start_prompt_run(config.slug, inputs, version=config.version, owner=user)
        earlier = mine.filter(pk=previous).first()
        if earlier is None:
            raise AskRefused(
                "unknown_previous", _("There is no such question of yours to follow up.")
            )
        if earlier.thread is None:
            raise AskRefused(
                "not_started",
                _("That question has not reached PromptJuggler yet: wait for its answer."),
            )
        return runs.continue_run(earlier, inputs, version=config.version, owner=user)


def conversation(run: Run) -> QuerySet[Run]:
    """``run`` and the other runs of its owner in its thread, oldest first."""
    if run.thread is None:
        return Run.objects.filter(pk=run.pk)
    return Run.objects.filter(owner_id=run.owner_id, thread=run.thread).order_by("created_at", "pk")


def question_of(run: Run) -> str:
    """The question a run asked: its ``ASK_INPUT`` input, else its only input."""
    inputs = run.inputs if isinstance(run.inputs, dict) else {}
    value = inputs.get(pj_settings.ASK_INPUT)
    if value is None and len(inputs) == 1:
        value = next(iter(inputs.values()))
    return value if isinstance(value, str) else ""


def run_sources(run: Run) -> list[str]:
    """The titles cited by the run's transcript (tool and text items), each once, in order.

    PromptJuggler fills ``citations`` for searches; a run without any lists no sources.
    """
    titles: list[str] = []
    items = run.transcript if isinstance(run.transcript, list) else []
    for item in items:
        if not isinstance(item, dict) or item.get("type") not in ("tool", "text"):
            continue
        citations = item.get("citations")
        for citation in citations if isinstance(citations, list) else ():
            title = citation.get("title") if isinstance(citation, dict) else None
            if isinstance(title, str) and title.strip() and title.strip() not in titles:
                titles.append(title.strip())
    return titles


_SENDING = Phase("sending", _("Sending"), "neutral", False)
_WAITING = Phase("waiting", _("Waiting for the answer"), "active", False)
_ANSWERED = Phase("answered", _("Answered"), "success", True)
_NO_ANSWER = Phase("no_answer", _("No answer"), "danger", True)
_NOT_SENT = Phase("not_sent", _("Not sent"), "danger", True)
_CHECKING = Phase("checking", _("Being checked"), "warning", True)

_SEND_PHASES: dict[str, Phase] = {
    RunSendState.QUEUED: _SENDING,
    RunSendState.SENDING: _SENDING,
    RunSendState.FAILED: _NOT_SENT,
    RunSendState.NEEDS_REVIEW: _CHECKING,
}


def run_phase(run: Run) -> Phase:
    """What the asking user is told about a run. ``final``: the live status stops asking."""
    phase = _SEND_PHASES.get(run.send_state)
    if phase is not None:
        return phase
    if run.result_fetched_at is None:
        return _WAITING
    return _NO_ANSWER if run.remote_status == "failed" else _ANSWERED


def run_message(run: Run) -> str:
    """The sentence under a question's badge, in the user's words (empty once answered)."""
    key = run_phase(run).key
    if key == "sending":
        later = run.next_attempt_at is not None and run.next_attempt_at > timezone.now()
        if later:
            return str(_("PromptJuggler is busy: the question goes out at %(when)s.")) % {
                "when": format_moment(run.next_attempt_at)
            }
        return str(_("Sending your question…"))
    if key == "waiting":
        return str(_("Looking through the documents…"))
    if key == "answered" and not run.output:
        return str(_("The answer came back without any text. Try asking in other words."))
    if key == "no_answer":
        return str(_("Something went wrong while answering. Ask again, perhaps in other words."))
    if key == "not_sent":
        return str(_("The question could not be sent. Ask again later."))
    if key == "checking":
        return str(
            _(
                "We could not confirm that the question was received. Someone will check; "
                "you can ask something else meanwhile."
            )
        )
    return ""


def run_payload(run: Run) -> dict[str, Any]:
    """A run as the live status and the API show it to its owner."""
    phase = run_phase(run)
    return {
        "id": run.pk,
        "question": question_of(run),
        "phase": phase.key,
        "label": str(phase.label),
        "tone": phase.tone,
        "final": phase.final,
        "message": run_message(run),
        "answer": run.output if phase.key == "answered" else "",
        "sources": run_sources(run) if phase.key == "answered" else [],
    }
