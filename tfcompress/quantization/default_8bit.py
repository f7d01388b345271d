"""tfmot's `default_8bit` namespace: the default int8 scheme.

Example:
    >>> from tfcompress.quantization import default_8bit
    >>> type(default_8bit.Default8BitQuantizeScheme()).__name__
    'Default8BitQuantizeScheme'
"""

from tfcompress.quantization.scheme import Default8BitQuantizeScheme

__all__ = ["Default8BitQuantizeScheme"]
