"""Errors of `tfcompress.micro`. Each message names the thing at fault and the fix."""

from __future__ import annotations

INSTALL_HINT = "pip install 'tfcompress[micro]'"


class MicroError(ValueError):
    """A file cannot be checked or exported for TensorFlow Lite Micro (TFLM).

    Example:
        >>> from tfcompress.micro import MicroError
        >>> issubclass(MicroError, ValueError)
        True
    """


class MicroUnavailableError(MicroError, ImportError):
    """The `tflite-micro` package, which runs TFLM's kernels on this machine, is not installed."""
