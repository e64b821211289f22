"""The layers (docs/architecture.md): apps import down only, and no module imports itself in a circle.

    grid                      the top: settings, routing, dashboard, console, cross-app pages and cycles
    sweeps                    hyperparameter sweeps: trials run as jobs
    notebooks                 interactive sessions: a job plus the proxy to its server
    recovery                  checkpoint snapshots, replicas and restores
    bursting                  cloud bursts
    billing                   metering, invoices, budgets
    jobs                      submission, admission, dispatch
    quotas                    guarantees, limits, lending
    cluster                   nodes, pools, backends, telemetry
    portal                    the base: accounts, teams, access, locks, enqueue, broadcast

Every import counts, also one inside a function: a local import does not make an upward
dependency go away. Services name the tasks they enqueue by their registered name (tasks import
services, never the other way round); the last test checks that each such name exists.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [
    "portal",
    "cluster",
    "quotas",
    "jobs",
    "billing",
    "artifacts",
    "bursting",
    "sweeps",
    "notebooks",
    "recovery",
    "grid",
]  # bottom to top
RANK = {app: rank for rank, app in enumerate(LAYERS)}


def modules() -> dict[str, Path]:
    found = {}
    for app in LAYERS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every absolute import in the file, at any depth; `from a import b` gives a and a.b."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def project_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a name resolves to its longest module prefix)."""
    known = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        for _, target in imports(path):
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_apps_import_only_their_own_layer_and_the_ones_below() -> None:
    upward = []
    for name, path in modules().items():
        app = name.split(".")[0]
        for line, target in imports(path):
            other = target.split(".")[0]
            if other in RANK and RANK[other] > RANK[app]:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target} ({app} is below {other})")
    assert upward == [], "\n".join(sorted(set(upward)))


def test_no_module_imports_itself_through_a_circle() -> None:
    assert cycles(project_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_task_a_service_names_is_a_registered_task() -> None:
    from portal.celery import app

    named = re.compile(r"""(?:after_commit|enqueue_now)\(\s*["']([\w.]+)["']""")
    unknown = []
    for name, path in modules().items():
        for task in named.findall(path.read_text()):
            if task not in app.tasks:
                unknown.append(f"{name}: {task}")
    assert unknown == []
    assert "jobs.tasks.dispatch_job" in app.tasks  # the check sees the real registry


def test_the_rest_api_is_mounted_one_way() -> None:
    """Only grid/urls.py builds a router; every app lists its viewsets in `api.ROUTES`, all under /api/v1/."""
    builders = sorted(
        name for name, path in modules().items() for _, target in imports(path) if target == "rest_framework.routers"
    )
    assert builders == ["grid.urls"]

    from grid.urls import API_MODULES, router

    registered = {prefix for prefix, _, _ in router.registry}
    declared = {prefix for module in API_MODULES for prefix, _, _ in module.ROUTES}
    assert registered == declared
    apps_with_viewsets = {
        name.split(".")[0] for name, path in modules().items() if "ViewSet)" in path.read_text() or "ViewSet[" in path.read_text()
    }
    assert apps_with_viewsets <= {module.__name__.split(".")[0] for module in API_MODULES}
