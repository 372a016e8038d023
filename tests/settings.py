"""Settings for the test suite.

``PJ_TEST_DB=postgres`` runs it on PostgreSQL, ``PJ_TEST_DB=mariadb`` on MariaDB or MySQL
(``pip install -e ".[test,mariadb]"``); SQLite otherwise.
"""

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent
SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    *([] if django.VERSION >= (6, 0) else ["django_tasks"]),
    "django_tasks_db",
    "promptjuggler_django",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

if os.environ.get("PJ_TEST_DB") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("PJ_PG_NAME", "postgres"),
            "USER": os.environ.get("PJ_PG_USER", "postgres"),
            "HOST": os.environ.get("PJ_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("PJ_PG_PORT", "5432"),
            "TEST": {"NAME": os.environ.get("PJ_PG_TEST_NAME", "test_promptjuggler")},
        }
    }
elif os.environ.get("PJ_TEST_DB") == "mariadb":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": os.environ.get("PJ_MARIADB_NAME", "test"),
            "USER": os.environ.get("PJ_MARIADB_USER", "root"),
            "PASSWORD": os.environ.get("PJ_MARIADB_PASSWORD", ""),
            "HOST": os.environ.get("PJ_MARIADB_HOST", "127.0.0.1"),
            "PORT": os.environ.get("PJ_MARIADB_PORT", "3306"),
            "OPTIONS": {"charset": "utf8mb4"},
            # The server's default collation for utf8mb4 (case-insensitive, as in most
            # production setups) unless PJ_MARIADB_COLLATION names another.
            "TEST": {
                "NAME": os.environ.get("PJ_MARIADB_TEST_NAME", "test_promptjuggler"),
                "CHARSET": "utf8mb4",
                "COLLATION": os.environ.get("PJ_MARIADB_COLLATION") or None,
            },
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": ":memory:",
            "TEST": {"NAME": str(BASE_DIR / ".test-db.sqlite3")}
            if os.environ.get("PJ_SQLITE_FILE")
            else {},
        }
    }

STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.InMemoryStorage",
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Django 6 ships django.tasks; Django 5.2 uses the django-tasks backport.
_TASKS_MODULE = "django.tasks" if django.VERSION >= (6, 0) else "django_tasks"
TASKS = {"default": {"BACKEND": f"{_TASKS_MODULE}.backends.immediate.ImmediateBackend"}}

STATIC_URL = "/static/"
LOGIN_URL = "/accounts/login/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

PROMPTJUGGLER = {
    "API_KEY": "pj_test_key",
    "BASE_URL": "http://127.0.0.1:9",  # tests that talk HTTP point this at the emulator
    "WEBHOOK_SECRETS": ["whsec_test_primary", "whsec_test_secondary"],
    "DEFAULT_KNOWLEDGE_BASE": "kb_test",
    "ASK_PROMPT": "ask-handbook",
    "RETRY_BACKOFF": 0.01,
    "RETRY_BACKOFF_MAX": 0.05,
    "CONNECT_TIMEOUT": 2.0,
    "READ_TIMEOUT": 10.0,
}
