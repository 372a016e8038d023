"""Build the sdist and the wheel, check them, and prove the wheel works once installed.

Run from the repository with an interpreter that has ``build`` and ``twine`` (the ``dev`` extra):

    python3 .ci/check_package.py

1. ``python -m build`` makes an sdist and a wheel; ``twine check --strict`` passes on both.
2. Both archives carry the files that are not Python modules: templates, static files,
   migrations, ``py.typed``.
3. A fresh virtual environment gets the wheel (not an editable install), and this script runs
   again inside it (``--installed``), from a temporary directory so that nothing is imported from
   the repository: a tiny project migrates, a signed-in user opens the upload page (200, with the
   app's CSS and script linked and both found and served by staticfiles), ``collectstatic`` copies
   them, and an uploaded file is pushed to the bundled emulator.

Exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import zipfile
from pathlib import Path

PACKAGE = "promptjuggler_django"
#: Files every archive must carry, relative to the package directory.
DATA_FILES = (
    "py.typed",
    "migrations/0001_initial.py",
    "templates/promptjuggler_django/base.html",
    "templates/promptjuggler_django/document_upload.html",
    "static/promptjuggler_django/documents.css",
    "static/promptjuggler_django/documents.js",
    "static/promptjuggler_django/admin.css",
)
STATIC_FILES = ("promptjuggler_django/documents.css", "promptjuggler_django/documents.js")


def run(*args: str | Path, cwd: Path | None = None) -> None:
    print("$", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], cwd=cwd, check=True)  # noqa: S603 (our own argv)


def check_archives(dist: Path) -> Path:
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, f"expected one wheel and one sdist: {wheels}"
    wheel_names = set(zipfile.ZipFile(wheels[0]).namelist())
    with tarfile.open(sdists[0]) as sdist:
        sdist_names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for name in DATA_FILES:
        assert f"{PACKAGE}/{name}" in wheel_names, f"the wheel lacks {PACKAGE}/{name}"
        assert f"{PACKAGE}/{name}" in sdist_names, f"the sdist lacks {PACKAGE}/{name}"
    print(f"archives carry {len(DATA_FILES)} data files: ok", flush=True)
    return wheels[0]


def build_and_install(repo: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="pj-package-") as tmp:
        work = Path(tmp)
        dist = work / "dist"
        run(sys.executable, "-m", "build", "--outdir", dist, repo)
        run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
        wheel = check_archives(dist)
        venv = work / "venv"
        run(sys.executable, "-m", "venv", venv)
        python = venv / "bin" / "python"
        run(python, "-m", "pip", "install", "-q", wheel)
        project = work / "project"
        project.mkdir()
        run(python, Path(__file__).resolve(), "--installed", cwd=project)


SETTINGS = """\
import django

SECRET_KEY = "package-check-only"
DEBUG = True
ALLOWED_HOSTS = ["testserver"]
ROOT_URLCONF = "smoke_urls"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    *([] if django.VERSION >= (6, 0) else ["django_tasks"]),
    "promptjuggler_django",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
STATIC_URL = "static/"
STATIC_ROOT = "collected-static"
MEDIA_ROOT = "media"
TASKS = {"default": {"BACKEND": (
    "django.tasks.backends.immediate.ImmediateBackend" if django.VERSION >= (6, 0)
    else "django_tasks.backends.immediate.ImmediateBackend"
)}}
PROMPTJUGGLER = {
    "API_KEY": "pj_package_check",
    "WEBHOOK_SECRETS": ["whsec_package_check"],
    "DEFAULT_KNOWLEDGE_BASE": "kb_package_check",
}
"""

URLS = """\
from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("promptjuggler/", include("promptjuggler_django.urls")),
    *staticfiles_urlpatterns(),
]
"""


def check_installed() -> None:
    """Inside the fresh environment: the installed wheel serves its pages and pushes a file."""
    import importlib.util
    import json
    from importlib.metadata import distribution

    spec = importlib.util.find_spec(PACKAGE)
    assert spec is not None and spec.origin is not None, f"{PACKAGE} is not importable"
    package_dir = Path(spec.origin).parent
    site = Path(sys.prefix).resolve()
    assert site in package_dir.resolve().parents, f"{PACKAGE} comes from {package_dir}, not {site}"
    direct_url = distribution("promptjuggler-django").read_text("direct_url.json")
    assert not json.loads(direct_url or "{}").get("dir_info", {}).get("editable"), "editable"
    for name in DATA_FILES:
        assert (package_dir / name).is_file(), f"the installed package lacks {name}"
    print(f"installed from the wheel at {package_dir}: ok", flush=True)

    project = Path.cwd()
    (project / "smoke_settings.py").write_text(SETTINGS)
    (project / "smoke_urls.py").write_text(URLS)
    sys.path.insert(0, str(project))
    os.environ["DJANGO_SETTINGS_MODULE"] = "smoke_settings"

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.staticfiles import finders
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    from promptjuggler_django.models import KnowledgeDocument
    from promptjuggler_django.testing import FakePromptJuggler

    call_command("check", fail_level="WARNING")
    call_command("migrate", verbosity=0)
    call_command("makemigrations", PACKAGE, check=True, dry_run=True, verbosity=0)
    user = get_user_model().objects.create_user("reader", password="reader-password")
    client = Client()
    upload_url = reverse("promptjuggler_django:document_upload")
    assert client.get(upload_url).status_code == 302, "the upload page lets anonymous users in"
    client.force_login(user)
    page = client.get(upload_url)
    assert page.status_code == 200, f"GET {upload_url} answered {page.status_code}"
    html = page.content.decode()
    for static_name in STATIC_FILES:
        url = f"/static/{static_name}"
        assert url in html, f"the upload page does not link {url}"
        found = finders.find(static_name)
        assert found and Path(found).is_relative_to(package_dir), f"{static_name}: {found}"
        served = client.get(url)
        assert served.status_code == 200, f"GET {url} answered {served.status_code}"
        assert b"".join(served.streaming_content) == Path(found).read_bytes()
    call_command("collectstatic", interactive=False, verbosity=0)
    for static_name in STATIC_FILES:
        assert (Path(settings.STATIC_ROOT) / static_name).is_file(), f"collectstatic: {static_name}"
    print(f"GET {upload_url} 200 with its CSS and script served and collected: ok", flush=True)

    with FakePromptJuggler(
        settings.PROMPTJUGGLER["API_KEY"], knowledge_bases=["kb_package_check"]
    ) as fake:
        settings.PROMPTJUGGLER["BASE_URL"] = fake.url
        posted = client.post(
            upload_url, {"files": [SimpleUploadedFile("smoke.md", b"# Package check\n")]}
        )
        assert posted.status_code == 302, f"POST {upload_url} answered {posted.status_code}"
        document = KnowledgeDocument.objects.get()
        assert document.sync_state == "synced", (document.sync_state, document.last_error)
        assert [d.file_name for d in fake.documents("kb_package_check")] == ["smoke.md"]
    print("an uploaded file was pushed to the emulator: ok", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.dedent(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--installed", action="store_true", help="run the checks of the installed wheel"
    )
    args = parser.parse_args()
    if args.installed:
        check_installed()
        print("the installed wheel works", flush=True)
    else:
        build_and_install(Path(__file__).resolve().parent.parent)
        print("package check passed", flush=True)


if __name__ == "__main__":
    main()
