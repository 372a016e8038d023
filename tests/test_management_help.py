"""``manage.py help <command>`` documents every argument of every management command the app ships.

The commands are found the way ``manage.py`` finds them (``get_commands()``), so a new command or
a new option is covered without touching this file. Django's own options (``--verbosity``,
``--settings``, …) are left to Django.
"""

from __future__ import annotations

import argparse

import pytest
from django.core.management import get_commands, load_command_class
from django.core.management.base import BaseCommand

APP = "promptjuggler_django"


def app_commands() -> list[str]:
    return sorted(name for name, app in get_commands().items() if app == APP)


def own_actions(name: str) -> list[argparse.Action]:
    """The arguments ``name`` adds on top of the ones every Django command has."""
    django_parser = BaseCommand().create_parser("manage.py", "x")
    django_dests = {action.dest for action in django_parser._actions}
    parser = load_command_class(APP, name).create_parser("manage.py", name)
    return [action for action in parser._actions if action.dest not in django_dests]


def default_is_stated(action: argparse.Action) -> bool:
    """Whether the help names the default a user gets when leaving the option out."""
    default = action.default
    if default is None or isinstance(default, bool) or default == []:
        return True  # nothing to state: off, empty, or computed (the help says from what)
    assert action.help is not None
    if "%(default)" in action.help:
        return True
    spellings = {str(default), repr(default)}
    if isinstance(default, float):
        spellings.add(f"{default:g}")
    return any(spelling in action.help for spelling in spellings)


def test_the_app_ships_its_commands() -> None:
    # Guards the discovery below: an empty list would make every other test here vacuous.
    assert {
        "promptjuggler_doctor",
        "promptjuggler_emulator",
        "promptjuggler_prune_webhooks",
        "promptjuggler_send_test_webhook",
        "promptjuggler_sync",
    } <= set(app_commands())


@pytest.mark.parametrize("name", app_commands())
def test_every_command_says_what_it_does(name: str) -> None:
    assert load_command_class(APP, name).help.strip(), f"{name} has no help text"


@pytest.mark.parametrize("name", app_commands())
def test_every_argument_has_help(name: str) -> None:
    actions = own_actions(name)
    assert actions, f"{name} has no arguments of its own"
    undocumented = [
        action.option_strings[0] if action.option_strings else action.dest
        for action in actions
        if not (action.help or "").strip() or action.help == argparse.SUPPRESS
    ]
    assert undocumented == [], f"manage.py help {name}: no help for {undocumented}"


@pytest.mark.parametrize("name", app_commands())
def test_every_default_is_stated(name: str) -> None:
    silent = [
        f"{action.option_strings[0]} (default {action.default!r})"
        for action in own_actions(name)
        if action.option_strings and (action.help or "").strip() and not default_is_stated(action)
    ]
    assert silent == [], f"manage.py help {name}: the help does not give the default of {silent}"


@pytest.mark.parametrize("name", app_commands())
def test_help_renders(name: str) -> None:
    """argparse formats ``%`` in help text: a stray one would break ``--help`` itself."""
    text = load_command_class(APP, name).create_parser("manage.py", name).format_help()
    assert f"manage.py {name}" in text
