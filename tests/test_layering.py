"""The package layers: every import (lazy ones inside functions included)
points down or sideways within its own layer, and no group of modules imports
itself in a circle.

    cli modules                       ssdkit.cli, */cli.py, *_cli.py
    convert: export <- tflite, onnx <- savedmodel, train <- models, zoo, checkpoint
    calibration | evaluation          (independent of each other)
    datasets
    runtime, devices.profiles, fileio, tables, log
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Source folder -> package (pyproject.toml's package-dir).
PACKAGE_DIRS = {"ssdkit": "ssdkit", "runtime": "ssdkit.runtime", "devices": "ssdkit.devices",
                "datasets": "ssdkit.datasets", "calibration": "ssdkit.calibration",
                "evaluation": "ssdkit.evaluation", "convert": "ssdkit.convert"}

# (module prefix, layer); the longest matching prefix decides. Within a layer,
# different prefixes may import each other only as ALLOWED_SIDEWAYS says.
LAYERS = (
    ("ssdkit.fileio", 0), ("ssdkit.tables", 0), ("ssdkit.log", 0), ("ssdkit.runtime", 0), ("ssdkit.devices", 0),
    ("ssdkit.datasets", 1),
    ("ssdkit.calibration", 2), ("ssdkit.evaluation", 2),
    ("ssdkit.convert.zoo", 3.0), ("ssdkit.convert.checkpoint", 3.0), ("ssdkit.convert.models", 3.0),
    ("ssdkit.convert.savedmodel", 3.1), ("ssdkit.convert.train", 3.1),
    ("ssdkit.convert.tflite", 3.2), ("ssdkit.convert.onnx", 3.2),
    ("ssdkit.convert", 3.3),  # export.py and whatever else orchestrates at the top of convert/
    ("ssdkit", 4),  # ssdkit.cli, ssdkit.__main__
)
CLI_LAYER = 4
ALLOWED_SIDEWAYS = {
    ("ssdkit.runtime", "ssdkit.fileio"), ("ssdkit.runtime", "ssdkit.devices"), ("ssdkit.runtime", "ssdkit.tables"),
    ("ssdkit.runtime", "ssdkit.log"),
    ("ssdkit.convert.zoo", "ssdkit.convert.models"), ("ssdkit.convert.models", "ssdkit.convert.zoo"),
    ("ssdkit.convert.checkpoint", "ssdkit.convert.models"), ("ssdkit.convert.checkpoint", "ssdkit.convert.zoo"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGE_DIRS.items():
        for path in (REPO / folder).rglob("*.py"):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _is_cli(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return module in ("ssdkit.cli", "ssdkit.__main__") or last == "cli" or last.endswith("_cli")


def _group(module: str) -> tuple[str, float]:
    if _is_cli(module):
        return module, CLI_LAYER
    matches = [(prefix, layer) for prefix, layer in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return max(matches, key=lambda m: len(m[0]))


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """ssdkit modules that ``module`` imports (a ``from pkg import name`` of a
    submodule counts as that submodule)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target
                     for alias in node.names]
        else:
            continue
        found.update(name for name in names if name == "ssdkit" or name.startswith("ssdkit."))
    found.discard(module)
    return {name for name in found if name in known or name == "ssdkit"}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {module: _imports(module, path, known) for module, path in modules.items()}


def test_every_package_folder_is_known():
    listed = set(PACKAGE_DIRS)
    folders = {p.parent.relative_to(REPO).parts[0] for p in REPO.glob("*/__init__.py")}
    assert folders <= listed | {"tests", "benchmarks", "tools"}, folders - listed


def test_every_module_has_a_layer():
    unplaced = [m for m in _modules() if _group(m)[0] == "ssdkit" and m not in ("ssdkit", "ssdkit.cli", "ssdkit.__main__")]
    assert not unplaced, f"add these to LAYERS: {unplaced}"


def test_imports_point_down_the_layers():
    wrong = []
    for module, targets in _graph().items():
        group, layer = _group(module)
        for target in targets:
            target_group, target_layer = _group(target)
            if target_layer > layer:
                wrong.append(f"{module} (layer {layer}) imports {target} (layer {target_layer})")
            elif (target_layer == layer and target_group != group and layer != CLI_LAYER
                  and (group, target_group) not in ALLOWED_SIDEWAYS):
                wrong.append(f"{module} imports its peer {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles_between_groups():
    """Cycles between module groups (the prefixes of LAYERS, each CLI module on its own)."""
    edges: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        source = _group(module)[0]
        edges.setdefault(source, set()).update(_group(t)[0] for t in targets if _group(t)[0] != source)
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    sys.setrecursionlimit(10000)
    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The checker itself: a runtime module importing the converter is caught."""
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from ssdkit.convert.zoo import ZOO\n")
    targets = _imports("ssdkit.runtime.fake", fake, set(_modules()))
    assert targets == {"ssdkit.convert.zoo"}
    assert _group("ssdkit.runtime.fake")[1] < _group("ssdkit.convert.zoo")[1]
