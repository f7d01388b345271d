"""Files made by TF's converter alone, without tfcompress's passes: what the passes start from."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def int16x8_by_tf_alone(model: keras.Model, rows: np.ndarray, int16_io: bool = False) -> bytes:
    """TF's int16x8 file of `model`, calibrated on the first 16 rows (float or int16 I/O)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([row[None]] for row in rows[:16])
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
    ]
    if int16_io:
        converter.inference_input_type = converter.inference_output_type = tf.int16
    return converter.convert()
