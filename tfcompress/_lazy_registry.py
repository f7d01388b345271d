"""Let `keras.saving.load_model` find tfcompress's classes after `import tfcompress` alone.

`import tfcompress` is lazy (TensorFlow loads on first use), so the modules whose classes carry
`@keras.saving.register_keras_serializable(package="tfcompress")` have not run when a user
loads a `.keras` file with plain Keras. Keras looks a registered name up in one dictionary,
`keras.src.saving.object_registration.GLOBAL_CUSTOM_OBJECTS`; `install()` gives that module a
dictionary that imports tfcompress's registering modules the first time a `tfcompress>` name is
missing from it. Keras is not imported here: when Keras is not loaded yet, the dictionary is
put in place right after Keras creates its registry module.

Nothing in this module imports TensorFlow or Keras.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import pkgutil
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

PREFIX = "tfcompress>"
REGISTRY_MODULE = "keras.src.saving.object_registration"
_MARKER = "register_keras_serializable"
_lock = threading.RLock()
_registered = False


def registering_modules() -> list[str]:
    """Names of the tfcompress modules that register Keras-serializable classes.

    Found by reading the package's sources (no import), so a new module is never forgotten.

    Example:
        >>> "tfcompress.pruning.wrapper" in registering_modules()
        True
    """
    root = Path(__file__).resolve().parent
    names = []
    for info in pkgutil.walk_packages([str(root)], prefix="tfcompress."):
        relative = info.name.split(".")[1:]
        source = root.joinpath(*relative)
        path = source / "__init__.py" if info.ispkg else source.with_suffix(".py")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:  # a compiled-only or unreadable module cannot be scanned
            continue
        if f"@keras.saving.{_MARKER}" in text or f"@{_MARKER}" in text:
            names.append(info.name)
    return sorted(names)


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
        _registered = True  # first: the imports below register names, which may look names up
        for name in names:
            importlib.import_module(name)
        return names


class _Registry(dict):
    """Keras's registry dictionary, which registers tfcompress's classes when one is missing."""

    def __contains__(self, key: object) -> bool:
        if dict.__contains__(self, key):
            return True
        if isinstance(key, str) and key.startswith(PREFIX) and not _registered:
            register_serializables()
            return dict.__contains__(self, key)
        return False


def _patch(module: ModuleType) -> None:
    current = getattr(module, "GLOBAL_CUSTOM_OBJECTS", None)
    if isinstance(current, dict) and not isinstance(current, _Registry):
        module.GLOBAL_CUSTOM_OBJECTS = _Registry(current)


class _PatchingLoader(importlib.abc.Loader):
    """Runs Keras's registry module with its own loader, then swaps its dictionary."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        _patch(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_code... for tracebacks
        return getattr(self._inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds Keras's registry module through the other finders and wraps its loader."""

    def find_spec(
        self, fullname: str, path: Any, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != REGISTRY_MODULE:
            return None
        sys.meta_path.remove(self)  # one module, once
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _PatchingLoader(spec.loader)
        return spec


def install() -> None:
    """Make plain `keras.saving.load_model` resolve `tfcompress>` names (idempotent, no import).

    Example:
        >>> import keras
        >>> install()
        >>> "tfcompress>QuantizeWrapper" in keras.saving.get_custom_objects()
        True
    """
    module = sys.modules.get(REGISTRY_MODULE)
    if module is not None:
        _patch(module)
    elif not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
