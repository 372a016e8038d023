"""Shared fixtures for the test suite. Area-specific fixtures live beside their tests."""

import pytest


@pytest.fixture
def ann(django_user_model):
    """A signed-up user (password ``pw``)."""
    return django_user_model.objects.create_user("ann", password="pw")


@pytest.fixture
def bob(django_user_model):
    """Another user (password ``pw``), to prove ``ann``'s things stay hers."""
    return django_user_model.objects.create_user("bob", password="pw")
