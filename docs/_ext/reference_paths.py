"""MkDocs hook for the API reference: `::: tfcompress.NAME` lines name the public path; this
rewrites each to the module that defines the object, before mkdocstrings reads the page.

tfcompress imports most public names on first use (`__getattr__` and a `_NAMES` table of
name -> module in `tfcompress/__init__.py` and some subpackages), which static analysis cannot
follow. The hook follows those tables and plain `from X import name` statements in the source
(parsed, never imported), so the reference pages keep the names users type while the modules
behind them move.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_DIRECTIVE = re.compile(r"^(:::[ \t]+)(tfcompress(?:\.\w+)+)[ \t]*$", re.M)


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def _tree(module: str) -> ast.Module | None:
    path = _module_file(module)
    return ast.parse(path.read_text()) if path else None


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if _module_file(module).name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _names_table(tree: ast.Module) -> dict[str, str]:
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if (
            isinstance(target, ast.Name)
            and target.id == "_NAMES"
            and isinstance(node.value, ast.Dict)
        ):
            return {
                key.value: value.value
                for key, value in zip(node.value.keys, node.value.values, strict=True)
                if isinstance(key, ast.Constant) and isinstance(value, ast.Constant)
            }
    return {}


@functools.cache
def resolve(path: str, depth: int = 0) -> str:
    """The dotted path of the definition of `path` (`tfcompress.convert` -> `tfcompress.x.convert`).

    A name the module defines, imports or lists in its `_NAMES` table wins over a submodule of
    the same name (`tfcompress.converter.convert` is the function, as `__getattr__` answers).
    """
    module, _, name = path.rpartition(".")
    if depth > 10 or not module:
        return path
    if _module_file(module) is None:
        return f"{resolve(module, depth + 1)}.{name}"
    tree = _tree(module)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return path
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return path
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    target = f"{_absolute(module, node)}.{alias.name}"
                    return path if target == path else resolve(target, depth + 1)
    table = _names_table(tree).get(name)
    if table and table != module:
        return resolve(f"{table}.{name}", depth + 1)
    return path


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    return _DIRECTIVE.sub(lambda m: m.group(1) + resolve(m.group(2)), markdown)
