"""Template helpers for the document pages: ``{% load promptjuggler_django %}``.

``{% pj_status_badge document %}`` renders the end-user status badge that the live-status script
updates in place, and ``{{ document|pj_status_detail }}`` the sentence saying why it waits or
failed; use them in overridden templates to keep live updates working. ``{% pj_ask_url %}`` is
the Ask page's URL when asking is set up, for a navigation link.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import NoReverseMatch, reverse
from django.utils.safestring import SafeString

from ..asking import ask_config
from ..display import document_phase, format_moment, phase_badge, status_detail
from ..models import KnowledgeDocument

register = template.Library()


@register.simple_tag
def pj_status_badge(document: KnowledgeDocument) -> SafeString:
    """The document's phase as a badge (``<span data-pj-badge="status">``)."""
    return phase_badge(document)


@register.filter
def pj_is_final(document: KnowledgeDocument) -> bool:
    """Whether the document's status can still change on its own (the script polls until so)."""
    return document_phase(document).final


@register.filter
def pj_status_detail(document: KnowledgeDocument) -> str:
    """Why the document waits or failed and when the next attempt is (empty when nothing to say)."""
    return status_detail(document)


@register.filter
def pj_moment(value: Any) -> str:
    """A date in the pages' one format (the time alone when it is today)."""
    return format_moment(value)


@register.simple_tag
def pj_ask_url() -> str:
    """The Ask page's URL, or ``""`` when it is not routed or ``ASK_PROMPT`` is not set:
    ``{% pj_ask_url as ask_url %}{% if ask_url %}<a href="{{ ask_url }}">Ask</a>{% endif %}``."""
    if ask_config() is None:
        return ""
    try:
        return reverse("promptjuggler_django:ask")
    except NoReverseMatch:
        return ""
