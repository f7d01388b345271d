"""Let `keras.saving.load_model` find tfcompress's classes after `import tfcompress` alone.

`import tfcompress` is lazy (TensorFlow loads on first use), so the modules whose classes carry
`@keras.saving.register_keras_serializable(package="tfcompress")` have not run when a user
loads a `.keras` file with plain Keras. `install()` puts one light entry per such class into
Keras's public registry (`keras.saving.get_custom_objects()`): a stand-in whose `from_config`
imports the real class's module, which registers the real class in its place, and builds the
object with it. The entries are found by reading the package's sources, so a new class is never
forgotten. When Keras is not imported yet, they are added right after `import keras` finishes
(a finder on Python's import path for the `keras` package; nothing of Keras's is replaced).

Nothing in this module imports TensorFlow or Keras.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

PREFIX = "tfcompress>"
_MARKER = "register_keras_serializable"
_lock = threading.RLock()
_registered = False


def _sources() -> list[tuple[str, Path]]:
    """(module name, source path) of every module of the package, read from the files alone."""
    root = Path(__file__).resolve().parent
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def registering_modules() -> list[str]:
    """Names of the tfcompress modules that register Keras-serializable classes.

    Found by reading the package's sources (no import), so a new module is never forgotten.

    Example:
        >>> "tfcompress.pruning.wrapper" in registering_modules()
        True
    """
    names = []
    for name, path in _sources():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:  # a compiled-only or unreadable module cannot be scanned
            continue
        if f"@keras.saving.{_MARKER}" in text or f"@{_MARKER}" in text:
            names.append(name)
    return sorted(names)


def serializable_classes() -> dict[str, tuple[str, str]]:
    """`{"tfcompress>Name": (module, class name)}` of every registered class, read from the sources.

    Example:
        >>> serializable_classes()["tfcompress>PruneLowMagnitude"]
        ('tfcompress.pruning.wrapper', 'PruneLowMagnitude')
    """
    sources = dict(_sources())
    found = {}
    for module in registering_modules():
        tree = ast.parse(sources[module].read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for decorator in node.decorator_list:
                if _MARKER not in ast.unparse(decorator):
                    continue
                keywords = getattr(decorator, "keywords", [])
                named = [k.value.value for k in keywords if k.arg == "name"]
                found[f"{PREFIX}{named[0] if named else node.name}"] = (module, node.name)
    return found


def register_serializables() -> list[str]:
    """Import every tfcompress module that registers classes with Keras (idempotent).

    Returns:
        The modules imported.

    Example:
        >>> import keras
        >>> _ = register_serializables()
        >>> "tfcompress>PruneLowMagnitude" in keras.saving.get_custom_objects()
        True
    """
    global _registered
    with _lock:
        names = registering_modules()
        if _registered:
            return names
        _registered = True
        for name in names:
            importlib.import_module(name)
        return names


def _stand_in(module: str, name: str) -> type:
    """A class whose `from_config` imports `module` (registering the real class) and delegates."""

    def from_config(cls: type, config: Any, *args: Any, **kwargs: Any) -> Any:
        real = getattr(importlib.import_module(module), name)
        return real.from_config(config, *args, **kwargs)

    def get_config(self: Any) -> dict:  # never instantiated; Keras asks registered classes for it
        return {}

    return type(
        name,
        (),
        {
            "from_config": classmethod(from_config),
            "get_config": get_config,
            "__module__": module,
            "__doc__": f"Imports {module}.{name} the first time Keras deserializes one.",
        },
    )


def _add_entries(objects: dict) -> None:
    """Put a stand-in for each tfcompress class not registered yet into Keras's registry."""
    with _lock:
        for key, (module, name) in serializable_classes().items():
            if key not in objects:
                objects[key] = _stand_in(module, name)


def _add_to_keras(keras: ModuleType) -> None:
    _add_entries(keras.saving.get_custom_objects())


class _AfterKerasLoader(importlib.abc.Loader):
    """Runs the `keras` package with its own loader, then adds the stand-ins."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        _add_to_keras(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_code... for tracebacks
        return getattr(self._inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the `keras` package through the other finders and wraps its loader, once."""

    def find_spec(
        self, fullname: str, path: Any, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)  # one package, once
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _AfterKerasLoader(spec.loader)
        return spec


def install() -> None:
    """Make plain `keras.saving.load_model` resolve `tfcompress>` names (idempotent, no import).

    Example:
        >>> import keras
        >>> install()
        >>> "tfcompress>QuantizeWrapper" in keras.saving.get_custom_objects()
        True
    """
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "saving"):
        _add_to_keras(keras)
    elif keras is None and not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
