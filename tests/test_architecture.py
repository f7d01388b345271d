"""The package's import graph points down: no circle, and each layer imports only those below it.

The graph is read from the sources (every `import` and `from ... import`, those inside functions
included), so an import hidden in a function cannot close a circle unnoticed.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "tfcompress"

# user-facing namespaces of earlier releases and of tfmot's names: above everything they re-export
FACADES = {"converter", "ptq", "sparsity", "clustering", "experimental"}
# each layer may import only the packages listed (besides itself); None: anything
ALLOWED: dict[str, set[str] | None] = {
    "core": set(),
    "tflite": {"core"},
    "layers": {"core"},
    "micro": {"core", "tflite"},
    "quantization": {"core", "tflite", "io"},
    "recovery": {"core", "tflite", "io"},
    "sharing": {"core", "tflite", "quantization", "collab", "io"},
    "collab": {"core", "quantization"},
    "distillation": {"core"},
    "export": {"core", "tflite", "quantization", "recovery", "micro", "io"},
    "diagnose": {"core", "tflite", "quantization", "recovery", "export", "io", "micro"},
}
# the number of imports of the package's own modules inside functions may only go down
MAX_FUNCTION_LEVEL_IMPORTS = 13  # the command line keeps its light commands free of TensorFlow


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in ROOT.rglob("*.py")}


def _target(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
            for alias in node.names
        ]
    found = []
    for name in names:
        while name not in MODULES and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in MODULES and name != "tfcompress":
            found.append(name)
    return found


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """(module -> modules it imports, [(module, target) of the imports inside functions])."""
    edges: dict[str, set[str]] = defaultdict(set)
    inside: list[tuple[str, str]] = []
    for module, path in MODULES.items():
        is_package = path.name == "__init__.py"

        def visit(
            node: ast.AST, in_function: bool, module: str = module, is_package: bool = is_package
        ) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.Import | ast.ImportFrom):
                    for target in _target(module, child, is_package):
                        if target != module:
                            edges[module].add(target)
                            if in_function:
                                inside.append((module, target))
                if _is_type_checking_block(child):
                    continue  # never runs: annotations only
                nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                visit(child, in_function or nested)

        visit(ast.parse(path.read_text()), False)
    return edges, inside


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    for node in list(edges):
        if node not in index:
            connect(node)
    return found


def _package_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in edges.items():
        for target in targets:
            if _package(module) != _package(target) and _package(target):
                packages[_package(module)].add(_package(target))
    return packages


EDGES, INSIDE_FUNCTIONS = _imports()


def test_modules_import_each_other_without_a_circle():
    assert _cycles(EDGES) == []


def test_packages_import_each_other_without_a_circle():
    assert _cycles(_package_edges(EDGES)) == []


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(layer):
    imported = _package_edges(EDGES).get(layer, set())
    assert imported <= ALLOWED[layer], f"{layer} imports {sorted(imported - ALLOWED[layer])}"


def test_no_module_of_the_package_imports_a_facade():
    offenders = sorted(
        f"{module} -> {target}"
        for module, targets in EDGES.items()
        for target in targets
        if _package(target) in FACADES
        and _package(module) not in FACADES | {"", "cli"}
        and not module.startswith("tfcompress.demo")
        and not module.startswith("tfcompress.recipe")
    )
    assert offenders == []


def test_training_layers_are_found_by_type_not_by_class_name():
    wrappers = "PruneLowMagnitude|ClusterWeights|ClusterCustomWeights|QuantizeWrapper"
    by_name = re.compile(rf"__name__\s*(==|in)[^\n]*({wrappers})")
    offenders = [
        name for name, path in MODULES.items() if by_name.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_function_level_imports_of_the_package_do_not_grow():
    assert len(INSIDE_FUNCTIONS) <= MAX_FUNCTION_LEVEL_IMPORTS, sorted(INSIDE_FUNCTIONS)


PRIVATE = re.compile(
    r"_inbound_nodes|_outbound_nodes|_keras_history|_nodes_by_depth|\._functional\b|"
    r"_flatten_layers|\._tracker\b|keras\.src\.|tensorflow\.python|tensorflow\.lite\.python|"
    r"\._experimental_"
)
PRIVATE_ALLOWED = {"tfcompress.core.graph", "tfcompress.core.compat"}


def test_keras_and_tf_private_names_are_touched_only_in_core():
    offenders = sorted(
        name
        for name, path in MODULES.items()
        if name not in PRIVATE_ALLOWED and PRIVATE.search(path.read_text(encoding="utf-8"))
    )
    assert offenders == []


def test_tests_never_import_the_benchmarks():
    tests = Path(__file__).resolve().parent
    pattern = re.compile(r"^\s*(from benchmarks\b|import benchmarks\b)|sys\.path.*benchmarks", re.M)
    offenders = sorted(
        str(path.relative_to(tests))
        for path in tests.rglob("*.py")
        if pattern.search(path.read_text())
    )
    assert offenders == []
