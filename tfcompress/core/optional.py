"""Packages tfcompress uses only for some features, installed through an extra.

matplotlib draws the plots (`tfcompress demo`, the recipe's report, the debugger's and
`auto_quantize`'s `plot`): `pip install 'tfcompress[plots]'`.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

EXTRAS = {"matplotlib": "plots", "tflite_micro": "micro", "tf_keras": "legacy"}


def available(module: str) -> bool:
    """Whether `module` can be imported (without importing it).

    Example:
        >>> available("numpy"), available("no_such_module_here")
        (True, False)
    """
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str) -> ModuleType:
    """Import `module`, or raise an ImportError saying which extra installs it.

    Example:
        >>> require("numpy", "arrays").__name__
        'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = EXTRAS.get(module.split(".")[0])
        how = f"pip install 'tfcompress[{extra}]'" if extra else f"pip install {module}"
        raise ImportError(f"{purpose} needs {module}, which is not installed: {how}.") from error
