"""Old import path of `tfcompress.graph` (kept while in-flight work moves over)."""

from tfcompress.graph.model import *  # noqa: F403
from tfcompress.graph.model import DEPTHWISE, TRANSPOSED  # noqa: F401
