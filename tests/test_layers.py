"""The dependency rules, executable: import-linter's contracts (pyproject.toml) and no import cycles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_import_cycles_between_modules() -> None:
    """Type-checking imports count too: a cycle of any kind tangles the layers."""
    graph = grimp.build_graph("hotswapd", "hotswap_cli", cache_dir=None)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported != module and graph.chain_exists(importer=imported, imported=module):
                chain = graph.find_shortest_chain(importer=imported, imported=module)
                cycles.append(" -> ".join([module, *(chain or [])]))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _package_of(graph: grimp.ImportGraph, module: str) -> str | None:
    """The package a module belongs to: a package itself, the folder of a module, or a
    module at the top of hotswapd (hotswapd.errors) on its own. The root packages are the
    distributions' namespaces (``from hotswapd import Client``), not a layer."""
    if module in ("hotswapd", "hotswap_cli"):
        return None
    if graph.find_children(module):
        return module
    parent = module.rsplit(".", 1)[0]
    return module if parent in ("hotswapd", "hotswap_cli") else parent


def test_no_cycles_between_packages() -> None:
    """Before (0df0f2a): ten packages formed one cycle (config imported the features'
    settings, the daemon imported corpus, ensemble, benchmarking, http and tuning, which
    imported the daemon back, backends.auto imported tuning). Features now plug into the
    core's seams at the composition root, and no package imports one that imports it."""
    graph = grimp.build_graph("hotswapd", "hotswap_cli", cache_dir=None)
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = _package_of(graph, module), _package_of(graph, imported)
            if a and b and a != b:
                edges.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(edges.get(node, ()))
        return False

    cycles = sorted(f"{a} -> {b} -> ... -> {a}" for a, targets in edges.items() for b in targets if reaches(b, a))
    assert cycles == []
    assert len(edges) > 20  # the graph really was built


NO_INFERENCE_LIBRARIES = "only backend modules import torch, onnxruntime, openvino or transformers"
MAY_IMPORT_INFERENCE = {"hotswapd.backends", "hotswapd.tuning"}  # tuning.measure: `hs tune`'s measuring child


def test_the_no_inference_library_contract_covers_every_module() -> None:
    """Before: the contract listed module names, and none of the packages added since was in
    it. Now a new top-level module or package of hotswapd fails here until it is listed
    (or is a backend)."""
    import tomllib

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (contract,) = [c for c in contracts if c["name"] == NO_INFERENCE_LIBRARIES]
    listed = set(contract["source_modules"])
    package = REPO / "hotswapd"
    top_level = {f"hotswapd.{path.stem}" for path in package.iterdir() if (path.suffix == ".py" and not path.stem.startswith("__")) or (path / "__init__.py").exists()}
    tuning = {f"hotswapd.tuning.{path.stem}" for path in (package / "tuning").glob("*.py") if path.stem not in ("__init__", "measure")}
    assert sorted(top_level - MAY_IMPORT_INFERENCE - listed) == []
    assert sorted(tuning - listed) == []
    assert "hotswap_cli" in listed
