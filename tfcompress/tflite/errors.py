"""Errors raised by the converter module. Each message names the thing at fault and the fix."""

from __future__ import annotations


class ConversionError(ValueError):
    """A model could not be converted, or its inputs or calibration data do not fit."""


class TFLiteFileError(ValueError):
    """A file or byte string is not a readable, complete TFLite flatbuffer."""
