"""The package's shape: no import cycles, no imports hidden in functions, the old paths deprecated.

The layer contracts themselves are in ``pyproject.toml`` (``lint-imports``, run by CI); these
tests keep what import-linter's contracts do not state.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "promptjuggler_django"

#: Imports that must wait for the app registry or keep an optional dependency optional.
ALLOWED_FUNCTION_IMPORTS = {
    # AppConfig.ready(): both need the models, which exist only once the registry is ready.
    ("apps.py", "checks"),
    ("apps.py", "sync"),
    ("apps.py", "runs"),
    # The client works without Django; only PromptJugglerClient.from_settings reads settings.
    ("client/__init__.py", "django.core.exceptions"),
    ("client/__init__.py", "conf"),
}


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_package_has_no_import_cycle() -> None:
    graph = grimp.build_graph("promptjuggler_django", exclude_type_checking_imports=True)
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]


def _function_level_imports() -> set[tuple[str, str]]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(("migrations/", "testing/")):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom):
                    if node.level:
                        found.add((rel, (node.module or "").split(".")[0] or node.names[0].name))
                    elif (node.module or "").startswith(("promptjuggler_django", "django.core")):
                        found.add((rel, node.module or ""))
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.startswith("promptjuggler_django"):
                            found.add((rel, alias.name))
    return found


def test_no_import_of_the_package_is_hidden_in_a_function() -> None:
    assert _function_level_imports() <= ALLOWED_FUNCTION_IMPORTS


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        (
            "promptjuggler_django.tasks",
            "promptjuggler_django.sync.tasks",
            ["push_documents_task", "push_knowledge_base_task", "delete_remote_task"],
        ),
        (
            "promptjuggler_django.tasks",
            "promptjuggler_django.webhooks.tasks",
            ["process_webhook_task"],
        ),
        (
            "promptjuggler_django.deliveries",
            "promptjuggler_django.webhooks",
            [
                "receive",
                "process_delivery",
                "replay_delivery",
                "process_pending_deliveries",
                "prune_deliveries",
                "log_copy",
                "dedupe_key",
            ],
        ),
        (
            "promptjuggler_django.deliveries",
            "promptjuggler_django.apply",
            ["apply_event", "APPLIERS"],
        ),
    ],
)
def test_old_module_paths_still_work_and_are_deprecated(
    old: str, new: str, names: list[str]
) -> None:
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert any(
        issubclass(w.category, DeprecationWarning) and new.split(".")[1] in str(w.message)
        for w in caught
    )
    target = importlib.import_module(new)
    for name in names:
        assert getattr(module, name) is getattr(target, name)


def test_the_old_delivery_log_module_keeps_its_outcome_alias() -> None:
    from promptjuggler_django.models import WebhookDelivery

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        deliveries = importlib.import_module("promptjuggler_django.deliveries")
    assert deliveries.Outcome is WebhookDelivery.Outcome


def test_a_job_queued_under_the_old_task_path_still_resolves() -> None:
    from django.utils.module_loading import import_string

    from promptjuggler_django.sync.tasks import push_knowledge_base_task

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = import_string("promptjuggler_django.tasks.push_knowledge_base_task")
    assert old is push_knowledge_base_task


#: The state fields only ``promptjuggler_django.transitions`` writes.
STATE_FIELDS = frozenset(
    {
        "sync_state",
        "send_state",
        "remote_status",
        "status_changed_at",
        "blocked_reason",
        "blocked_until",
    }
)
_WRITING_CALLS = frozenset({"update", "create", "get_or_create", "update_or_create"})

#: ``status`` is too common a name (responses, deliveries, events) to forbid everywhere: it is a
#: state field where it is written on a knowledge base.
KNOWLEDGE_BASE_STATE_FIELDS = frozenset({"status"})


def _root(node: ast.expr) -> ast.expr:
    """The start of a chain: ``KnowledgeBase`` in ``KnowledgeBase.objects.filter(…).update``."""
    while True:
        if isinstance(node, ast.Attribute):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        else:
            return node


def _knowledge_base_names(tree: ast.AST) -> set[str]:
    """Names bound to knowledge bases or their querysets: annotated ``KnowledgeBase``, or
    assigned (or looped over) from an expression that starts at ``KnowledgeBase``."""
    names = {"KnowledgeBase"}
    for _ in range(2):  # names bound from names found in the first pass
        for node in ast.walk(tree):
            if isinstance(node, ast.arg) and node.annotation is not None:
                if "KnowledgeBase" in ast.unparse(node.annotation).replace("QuerySet", ""):
                    names.add(node.arg)
            elif isinstance(node, (ast.Assign, ast.For, ast.AnnAssign)):
                value = node.iter if isinstance(node, ast.For) else node.value
                root = _root(value) if value is not None else None
                if isinstance(root, ast.Name) and root.id in names:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for target in targets:
                        names.update(t.id for t in ast.walk(target) if isinstance(t, ast.Name))
    return names


def _is_knowledge_base(node: ast.expr, names: set[str]) -> bool:
    if isinstance(node, ast.Attribute) and node.attr == "knowledge_base":
        return True  # document.knowledge_base.status = …
    root = _root(node)
    return isinstance(root, ast.Name) and root.id in names


def _state_writes(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    kb_names = _knowledge_base_names(tree)

    def is_state(field: object, owner: ast.expr | None) -> bool:
        if field in STATE_FIELDS:
            return True
        return (
            field in KNOWLEDGE_BASE_STATE_FIELDS
            and owner is not None
            and _is_knowledge_base(owner, kb_names)
        )

    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and is_state(target.attr, target.value):
                found.append((node.lineno, target.attr))
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name == "setattr" and len(node.args) > 1:
            field = node.args[1]
            if isinstance(field, ast.Constant) and is_state(field.value, node.args[0]):
                found.append((node.lineno, str(field.value)))
        owner = func.value if isinstance(func, ast.Attribute) else func
        if name in _WRITING_CALLS or name == "KnowledgeBase":
            for keyword in node.keywords:
                if is_state(keyword.arg, owner):
                    found.append((node.lineno, str(keyword.arg)))
    return sorted(found)


def _found_in_package(finder: Callable[[ast.AST], list[Any]], home: str) -> dict[str, list[Any]]:
    """What ``finder`` reports per module, outside ``home`` (the one module allowed to)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == home or rel.startswith(("migrations/", "testing/")):
            continue
        hits = finder(ast.parse(path.read_text(encoding="utf-8")))
        if hits:
            found[rel] = hits
    return found


def test_only_the_transitions_module_writes_the_state_fields() -> None:
    assert _found_in_package(_state_writes, "transitions.py") == {}


def test_the_state_write_finder_sees_each_kind_of_write() -> None:
    source = (
        "doc.sync_state = 'queued'\n"
        "setattr(doc, 'remote_status', 'ready')\n"
        "qs.update(status_changed_at=None)\n"
        "qs.filter(sync_state='queued')\n"
    )
    assert _state_writes(ast.parse(source)) == [
        (1, "sync_state"),
        (2, "remote_status"),
        (3, "status_changed_at"),
    ]


def test_the_state_write_finder_sees_knowledge_base_status_writes_only() -> None:
    source = (
        "def f(kb: KnowledgeBase, using, delivery, doc):\n"  # 1
        "    kb.status = 'ready'\n"  # 2
        "    KnowledgeBase.objects.filter(pk=1).update(status='ready')\n"  # 3
        "    manager = KnowledgeBase.objects.using(using)\n"  # 4
        "    manager.filter(pk=1).update(status='ready')\n"  # 5
        "    for base in KnowledgeBase.objects.all():\n"  # 6
        "        setattr(base, 'status', 'failed')\n"  # 7
        "    KnowledgeBase.objects.create(slug='x', status='pending')\n"  # 8
        "    doc.knowledge_base.status = 'ready'\n"  # 9
        "    KnowledgeBase(slug='x', status='ready')\n"  # 10
        # Not a knowledge base's state:
        "    delivery.status = 'ready'\n"
        "    WebhookDelivery.objects.create(status='ready')\n"
        "    return JsonResponse({}, status=400)\n"
        "    apply_knowledge_base_status(status='ready')\n"
        "    KnowledgeBase.objects.filter(status='ready').update(name='x')\n"
    )
    assert _state_writes(ast.parse(source)) == [
        (2, "status"),
        (3, "status"),
        (5, "status"),
        (7, "status"),
        (8, "status"),
        (9, "status"),
        (10, "status"),
    ]


def _direct_signal_sends(tree: ast.AST) -> list[int]:
    """Lines that send a signal other than through ``signals.send`` / ``send_on_commit``."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        if node.attr == "send_robust":  # also when handed over uncalled (partial, on_commit)
            found.append(node.lineno)
        elif (
            node.attr == "send"
            and isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "signals"
        ):
            found.append(node.lineno)  # signals.some_signal.send(...)
    return found


def test_signals_are_sent_one_way() -> None:
    assert _found_in_package(_direct_signal_sends, "signals.py") == {}


def test_the_signal_send_finder_sees_each_kind_of_send() -> None:
    source = (
        "signals.remote_deleted.send(sender=None)\n"
        "on_commit(partial(signal.send_robust, sender=None))\n"
        "signals.send(signals.remote_deleted, None)\n"
        "self._http.send(request)\n"
    )
    assert _direct_signal_sends(ast.parse(source)) == [1, 2]


def test_the_client_imports_no_django() -> None:
    # The client is Django-free except PromptJugglerClient.from_settings, which imports the
    # settings when called: a script or another framework can use it without Django loaded.
    code = (
        "import sys, promptjuggler_django.client, promptjuggler_django.mediatypes\n"
        "loaded = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "assert not loaded, loaded\n"
        "assert promptjuggler_django.client.UploadFile('a.csv', None).content_type == 'text/csv'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr


def test_the_old_filetypes_names_still_import() -> None:
    from promptjuggler_django import filetypes, mediatypes

    for name in mediatypes.__all__:
        assert getattr(filetypes, name) is getattr(mediatypes, name)


#: What the emulator and its pytest plugin may import of the app (``testing/`` itself aside).
TESTING_MAY_USE = frozenset({"client", "signature", "testing"})


def test_the_emulator_contract_forbids_every_other_module() -> None:
    # A forbidden list, so a module added later must be added to it: this keeps it complete.
    import tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    [contract] = [
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c.get("source_modules") == ["promptjuggler_django.testing"]
    ]
    forbidden = {m.removeprefix("promptjuggler_django.") for m in contract["forbidden_modules"]}
    modules = {
        path.stem if path.is_file() else path.name
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    assert forbidden == modules - TESTING_MAY_USE
