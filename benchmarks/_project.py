"""The minimal Django project the push benchmarks run the sync engine in."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def configure(
    *,
    storage: dict[str, Any],
    promptjuggler: dict[str, Any],
    database: str | dict[str, Any] = ":memory:",
) -> None:
    """Configure and set up Django with ``storage``, then migrate: on SQLite (in memory, or the
    file named ``database``) or on the database whose settings ``database`` is.

    Tasks go to the dummy backend: a benchmark calls the sync engine itself.
    """
    sys.path.insert(0, str(ROOT))
    import django
    from django.conf import settings

    # Django 6 ships django.tasks; Django 5.2 uses the django-tasks backport.
    tasks_module = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "promptjuggler_django",
        ],
        DATABASES={
            "default": database
            if isinstance(database, dict)
            else {"ENGINE": "django.db.backends.sqlite3", "NAME": database}
        },
        USE_TZ=True,
        STORAGES={"default": storage},
        TASKS={"default": {"BACKEND": f"{tasks_module}.backends.dummy.DummyBackend"}},
        PROMPTJUGGLER=promptjuggler,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
