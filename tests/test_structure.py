"""The shape of the package, checked on its source (issue 20): no import circle (every import
statement counted, TYPE_CHECKING and function-level ones included), each module importing only
its own layer or lower ones (`LAYERS`), no module over 500 lines, no function over 100 lines, and
environment variables read only in `settings.py` or where a child process's environment is built
(`{**os.environ, ...}`, `dict(os.environ)`, `os.environ.copy()`).
Each test names the offenders, so a failure says what to move."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "build_assets"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 100
SETTINGS_MODULE = "build_assets.settings"
# lowest first; a module (or the modules of a package) may import its own layer or lower ones
LAYERS: tuple[tuple[str, ...], ...] = (
    ("build_assets.settings", "build_assets.errors"),
    ("build_assets.core",),
    ("build_assets.aws", "build_assets.stack"),
    ("build_assets.engine",),
    ("build_assets.project",),
    ("build_assets.dagster",),
    ("build_assets.cli",),
    ("build_assets", "build_assets.__main__", "build_assets.definitions"),  # entry points
)


@cache
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


@cache
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(), filename=str(modules()[name]))


def _known(dotted: str) -> str | None:
    """The package module `dotted` names, or the nearest package module above it."""
    while dotted and dotted not in modules():
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def imported(name: str) -> set[str]:
    """The package modules `name` imports, by any import statement anywhere in it."""
    found: set[str] = set()
    is_package = modules()[name].name == "__init__.py"
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join([*parts, *([base] if base else [])])
            targets = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            if target.startswith("build_assets") and (module := _known(target)):
                found.add(module)
    found.discard(name)
    return found


def import_cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    graph = {name: imported(name) for name in modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return groups


def layer_of(name: str) -> int:
    """The index in `LAYERS` of the nearest entry that is `name` or a package above it."""
    level = {entry: i for i, entries in enumerate(LAYERS) for entry in entries}
    dotted = name
    while dotted not in level:
        if "." not in dotted:
            raise AssertionError(f"{name} is in no layer: add it to LAYERS")
        dotted = dotted.rpartition(".")[0]
    return level[dotted]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'importer -> imported' for every edge of `graph` into a higher layer."""
    return sorted(
        f"{name} -> {target}"
        for name, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(name)
    )


def _parents(module: ast.Module) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(module) for child in ast.iter_child_nodes(node)}


def _builds_child_environment(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """`os.environ` copied whole into a new mapping (for a subprocess), or written to."""
    parent = parents.get(node)
    if isinstance(parent, ast.Dict) and any(
        k is None and v is node for k, v in zip(parent.keys, parent.values, strict=True)
    ):
        return True  # {**os.environ, ...}
    if isinstance(parent, ast.Call) and node in parent.args:
        return isinstance(parent.func, ast.Name) and parent.func.id == "dict"
    if isinstance(parent, ast.keyword) and parent.arg == "env":
        return True  # env=os.environ
    if isinstance(parent, ast.Attribute) and parent.attr in ("copy", "update", "setdefault"):
        return True
    return isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store | ast.Del)


def environment_reads(name: str) -> Iterator[int]:
    """Lines of `name` that read an environment variable."""
    module = tree(name)
    parents = _parents(module)
    for node in ast.walk(module):
        is_os = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        if not is_os or node.value.id != "os":
            continue
        child = node.attr == "environ" and _builds_child_environment(node, parents)
        if node.attr in ("getenv", "environ") and not child:
            yield node.lineno


def test_no_import_cycle() -> None:
    assert import_cycles() == []


def test_layers_import_only_downward() -> None:
    """settings/errors -> core -> aws, stack -> engine -> project -> dagster -> cli: what two
    layers share lives in the lower one."""
    assert upward_imports({name: imported(name) for name in modules()}) == []


def test_project_has_what_the_engine_protocols_name() -> None:
    """The engine names `Project` by Protocols (`engine.project_protocols`): each member exists."""
    from build_assets.engine import project_protocols as pp
    from build_assets.project import Project
    from build_assets.settings import Settings

    project = Project(Settings.resolve(environ={}, registry="localhost:5000"))
    members = {
        f"{proto.__name__}.{member}"
        for proto in (pp.FunctionProject, pp.RunProject, pp.RollbackProject)
        for member in [*vars(proto), *proto.__annotations__]
        if not member.startswith("_") or member == "_lambda_client"
    }
    assert len(members) > 10
    assert {m for m in members if not hasattr(project, m.split(".")[1])} == set()


def test_no_module_over_500_lines() -> None:
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_over_100_lines() -> None:
    long = {
        f"{name}.{node.name}:{node.lineno}": node.end_lineno - node.lineno + 1
        for name in modules()
        for node in ast.walk(tree(name))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    }
    assert long == {}


def test_environment_read_only_in_settings() -> None:
    reads = {
        name: lines
        for name in modules()
        if name != SETTINGS_MODULE and (lines := list(environment_reads(name)))
    }
    assert reads == {}


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    """The checkers themselves: a cycle, an env read and a child environment are told apart."""
    source = (
        "import os\n"
        "a = os.environ.get('X')\n"
        "b = os.getenv('Y')\n"
        "c = {**os.environ, 'Z': '1'}\n"
        "d = dict(os.environ)\n"
        "os.environ['W'] = '1'\n"
        "e = 'V' in os.environ\n"
    )
    module = ast.parse(source)
    parents = _parents(module)
    flagged = sorted(
        node.lineno
        for node in ast.walk(module)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
        and (node.attr == "getenv" or not _builds_child_environment(node, parents))
    )
    assert flagged == [2, 3, 7]
    assert "build_assets.settings" in imported("build_assets.project")
    # an upward edge is flagged, a downward or same-layer one is not
    assert upward_imports(
        {
            "build_assets.aws.x": {"build_assets.engine.builders.base", "build_assets.stack.y"},
            "build_assets.engine.z": {"build_assets.project", "build_assets.core.w"},
            "build_assets.cli.v": {"build_assets.dagster", "build_assets.errors"},
        }
    ) == [
        "build_assets.aws.x -> build_assets.engine.builders.base",
        "build_assets.engine.z -> build_assets.project",
    ]
