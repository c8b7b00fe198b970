"""The layering, checked from the source (every import statement, function-level ones too), not
from what happens to be imported at run time:

- `steering/` (the engine) imports nothing of experiments/, vault/, zotero/ or the product;
- `experiments/` imports no vault/, zotero/ or watcher/;
- `vault/` and `zotero/` import no torch, transformers, engine or experiments;
- `scaleout/` (Ray) imports no vault/, zotero/ or product: workers never write notes; and only
  scaleout/ (and the product, which starts it) imports ray, so everything works without the extra;
- the import graph of the package has no cycles (imports under `if TYPE_CHECKING:` excepted:
  they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "actadd_notes"
PRODUCT = ("actadd_notes.jobs", "actadd_notes.publish", "actadd_notes.comparison", "actadd_notes.cli",
           "actadd_notes.watcher", "actadd_notes.doctor")  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(every module imported, those imported outside `if TYPE_CHECKING:`), absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    everything, running = set(), set()

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                names = [base] + [f"{base}.{alias.name}" for alias in child.names]
            everything.update(names)
            if not typing_only:
                running.update(names)
            visit(child, typing_only or (isinstance(child, ast.If) and _is_type_checking(child)))

    visit(tree, False)
    return everything, running


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
IMPORTS = {name: imports_of(path) for name, path in MODULES.items()}


def _internal(names: set[str]) -> set[str]:
    """Imported names reduced to the package's own modules (`from x import y` may name a function)."""
    return {name for name in names if name in MODULES}


def _violations(prefix: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, (everything, _) in IMPORTS.items()
        if module == prefix or module.startswith(prefix + ".")
        for name in everything
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


def test_the_engine_knows_nothing_of_experiments_vaults_or_the_product():
    forbidden = (
        "actadd_notes.experiments",
        "actadd_notes.scaleout",
        "actadd_notes.vault",
        "actadd_notes.zotero",
        *PRODUCT,
    )
    assert _violations("actadd_notes.steering", forbidden) == []


def test_experiments_know_no_vault():
    forbidden = ("actadd_notes.vault", "actadd_notes.zotero", "actadd_notes.scaleout", *PRODUCT)
    assert _violations("actadd_notes.experiments", forbidden) == []


def test_ray_workers_know_no_vault_and_only_scaleout_imports_ray():
    assert _violations("actadd_notes.scaleout", ("actadd_notes.vault", "actadd_notes.zotero", *PRODUCT)) == []
    importing_ray = {
        module for module, (everything, _) in IMPORTS.items() if any(n.split(".")[0] == "ray" for n in everything)
    }
    assert importing_ray and all(module.startswith("actadd_notes.scaleout") for module in importing_ray)
    assert not any(  # imported where a Ray run starts, never at module level
        n.split(".")[0] == "ray" for module in importing_ray for n in top_level_imports(MODULES[module])
    )


@pytest.mark.parametrize("layer", ["actadd_notes.vault", "actadd_notes.zotero"])
def test_the_vault_and_zotero_import_no_torch_and_no_engine(layer):
    forbidden = ("torch", "transformers", "actadd_notes.steering", "actadd_notes.experiments", *PRODUCT)
    assert _violations(layer, forbidden) == []


def top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_import_graph_has_no_cycles():
    graph = {module: _internal(running) - {module} for module, (_, running) in IMPORTS.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target] if target in path else [module, target])
            elif target not in state:
                walk(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert cycles == []


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    source = tmp_path / "actadd_notes" / "experiments" / "probe.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from actadd_notes.vault import notes\n"
        "def f():\n    from . import search\n    import torch\n"
    )
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "actadd_notes"
    try:
        everything, running = imports_of(source)
    finally:
        PACKAGE = saved
    assert {"actadd_notes.vault", "actadd_notes.experiments.search", "torch"} <= everything
    assert "actadd_notes.vault" not in running and "actadd_notes.experiments.search" in running
