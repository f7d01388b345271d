"""prune_channels on keras.applications nets (SE blocks, Keras ops, residual stages) and on
Sequential models."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfcompress.pruning import prune_channels


def test_sequential_model_is_pruned_by_channel() -> None:
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, name="a"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(8, 3, name="b"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, name="out"),
        ]
    )
    small = prune_channels(model, 0.5)
    assert isinstance(small, keras.Sequential)
    assert small.get_layer("a").filters == 4 and small.get_layer("b").filters == 4
    x = np.random.default_rng(1).random((2, 8, 8, 1)).astype("float32")
    assert small.predict(x, verbose=0).shape == (2, 3)
    assert prune_channels(model, macs_ratio=0.5, return_report=True).report.reached <= 0.5
    # a fraction has its report too, and the model is a plain model with no report on it
    same, report = prune_channels(model, 0.5, return_report=True)
    assert report.target_kind == "fraction" and report.reached == 0.5
    assert report.kept == {"a": [4, 8], "b": [4, 8]} and "out" in report.left_whole
    assert report.pruned_macs < report.dense_macs
    assert not hasattr(same, "channel_pruning_report")
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="built functional or Sequential"):
        prune_channels(unbuilt, 0.5)


@pytest.mark.slow
def test_efficientnet_prunes_aligned_through_se_blocks() -> None:
    # MobileNetV2/V3 and ResNet50 at 224: `benchmarks/speed_bench.py --only channels`
    keras.utils.set_random_seed(2)
    model = keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None, classes=10)
    small, report = prune_channels(model, macs_ratio=0.6, return_report=True)
    assert 0.55 <= report.reached <= 0.6
    # only the classifier is left whole, and why is said; the SE blocks' Reshape is not
    assert len(report.left_whole) == 1
    why = next(iter(report.left_whole.values()))
    assert "model output" in why or "Flatten" in why
    # every squeeze-excite expand conv keeps as many channels as the block it scales
    for layer in small.layers:
        if layer.name.endswith("se_expand"):
            scaled = layer.output.shape[-1]
            assert any(scaled == lw[0] for key, lw in report.kept.items() if layer.name in key)
    x = np.random.default_rng(2).random((2, 32, 32, 3)).astype("float32") * 255
    assert tuple(small(x, training=False).shape) == (2, 10)
    # int8 conversion of the pruned zoo nets: speed_bench.py --only channels (`architectures`)
