"""Which knowledge bases a user may upload into: one rule for the upload page, the admin upload
and the REST API, with one overridable hook (``UPLOAD_KNOWLEDGE_BASES_CALLBACK``)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from promptjuggler_django import checks
from promptjuggler_django.models import KnowledgeBase, KnowledgeDocument

pytestmark = pytest.mark.django_db

REST = reverse("promptjuggler_django_rest:document-list")
PAGE = reverse("promptjuggler_django:document_upload")
ADMIN_UPLOAD = reverse("admin:promptjuggler_django_knowledgedocument_upload")
ADMIN_ADD = reverse("admin:promptjuggler_django_knowledgedocument_add")
THIS = __name__


def configure(settings, **values):
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, **values}


def hr_staff_only(request):
    """A project's rule: HR may upload into kb_hr only; everyone else into nothing."""
    return ["kb_hr"] if request.user.username == "hana" else []


def hr_as_queryset(request):
    return KnowledgeBase.objects.filter(slug__startswith="kb_h")


@pytest.fixture
def bases() -> dict[str, KnowledgeBase]:
    return {
        slug: KnowledgeBase.objects.create(slug=slug) for slug in ("kb_test", "kb_hr", "kb_sales")
    }


@pytest.fixture
def eve(django_user_model):
    return django_user_model.objects.create_user("eve", password="pw")


@pytest.fixture
def hana(django_user_model):
    return django_user_model.objects.create_user("hana", password="pw")


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def rest_upload(client: APIClient, slug: str | None):
    data: dict = {"files": [SimpleUploadedFile("a.txt", b"alpha")]}
    if slug is not None:
        data["knowledge_base"] = slug
    return client.post(REST, data, format="multipart")


# --- REST -----------------------------------------------------------------------------------


def test_rest_refuses_a_base_outside_the_rule_like_an_unknown_slug(bases, eve):
    api = api_for(eve)
    outside = rest_upload(api, "kb_hr")
    unknown = rest_upload(api, "kb_nope")
    assert outside.status_code == unknown.status_code == 400
    # Byte for byte the same answer: the refusal does not say which slugs exist.
    assert outside.content == unknown.content
    assert "knowledge_base" in outside.json()
    assert "kb_hr" not in outside.content.decode()
    assert not KnowledgeDocument.objects.exists()


def test_rest_uploads_into_the_default_and_the_choosable_bases(bases, eve, settings):
    configure(settings, CHOOSABLE_KNOWLEDGE_BASES=["kb_sales"])
    api = api_for(eve)
    assert rest_upload(api, None).json()[0]["knowledge_base"] == "kb_test"
    assert rest_upload(api, "kb_test").json()[0]["knowledge_base"] == "kb_test"
    assert rest_upload(api, "kb_sales").json()[0]["knowledge_base"] == "kb_sales"
    assert rest_upload(api, "kb_hr").status_code == 400
    assert sorted(KnowledgeDocument.objects.values_list("knowledge_base__slug", flat=True)) == [
        "kb_sales",
        "kb_test",
        "kb_test",
    ]


def test_a_choosable_base_without_a_row_yet_is_created_like_the_default(eve, settings):
    configure(settings, CHOOSABLE_KNOWLEDGE_BASES=["kb_new"])
    response = rest_upload(api_for(eve), "kb_new")
    assert response.status_code == 201, response.content
    assert KnowledgeBase.objects.filter(slug__in=["kb_new", "kb_test"]).count() == 2


@pytest.mark.parametrize("callback", [f"{THIS}.hr_staff_only", hr_staff_only])
def test_the_hook_decides_per_request(bases, eve, hana, settings, callback):
    configure(settings, UPLOAD_KNOWLEDGE_BASES_CALLBACK=callback)
    assert rest_upload(api_for(hana), "kb_hr").status_code == 201
    # The default is not in hana's rule either: leaving the slug out takes her only base.
    assert rest_upload(api_for(hana), None).json()[0]["knowledge_base"] == "kb_hr"
    refused = rest_upload(api_for(hana), "kb_test")
    assert refused.status_code == 400
    assert rest_upload(api_for(eve), "kb_hr").content == refused.content
    assert rest_upload(api_for(eve), None).status_code == 400
    assert KnowledgeDocument.objects.filter(knowledge_base__slug="kb_hr").count() == 2
    assert KnowledgeDocument.objects.count() == 2


def test_the_hook_may_answer_a_queryset(bases, eve, settings):
    configure(settings, UPLOAD_KNOWLEDGE_BASES_CALLBACK=f"{THIS}.hr_as_queryset")
    assert rest_upload(api_for(eve), "kb_hr").status_code == 201
    assert rest_upload(api_for(eve), "kb_sales").status_code == 400


# --- The upload page ------------------------------------------------------------------------


def test_page_offers_no_choice_when_one_base_is_allowed(client, bases, eve):
    client.force_login(eve)
    page = client.get(PAGE)
    assert list(page.context["form"].fields) == ["files"]
    forged = client.post(
        PAGE, {"knowledge_base": bases["kb_hr"].pk, "files": [SimpleUploadedFile("a.txt", b"a")]}
    )
    assert forged.status_code == 302
    (document,) = KnowledgeDocument.objects.all()
    assert document.knowledge_base.slug == "kb_test"


def test_page_choice_lists_only_the_allowed_bases(client, bases, eve, settings):
    configure(settings, CHOOSABLE_KNOWLEDGE_BASES=["kb_sales"])
    client.force_login(eve)
    page = client.get(PAGE)
    field = page.context["form"].fields["knowledge_base"]
    assert [kb.slug for kb in field.queryset] == ["kb_sales", "kb_test"]
    assert page.context["form"]["knowledge_base"].initial == bases["kb_test"]
    assert 'name="knowledge_base"' in page.content.decode()

    forged = client.post(
        PAGE, {"knowledge_base": bases["kb_hr"].pk, "files": [SimpleUploadedFile("a.txt", b"a")]}
    )
    assert forged.status_code == 200
    assert forged.context["form"].errors["knowledge_base"]
    assert not KnowledgeDocument.objects.exists()

    chosen = client.post(
        PAGE,
        {"knowledge_base": bases["kb_sales"].pk, "files": [SimpleUploadedFile("a.txt", b"a")]},
    )
    assert chosen.status_code == 302
    assert KnowledgeDocument.objects.get().knowledge_base.slug == "kb_sales"


def test_page_refuses_a_user_the_rule_allows_nothing(client, bases, eve, settings):
    configure(settings, UPLOAD_KNOWLEDGE_BASES_CALLBACK=f"{THIS}.hr_staff_only")
    client.force_login(eve)
    assert client.get(PAGE).status_code == 403
    response = client.post(PAGE, {"files": [SimpleUploadedFile("a.txt", b"a")]})
    assert response.status_code == 403
    assert not KnowledgeDocument.objects.exists()


# --- The admin upload -----------------------------------------------------------------------


@pytest.fixture
def clerk(django_user_model):
    """Staff who may add documents (and so use the admin upload), nothing else."""
    user = django_user_model.objects.create_user("clerk", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["add_knowledgedocument", "view_knowledgebase"])
    )
    return user


def test_staff_who_may_add_documents_may_upload_into_every_base(client, bases, clerk):
    client.force_login(clerk)
    page = client.get(ADMIN_UPLOAD)
    slugs = [kb.slug for kb in page.context["form"].fields["knowledge_base"].queryset]
    assert slugs == ["kb_hr", "kb_sales", "kb_test"]
    add = client.get(ADMIN_ADD)
    choices = [kb.slug for kb in add.context["adminform"].form.fields["knowledge_base"].queryset]
    assert choices == slugs
    # The same rule, whatever the path: REST trusts them as much.
    assert rest_upload(api_for(clerk), "kb_hr").status_code == 201


def test_staff_find_the_configured_bases_before_their_rows_exist(client, admin_user, settings):
    configure(settings, CHOOSABLE_KNOWLEDGE_BASES=["kb_sales"])
    client.force_login(admin_user)
    page = client.get(PAGE)
    assert [kb.slug for kb in page.context["form"].fields["knowledge_base"].queryset] == [
        "kb_sales",
        "kb_test",
    ]
    admin_page = client.get(ADMIN_UPLOAD)
    assert admin_page.context["form"]["knowledge_base"].initial.slug == "kb_test"


def test_the_hook_narrows_the_admin_upload_and_add_form(client, bases, clerk, settings):
    configure(settings, UPLOAD_KNOWLEDGE_BASES_CALLBACK=f"{THIS}.hr_as_queryset")
    client.force_login(clerk)
    page = client.get(ADMIN_UPLOAD)
    assert [kb.slug for kb in page.context["form"].fields["knowledge_base"].queryset] == ["kb_hr"]
    forged = client.post(
        ADMIN_UPLOAD,
        {"knowledge_base": bases["kb_sales"].pk, "files": [SimpleUploadedFile("a.txt", b"a")]},
    )
    assert forged.status_code == 200
    assert forged.context["form"].errors["knowledge_base"]
    add = client.post(
        ADMIN_ADD,
        {"knowledge_base": bases["kb_sales"].pk, "file": SimpleUploadedFile("a.txt", b"a")},
    )
    assert add.status_code == 200
    assert add.context["adminform"].form.errors["knowledge_base"]
    assert not KnowledgeDocument.objects.exists()


# --- The setting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [f"{THIS}.no_such_function", "no_such_module.rule", "nodots", f"{THIS}.THIS"]
)
def test_a_callback_that_does_not_import_is_a_check_error(settings, value):
    configure(settings, UPLOAD_KNOWLEDGE_BASES_CALLBACK=value)
    [message] = checks.check_upload_knowledge_bases_callback()
    assert message.id == "promptjuggler_django.E011"
    assert 'PROMPTJUGGLER["UPLOAD_KNOWLEDGE_BASES_CALLBACK"]' in message.msg
    assert message.hint


def test_the_default_callback_passes_the_check():
    assert checks.check_upload_knowledge_bases_callback() == []
