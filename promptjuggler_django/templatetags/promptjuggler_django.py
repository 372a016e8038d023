"""Template helpers for the document pages: ``{% load promptjuggler_django %}``.

``{% pj_status_badge document %}`` renders the end-user status badge that the live-status script
updates in place; use it in overridden templates to keep live updates working.
"""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from ..display import document_phase, phase_badge
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
