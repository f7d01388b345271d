"""The training-only fake-quant paths agree with TensorFlow's fake-quant ops (values, gradients)."""

import numpy as np
import pytest
import tensorflow as tf

from tfcompress.quantization.quantizers import (
    WeightQuantizer,
    fake_quant_keeping_mask,
    fake_quant_per_channel_for_training,
)


def _values_and_gradient(function, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = function(x)
        loss = tf.reduce_sum(y * tf.range(1.0, tf.size(y, tf.float32) + 1.0)[: y.shape[-1]])
    return y.numpy(), tape.gradient(loss, x).numpy()


@pytest.mark.parametrize("narrow_range,num_bits", [(True, 8), (False, 8), (True, 4)])
def test_per_channel_training_fake_quant_matches_tensorflow_op(narrow_range, num_bits):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 4, 6)).astype("float32") * rng.uniform(0.05, 4, 6)
    bound = np.abs(kernel).max(axis=(0, 1, 2))
    low = (-bound * rng.uniform(0.2, 1.0, 6)).astype("float32")  # some values clipped
    high = (bound * rng.uniform(0.2, 1.0, 6)).astype("float32")
    x = tf.constant(kernel.astype("float32"))
    ours, our_grad = _values_and_gradient(
        lambda t: fake_quant_per_channel_for_training(t, low, high, num_bits, narrow_range), x
    )
    theirs, their_grad = _values_and_gradient(
        lambda t: tf.quantization.fake_quant_with_min_max_vars_per_channel(
            t, low, high, num_bits=num_bits, narrow_range=narrow_range
        ),
        x,
    )
    step = (high - low) / (2**num_bits - 1 - int(narrow_range))
    assert np.all(np.abs(ours - theirs) <= step * 1e-4)  # same levels, float rounding apart
    np.testing.assert_array_equal(our_grad, their_grad)
    assert 0 < (their_grad == 0).sum() < their_grad.size  # the clipped values get no gradient


def test_activation_mask_gradient_matches_tensorflow_op_at_the_range_edges():
    low, high = -0.73, 2.1
    x = tf.constant(np.linspace(-1.5, 3.0, 997, dtype="float32"))
    reference = tf.quantization.fake_quant_with_min_max_vars(x, low, high)
    x = tf.concat([x, reference], 0)  # the nudged edges themselves are inputs too
    ours, our_grad = _values_and_gradient(lambda t: fake_quant_keeping_mask(t, low, high), x)
    theirs, their_grad = _values_and_gradient(
        lambda t: tf.quantization.fake_quant_with_min_max_vars(t, low, high), x
    )
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(our_grad, their_grad)


def test_weight_quantizer_training_and_inference_give_the_same_levels():
    rng = np.random.default_rng(1)
    kernel = tf.constant(rng.normal(size=(1, 1, 8, 5)).astype("float32"))
    quantizer = WeightQuantizer(num_bits=8, per_channel=True)
    trained = tf.convert_to_tensor(quantizer(kernel, training=True)).numpy()
    inferred = tf.convert_to_tensor(quantizer(kernel, training=False)).numpy()
    np.testing.assert_allclose(trained, inferred, rtol=0, atol=1e-6)
