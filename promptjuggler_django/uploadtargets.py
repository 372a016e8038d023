"""Which knowledge bases a request may upload into: one rule for every upload path.

The upload page, the admin's multi-file upload and add form, and the REST API all ask
:func:`uploadable_knowledge_bases`, which asks the callable named by
``PROMPTJUGGLER["UPLOAD_KNOWLEDGE_BASES_CALLBACK"]`` (the project's hook, given the request).
The default, :func:`default_upload_knowledge_bases`, allows ``DEFAULT_KNOWLEDGE_BASE`` and the
slugs of ``CHOOSABLE_KNOWLEDGE_BASES`` to everyone, and every knowledge base to staff who may add
documents in the admin (its add form has always listed them all).

A knowledge base outside the rule is refused exactly like one that does not exist
(:data:`NOT_ALLOWED`), so a refusal never tells which slugs exist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _

from .conf import SettingError, pj_settings
from .models import KnowledgeBase, KnowledgeDocument

__all__ = [
    "NOT_ALLOWED",
    "default_upload_knowledge_bases",
    "fallback_knowledge_base",
    "upload_knowledge_bases_callback",
    "uploadable_knowledge_bases",
]

#: What every upload path says about a knowledge base outside the rule, or one that does not
#: exist: the same words for both.
NOT_ALLOWED = _("Not a knowledge base you may upload into.")

#: What the hook answers: knowledge bases, or their slugs.
Allowed = QuerySet[KnowledgeBase] | Iterable[str]
Callback = Callable[[HttpRequest], Allowed]

_SETTING = 'settings.PROMPTJUGGLER["UPLOAD_KNOWLEDGE_BASES_CALLBACK"]'


def default_upload_knowledge_bases(request: HttpRequest) -> Allowed:
    """The default rule: ``DEFAULT_KNOWLEDGE_BASE`` and ``CHOOSABLE_KNOWLEDGE_BASES``; every
    knowledge base for active staff with the add permission on documents.

    Those staff may already create a document in any knowledge base through the admin's add
    form, so the admin upload and the other paths trust them as much. Set
    ``UPLOAD_KNOWLEDGE_BASES_CALLBACK`` to decide otherwise.
    """
    slugs = [pj_settings.DEFAULT_KNOWLEDGE_BASE, *pj_settings.CHOOSABLE_KNOWLEDGE_BASES]
    slugs = [slug for slug in dict.fromkeys(slugs) if slug]
    user = getattr(request, "user", None)
    opts = KnowledgeDocument._meta
    if (
        user is not None
        and user.is_active
        and user.is_staff
        and user.has_perm(f"{opts.app_label}.add_{opts.model_name}")
    ):
        _ensure_rows(slugs)  # the configured ones are among "every one" from the first visit
        return KnowledgeBase.objects.all()
    return slugs


def upload_knowledge_bases_callback() -> Callback:
    """The hook named by ``UPLOAD_KNOWLEDGE_BASES_CALLBACK`` (a dotted path or a callable).

    Raises :class:`~promptjuggler_django.conf.SettingError` (check ``E011``) when the path does
    not import or names something that cannot be called.
    """
    value = pj_settings.UPLOAD_KNOWLEDGE_BASES_CALLBACK
    if callable(value):
        return value  # type: ignore[no-any-return]
    hint = (
        "Name a function that takes the request and answers the knowledge bases (or their "
        "slugs) it may upload into, e.g. 'myproject.uploads.knowledge_bases_for'."
    )
    try:
        callback = import_string(value)
    except ImportError as exc:
        raise SettingError(
            f"{_SETTING} is {value!r}, which does not import: {exc}",
            check_id="promptjuggler_django.E011",
            hint=hint,
        ) from exc
    if not callable(callback):
        raise SettingError(
            f"{_SETTING} is {value!r}, which is a {type(callback).__name__}, not a callable.",
            check_id="promptjuggler_django.E011",
            hint=hint,
        )
    return callback  # type: ignore[no-any-return]


def uploadable_knowledge_bases(request: HttpRequest) -> QuerySet[KnowledgeBase]:
    """The knowledge bases ``request``'s user may upload into, as the hook decides.

    A hook that answers slugs gets a row for each slug not known yet, as
    ``DEFAULT_KNOWLEDGE_BASE`` always had: PromptJuggler has no API to create a knowledge base,
    so the local row only mirrors one that exists there.
    """
    allowed: Any = upload_knowledge_bases_callback()(request)
    if isinstance(allowed, QuerySet):
        if allowed.model is not KnowledgeBase:
            raise SettingError(
                f"{_SETTING} answered a queryset of {allowed.model.__name__}, not of "
                "KnowledgeBase.",
                check_id="promptjuggler_django.E011",
            )
        return allowed
    slugs = [str(slug) for slug in allowed]
    _ensure_rows(slugs)
    return KnowledgeBase.objects.filter(slug__in=slugs)


def _ensure_rows(slugs: list[str]) -> None:
    """Create the rows of the slugs not known yet (one query when they all exist)."""
    known = set(KnowledgeBase.objects.filter(slug__in=slugs).values_list("slug", flat=True))
    missing = [slug for slug in dict.fromkeys(slugs) if slug not in known]
    if missing:
        KnowledgeBase.objects.bulk_create(
            [KnowledgeBase(slug=slug) for slug in missing], ignore_conflicts=True
        )


def fallback_knowledge_base(allowed: QuerySet[KnowledgeBase]) -> KnowledgeBase | None:
    """Where an upload that names no knowledge base goes: ``DEFAULT_KNOWLEDGE_BASE`` when the
    rule allows it, else the only knowledge base the rule allows, else none (ask for a choice).
    """
    slug = pj_settings.DEFAULT_KNOWLEDGE_BASE
    if slug:
        default = allowed.filter(slug=slug).first()
        if default is not None:
            return default
    first_two = list(allowed[:2])
    return first_two[0] if len(first_two) == 1 else None
