"""The house rules of docs/ARCHITECTURE.md, checked on the code's own imports.

- no import cycle between convkit modules (module-level imports, package inits included);
- convkit modules import each other at module level: a function-level import of a convkit
  module is allowed only in the CLI (start-up time), never to hide a cycle;
- the library below the CLI never imports typer or rich;
- the runtime never imports the test data package (convkit.testing);
- worker processes are started in one place (convkit.processes): no other module names
  ProcessPoolExecutor, multiprocessing's Pool or a start method.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "convkit"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@functools.cache
def parsed(path: Path) -> ast.Module:
    """A module's syntax tree, parsed once for every rule (parsing is most of their time)."""
    return ast.parse(path.read_text(encoding="utf-8"))


def imported(node: ast.Import | ast.ImportFrom, importer: str) -> list[str]:
    """The convkit modules an import statement loads (a from-import of a submodule counts)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in MODULES]
    base = node.module or ""
    if node.level:  # relative: resolve against the importing package
        package = importer.split(".")[: -node.level or None]
        if MODULES[importer].name == "__init__.py":
            package = importer.split(".")[: len(importer.split(".")) - node.level + 1]
        base = ".".join([*package, *([base] if base else [])])
    if base not in MODULES:
        return []
    # `from pkg import sub` needs the submodule; `from pkg import name` needs pkg's own code.
    return sorted({f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                   for alias in node.names})


@functools.cache
def imports(name: str, *, function_level: bool) -> list[tuple[str, int]]:
    """(module, line) of the convkit imports of a module, at module level or inside functions."""
    found = []
    for node, in_function in _import_statements(parsed(MODULES[name])):
        if in_function == function_level and getattr(node, "module", "") != "__future__":
            found += [(target, node.lineno) for target in imported(node, name)]
    return found


def _import_statements(node: ast.AST, in_function: bool = False,
                       ) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under node, and whether a function holds it."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, in_function
        else:
            yield from _import_statements(
                child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))


def test_no_import_cycle_between_convkit_modules():
    """A package init may import its submodules; a submodule importing a *name* from its
    package init (not a submodule) closes a cycle, and so does any other loop."""
    graph = {name: {target for target, _ in imports(name, function_level=False)} - {name}
             for name in MODULES}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target] if target in path else
                              [node, target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_convkit_imports_are_at_module_level_outside_the_cli():
    hidden = [f"{MODULES[name].relative_to(REPO)}:{line} imports {target}"
              for name in MODULES if not name.startswith("convkit.cli")
              for target, line in imports(name, function_level=True)]
    assert hidden == []


def test_the_library_never_imports_typer_or_rich():
    offenders = []
    for name, path in MODULES.items():
        if name.startswith("convkit.cli"):
            continue
        for node in ast.walk(parsed(path)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{name}: {n}" for n in names if n.split(".")[0] in ("typer", "rich")]
    assert offenders == []


def test_the_runtime_never_imports_the_test_data_package():
    users = [f"{name} imports {target}" for name in MODULES
             if not name.startswith("convkit.testing") for level in (False, True)
             for target, _ in imports(name, function_level=level)
             if target.startswith("convkit.testing")]
    assert users == []


#: What starts worker processes: only convkit.processes may name it.
PROCESS_STARTERS = {"ProcessPoolExecutor", "Pool", "get_context", "set_start_method",
                    "fork", "Process"}


def process_starters(path: Path) -> list[str]:
    """The names and attributes in PROCESS_STARTERS a module's code uses."""
    found = []
    for node in ast.walk(parsed(path)):
        name = node.id if isinstance(node, ast.Name) else \
            node.attr if isinstance(node, ast.Attribute) else None
        if name in PROCESS_STARTERS:
            found.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    return found


def test_worker_processes_are_started_in_one_place():
    """Every pool follows one rule (fork only from a process of one thread): its home is
    convkit.processes, which must see it (a broken check would pass anyway)."""
    outside = [hit for name, path in MODULES.items() if name != "convkit.processes"
               for hit in process_starters(path)]
    assert outside == []
    assert len(process_starters(MODULES["convkit.processes"])) >= 2


def test_the_checks_see_the_imports_they_must_see():
    """The parser itself: known edges are found (a broken parser would pass every rule)."""
    dicom2nii = {target for target, _ in imports("convkit.dicom2nii", function_level=False)}
    assert {"convkit.dicom.plan", "convkit.dicom.scan", "convkit.formats.output"} <= dicom2nii
    cli = {target for target, _ in imports("convkit.cli.dicom2nii", function_level=True)}
    assert "convkit.dicom2nii" in cli
