"""The layout's boundaries (docs/architecture.md), checked on the source: who may import whom.

    client/        the command-line client: httpx, click and service.states, nothing else
    service/       the shared core: never the web edge, the worker, the client or the roots
    service/web/   the HTTP edge: never the worker, the client or the roots
    actors/        the worker: never the web edge, the client or the roots
    jobrunner/     the composition roots: the only place that brings web and worker together

Imports inside functions count too (a lazy import is still a dependency), except for the
roots' own lazy imports, which are how `jobrunner` keeps the client light: importing its entry
point must load nothing of the server.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("service", "actors", "client", "jobrunner")
SERVER_LIBRARIES = {"sqlalchemy", "dramatiq", "redis", "uvicorn", "starlette", "yoyo", "pydantic"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
    }


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The modules a file imports (absolute names), at the top level or anywhere."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def third_party(name: str) -> bool:
    root = name.split(".")[0]
    return root not in sys.stdlib_module_names and root not in PACKAGES and root != "__future__"


RULES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    # (files under, may not import, except)
    ("service", ("service.web", "actors", "client", "jobrunner"), ("service.web",)),
    ("service.web", ("actors", "client", "jobrunner"), ()),
    ("actors", ("service.web", "client", "jobrunner"), ()),
    ("client", ("service", "actors", "jobrunner"), ()),
]


@pytest.mark.parametrize(("where", "forbidden", "excluded"), RULES, ids=[r[0] for r in RULES])
def test_no_import_crosses_a_boundary(
    where: str, forbidden: tuple[str, ...], excluded: tuple[str, ...]
) -> None:
    crossings = []
    for name, path in modules().items():
        if not within(name, where) or any(within(name, e) for e in excluded):
            continue
        for imported in imports(path):
            if any(within(imported, f) for f in forbidden) and imported != "service.states":
                crossings.append(f"{name} imports {imported}")
    assert crossings == []


def test_the_client_needs_httpx_and_click_only() -> None:
    allowed = {"httpx", "click"}
    found = {
        imported.split(".")[0]
        for name, path in modules().items()
        if within(name, "client")
        for imported in imports(path)
        if third_party(imported)
    }
    assert found <= allowed


def test_importing_the_jobrunner_entry_point_loads_nothing_of_the_server() -> None:
    """The import closure of jobrunner.cli (top-level imports, followed through the project's
    own modules) holds none of the server's libraries or modules."""
    known = modules()
    seen, todo, libraries = set(), ["jobrunner.cli"], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in imports(known[name], top_level_only=True):
            if imported in known:
                todo.append(imported)
            elif third_party(imported):
                libraries.add(imported.split(".")[0])
    assert not libraries & SERVER_LIBRARIES
    assert not {m for m in seen if within(m, "service") or within(m, "actors")}
    assert "client.commands" in seen  # the closure is followed at all
