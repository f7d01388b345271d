"""Experimental APIs under tfmot's names: `combine` (collaborative optimization schemes).

Example:
    >>> from tfcompress.experimental import combine
    >>> combine.Default8BitPrunePreserveQuantizeScheme().preserve_sparsity
    True
"""

from tfcompress.experimental import combine

__all__ = ["combine"]
