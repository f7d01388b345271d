"""Keras outputs to compare with TFLite outputs, without tracing a predict function."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np


def inference(model: keras.Model, x: Any) -> np.ndarray:
    """`model.predict(x)`'s values from one eager call in inference mode.

    The same kernels compute the same values as `predict()`, which first traces a predict
    function: seconds for an unrolled recurrence or a keras.applications model, paid once per
    model in a test that compares a handful of inputs.
    """
    return keras.ops.convert_to_numpy(model(x, training=False))
