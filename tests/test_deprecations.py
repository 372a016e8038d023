"""Names renamed to fit the glossary keep working for one release, with a warning."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied

from promptjuggler_django import client, exceptions
from promptjuggler_django.checks import check_settings
from promptjuggler_django.conf import pj_settings


@pytest.mark.parametrize("module", [client, exceptions], ids=["client", "exceptions"])
def test_permission_denied_is_a_deprecated_alias_of_access_denied(module: Any) -> None:
    with pytest.warns(
        DeprecationWarning, match=r"PermissionDenied is deprecated; use .*AccessDenied"
    ):
        old = module.PermissionDenied
    assert old is exceptions.AccessDenied
    assert exceptions.ERRORS_BY_STATUS[403] is exceptions.AccessDenied
    assert not issubclass(old, DjangoPermissionDenied)  # the old name suggested it was one


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        client.NoSuchThing  # noqa: B018


def test_upload_lease_still_sets_the_lease_and_check_w003_says_rename(settings: Any) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "UPLOAD_LEASE": 42.0}
    assert pj_settings.LEASE == 42.0
    messages = {m.id: m for m in check_settings()}
    assert "promptjuggler_django.W001" not in messages  # known, not a typo
    warning = messages["promptjuggler_django.W003"]
    assert 'PROMPTJUGGLER["UPLOAD_LEASE"]' in warning.msg and '"LEASE"' in warning.msg


def test_the_new_name_wins_over_the_old(settings: Any) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "UPLOAD_LEASE": 42.0, "LEASE": 60.0}
    assert pj_settings.LEASE == 60.0


def test_a_bad_old_value_is_refused_under_the_new_name(settings: Any) -> None:
    settings.PROMPTJUGGLER = {**settings.PROMPTJUGGLER, "UPLOAD_LEASE": -1}
    ids = {m.id for m in check_settings()}
    assert "promptjuggler_django.E003" in ids
