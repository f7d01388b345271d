"""Clustering takes subclassed models as QAT and pruning do: the graph of their layers."""

from __future__ import annotations

import keras
import numpy as np

import tfcompress as tfc
from tests.harness.subclassed import TinyNet, built
from tfcompress.data import Split


def test_a_subclassed_model_is_clustered_and_its_int8_file_keeps_the_clusters(
    digits: Split,
) -> None:
    keras.utils.set_random_seed(0)
    clustered = tfc.cluster_weights(built(TinyNet(), (1, 8, 8, 1)), number_of_clusters=4)
    assert any("cluster_" in layer.name for layer in clustered.layers)
    clustered.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clustered.fit(digits.x_train[:128], digits.y_train[:128], epochs=1, verbose=0)
    plain = tfc.strip_clustering(clustered)
    converted = tfc.convert(plain, "int8", digits.x_train[:96], num_samples=64, per_channel=False)
    assert tfc.inspect(converted).float_ops == [] and converted.fidelity.passed
    kernels = [layer.get_weights()[0] for layer in plain.layers if layer.get_weights()]
    assert all(np.unique(kernel).size <= 4 for kernel in kernels if kernel.ndim >= 2)
