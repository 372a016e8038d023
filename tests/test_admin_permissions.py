"""Who may do what in the app's admin: every action and every admin view, for four users.

The actions and views are discovered from each ModelAdmin the app registers (its ``actions``,
the site-wide ones such as *Delete selected*, and its ``get_urls()``), so an action or view
added later is covered without touching this file, and one that declares no ``permissions=``
fails here. For each cell the test asserts that what the user may not do is neither offered
(the action's menu entry) nor runnable by a forged POST: the action is not called, no row
changes and PromptJuggler (the emulator) receives no request.
"""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from django.db import models
from django.test import RequestFactory
from django.urls import URLPattern, reverse

from promptjuggler_django.models import (
    KnowledgeBase,
    KnowledgeDocument,
    RemoteDeletion,
    Run,
    SyncState,
    WebhookDelivery,
)

pytestmark = pytest.mark.django_db

APP = "promptjuggler_django"

#: The four users: the model permissions each holds on every model of the app.
ROLES: dict[str, tuple[str, ...] | None] = {
    "superuser": None,
    "view_only": ("view",),
    "view_change": ("view", "change"),
    "view_delete": ("view", "delete"),
}

#: Each admin view (by the end of its URL name) → the ModelAdmin check that guards it, for a
#: GET and for a POST. A view added to an admin's get_urls() must be listed here.
VIEW_PERMISSIONS: dict[str, tuple[str, str | None]] = {
    "changelist": ("has_view_or_change_permission", None),
    "add": ("has_add_permission", "has_add_permission"),
    "change": ("has_view_or_change_permission", "has_change_permission"),
    "delete": ("has_delete_permission", "has_delete_permission"),
    "history": ("has_view_or_change_permission", None),
    "upload": ("has_add_permission", "has_add_permission"),
}
#: Views that take the object's id.
OBJECT_VIEWS = {"change", "delete", "history"}


def app_model_admins() -> list[tuple[type[models.Model], admin.ModelAdmin]]:
    return [
        (model, admin.site.get_model_admin(model))
        for model in apps.get_app_config(APP).get_models()
        if admin.site.is_registered(model)
    ]


def action_names(model_admin: admin.ModelAdmin) -> list[str]:
    """Every action the admin could offer anyone: the site's and its own."""
    names = [name for name, _func in admin.site.actions]
    names += [a if isinstance(a, str) else a.__name__ for a in model_admin.actions or ()]
    return list(dict.fromkeys(names))


def view_names(model_admin: admin.ModelAdmin) -> list[str]:
    """Every named URL of the admin (Django's and its own ``get_urls()``)."""
    opts = model_admin.opts
    prefix = f"{opts.app_label}_{opts.model_name}_"
    return [
        pattern.name.removeprefix(prefix)
        for pattern in model_admin.get_urls()
        if isinstance(pattern, URLPattern) and pattern.name
    ]


ACTIONS = [
    pytest.param(model, name, id=f"{model._meta.model_name}.{name}")
    for model, model_admin in app_model_admins()
    for name in action_names(model_admin)
]
VIEWS = [
    pytest.param(model, name, id=f"{model._meta.model_name}.{name}")
    for model, model_admin in app_model_admins()
    for name in view_names(model_admin)
]


def test_the_matrix_covers_every_admin_of_the_app() -> None:
    registered = {model for model, _ in app_model_admins()}
    assert registered == {KnowledgeBase, KnowledgeDocument, RemoteDeletion, WebhookDelivery, Run}
    assert {p.id for p in ACTIONS} >= {
        "knowledgebase.refresh_from_api",
        "knowledgedocument.refresh_status",
        "knowledgedocument.push_again",
        "webhookdelivery.replay",
        "run.delete_selected",
    }
    assert "knowledgedocument.upload" in {p.id for p in VIEWS}


# --- Fixtures --------------------------------------------------------------------------------


@pytest.fixture
def rows() -> dict[type[models.Model], models.Model]:
    """One row of each model, made without the app's receivers' side effects (no push)."""
    kb = KnowledgeBase.objects.create(slug="kb_test")
    document = KnowledgeDocument.objects.bulk_create(
        [
            KnowledgeDocument(
                knowledge_base=kb,
                file=ContentFile(b"text", name="notes.txt"),
                file_name="notes.txt",
                remote_id=uuid.uuid4(),
                remote_status="pending",
                sync_state=SyncState.SYNCED,
            )
        ]
    )[0]
    remote_id = str(document.remote_id)
    return {
        KnowledgeBase: kb,
        KnowledgeDocument: KnowledgeDocument.objects.get(file_name="notes.txt"),
        RemoteDeletion: RemoteDeletion.objects.create(
            remote_id=uuid.uuid4(), knowledge_base=kb, knowledge_base_slug=kb.slug
        ),
        WebhookDelivery: WebhookDelivery.objects.create(
            event_type=WebhookDelivery.EventType.DOCUMENT_FINISHED,
            object_id=remote_id,
            status="ready",
            dedupe_key="d" * 64,
            body=json.dumps({"id": remote_id, "status": "ready", "chunkCount": 3}),
        ),
        Run: Run.objects.create(kind="prompt", slug="p_summary"),
    }


@pytest.fixture(params=list(ROLES))
def user(request, django_user_model):
    role = request.param
    if ROLES[role] is None:
        return django_user_model.objects.create_superuser(role, password="pw")
    user = django_user_model.objects.create_user(role, password="pw", is_staff=True)
    codenames = [
        f"{perm}_{model._meta.model_name}"
        for perm in ROLES[role]
        for model in apps.get_app_config(APP).get_models()
    ]
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label=APP, codename__in=codenames)
    )
    return django_user_model.objects.get(pk=user.pk)  # no permission cache


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row of the app's models, to prove that a refused request changed nothing."""
    return {
        model._meta.label: list(model.objects.order_by("pk").values())
        for model in apps.get_app_config(APP).get_models()
    }


def request_for(user) -> Any:
    request = RequestFactory().get("/")
    request.user = user
    return request


def allowed(model_admin, check: str, user, obj=None) -> bool:
    method = getattr(model_admin, check)
    request = request_for(user)
    return bool(method(request, obj) if check != "has_add_permission" else method(request))


# --- Actions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "name"), ACTIONS)
def test_action_permissions(
    model, name, user, rows, client, monkeypatch, fake_promptjuggler
) -> None:
    model_admin = admin.site.get_model_admin(model)
    func = model_admin.get_action(name)[0]
    permissions = getattr(func, "allowed_permissions", None)
    assert permissions, f"The {name!r} action of {model.__name__} declares no permissions="
    request = request_for(user)
    expected = all(getattr(model_admin, f"has_{p}_permission")(request) for p in permissions)
    if user.username == "view_only":
        # Every action of the app changes rows or calls PromptJuggler: viewing is not enough.
        assert not expected, f"{name!r} runs with the view permission alone"

    ran: list[str] = []
    get_actions = model_admin.get_actions

    def spying_get_actions(request):
        def spy(func):
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                ran.append(name)
                return func(*args, **kwargs)

            return wrapper

        return {
            key: (spy(func), action_name, description)
            for key, (func, action_name, description) in get_actions(request).items()
        }

    monkeypatch.setattr(model_admin, "get_actions", spying_get_actions)
    client.force_login(user)
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")

    page = client.get(url)
    assert page.status_code == 200
    action_form = page.context["action_form"]
    offered = [] if action_form is None else [c[0] for c in action_form.fields["action"].choices]
    assert (name in offered) is expected, f"offered {offered}"

    before = snapshot()
    row = rows[model]
    response = client.post(
        url, {"action": name, "_selected_action": [row.pk], "index": 0, "post": "yes"}
    )
    assert response.status_code in (200, 302)
    assert bool(ran) is expected
    if not expected:
        assert snapshot() == before
        assert fake_promptjuggler.request_count() == 0


def test_view_only_staff_cannot_refresh_from_promptjuggler(
    rows, client, django_user_model, fake_promptjuggler
) -> None:
    """The hole this matrix closed, spelled out: both refreshes need the change permission."""
    clerk = django_user_model.objects.create_user("clerk", is_staff=True)
    clerk.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_knowledgebase", "view_knowledgedocument"])
    )
    client.force_login(clerk)
    for model, action in [
        (KnowledgeBase, "refresh_from_api"),
        (KnowledgeDocument, "refresh_status"),
    ]:
        url = reverse(f"admin:{APP}_{model._meta.model_name}_changelist")
        assert f'value="{action}"' not in client.get(url).content.decode()
        client.post(url, {"action": action, "_selected_action": [rows[model].pk]})
    assert fake_promptjuggler.request_count() == 0
    assert KnowledgeBase.objects.get().last_synced_at is None


# --- Views -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "name"), VIEWS)
def test_view_permissions(model, name, user, rows, client, fake_promptjuggler) -> None:
    assert name in VIEW_PERMISSIONS, (
        f"{model.__name__}'s admin has a view {name!r}: say in VIEW_PERMISSIONS what guards it"
    )
    model_admin = admin.site.get_model_admin(model)
    get_check, post_check = VIEW_PERMISSIONS[name]
    obj = rows[model] if name in OBJECT_VIEWS else None
    url = reverse(
        f"admin:{model._meta.app_label}_{model._meta.model_name}_{name}",
        args=[obj.pk] if obj is not None else [],
    )
    client.force_login(user)

    may_get = allowed(model_admin, get_check, user, obj)
    before = snapshot()
    assert client.get(url).status_code == (200 if may_get else 403)
    if post_check is not None and not allowed(model_admin, post_check, user, obj):
        # A forged POST (valid enough to save, were it allowed) is refused and changes nothing.
        forged = {"post": "yes", "slug": "kb_forged", "knowledge_base": rows[KnowledgeBase].pk}
        assert client.post(url, forged).status_code == 403
    assert snapshot() == before
    assert fake_promptjuggler.request_count() == 0
