"""`FusedBatchNormalization`: Keras 3's BatchNormalization on TensorFlow's fused training kernel."""

from __future__ import annotations

from typing import Any

import keras

from tfcompress.core.graph import fresh_copy
from tfcompress.core.wrappers import TrainingLayer

__all__ = ["FusedBatchNormalization"]

_MIN_FUSED_EPSILON = 1.001e-5  # the fused op raises smaller epsilons to this value


@keras.saving.register_keras_serializable(package="tfcompress")
class FusedBatchNormalization(TrainingLayer, keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training step runs TensorFlow's fused kernel.

    Keras 3 computes batch normalization from separate moments and arithmetic ops; `tf_keras` used
    the fused kernel, which is much faster on CPU (MobileNetV2's 52 BatchNormalization layers make
    a Keras 3 training step about a quarter slower than the same step in `tf_keras`). This layer
    computes the same function (biased batch variance in the moving average, as Keras 3 does) and
    falls back to Keras's code wherever the fused kernel does not apply: inference, other backends,
    inputs that are not 4-D channels_last, masks, renorm, synchronized BN, epsilon below 1e-5.
    `prune_low_magnitude` uses it for the BatchNormalization layers of the model it rebuilds, and
    `strip_pruning` puts plain ones back.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(4, 5, 5, 3)).astype("float32")
        >>> ours, theirs = FusedBatchNormalization(), keras.layers.BatchNormalization()
        >>> bool(np.allclose(ours(x, training=True), theirs(x, training=True), atol=1e-4))
        True
        >>> bool(np.allclose(ours.moving_variance, theirs.moving_variance, atol=1e-6))
        True
    """

    technique = "batch-normalized"
    strip_function = "strip_pruning"
    reported = False  # its plain twin computes the same function

    def strip(self) -> keras.layers.BatchNormalization:
        """A plain `BatchNormalization` with the same config and weights."""
        return fresh_copy(self, as_class=keras.layers.BatchNormalization)

    def _fusable(self, inputs: Any, mask: Any) -> bool:
        rank = len(inputs.shape)
        return (
            keras.backend.backend() == "tensorflow"
            and rank == 4
            and self.axis in (-1, 3)
            and mask is None
            and not self.renorm
            and not getattr(self, "synchronized", False)
            and self.epsilon >= _MIN_FUSED_EPSILON
        )

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        if not (training and self.trainable) or not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, "float32")
        channels = x.shape[-1]
        scale = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True
        )
        # The fused op returns the Bessel-corrected variance; Keras 3 averages the biased one.
        count = tf.cast(tf.size(x) // channels, "float32")
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(outputs, self.compute_dtype)
