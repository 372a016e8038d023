"""Settings of the example site: SQLite, the app, its admin, pages and REST API.

Without ``PROMPTJUGGLER_API_KEY`` and ``PROMPTJUGGLER_WEBHOOK_SECRET`` in the environment, the
site is meant to run through ``manage.py demo``, which starts the bundled PromptJuggler emulator
and points ``PROMPTJUGGLER["BASE_URL"]`` at it. With both set, it talks to the real service.
"""

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent
#: Where ``db.sqlite3`` and ``media/`` go (``EXAMPLE_DATA_DIR`` to use another place).
DATA_DIR = Path(os.environ.get("EXAMPLE_DATA_DIR", BASE_DIR))
DATA_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", *os.environ.get("ALLOWED_HOSTS", "").split()]

_DJANGO_6 = django.VERSION >= (6, 0)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    *([] if _DJANGO_6 else ["django_tasks"]),  # Django 6 ships django.tasks
    "promptjuggler_django",
    "example_site",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_site.urls"
WSGI_APPLICATION = "example_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The site's templates come first: templates/promptjuggler_django/base.html puts the
        # app's pages inside the site's layout.
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "db.sqlite3",
        # Webhooks and page requests write from different threads: wait for the lock instead
        # of failing, and take it up front so two writers cannot deadlock.
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }
}

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
MEDIA_ROOT = DATA_DIR / "media"
MEDIA_URL = "/media/"
STATIC_URL = "/static/"

# The ImmediateBackend runs each push inside the request, right after commit: no worker to
# start. A real site would use django-tasks-db or RQ (see the app's docs).
TASKS = {
    "default": {
        "BACKEND": ("django.tasks" if _DJANGO_6 else "django_tasks")
        + ".backends.immediate.ImmediateBackend"
    }
}

#: True when the site talks to the real PromptJuggler; ``demo`` starts the emulator otherwise.
USE_REAL_PROMPTJUGGLER = bool(
    os.environ.get("PROMPTJUGGLER_API_KEY") and os.environ.get("PROMPTJUGGLER_WEBHOOK_SECRET")
)
PROMPTJUGGLER = {
    # Placeholders until `demo` starts the emulator and puts its own key, secret and URL here.
    "API_KEY": os.environ.get("PROMPTJUGGLER_API_KEY") or "pj_demo_placeholder",
    "WEBHOOK_SECRETS": [os.environ.get("PROMPTJUGGLER_WEBHOOK_SECRET") or "whsec_placeholder"],
    "BASE_URL": os.environ.get(
        "PROMPTJUGGLER_BASE_URL",
        "https://promptjuggler.com" if USE_REAL_PROMPTJUGGLER else "http://127.0.0.1:8765",
    ),
    "DEFAULT_KNOWLEDGE_BASE": os.environ.get("PROMPTJUGGLER_KNOWLEDGE_BASE", "kb_demo_handbook"),
    # The prompt the Ask page runs: `demo` publishes this one on its emulator, answering from
    # the knowledge base's documents. With the real service, name a published prompt of yours
    # whose knowledge-search tool searches that knowledge base (its input: `question`).
    "ASK_PROMPT": os.environ.get("PROMPTJUGGLER_ASK_PROMPT")
    or (None if USE_REAL_PROMPTJUGGLER else "ask-handbook"),
    "MAX_UPLOAD_SIZE": 20 * 1024 * 1024,
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "promptjuggler_django:document_list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "promptjuggler_django": {"handlers": ["console"], "level": "INFO"},
    },
}
