"""Demo rows for parameter sharing: 16-cluster weights and a low-rank factorized model."""

from __future__ import annotations

import keras

from tfcompress.data import Split
from tfcompress.models import compile_classifier
from tfcompress.sharing import cluster_weights, factorize, strip_clustering

CLUSTER_EPOCHS, FACTORIZED_EPOCHS = 3, 5


def make_rows(split: Split, float_model: keras.Model, epochs: int | None = None) -> list[tuple]:
    """(name, model, convert options) for the clustered and the factorized digits CNN, each
    fine-tuned for `epochs` (or `CLUSTER_EPOCHS`, `FACTORIZED_EPOCHS`)."""
    keras.utils.set_random_seed(0)
    clustered = compile_classifier(cluster_weights(float_model, number_of_clusters=16), 1e-3)
    clustered.fit(
        split.x_train, split.y_train, epochs=epochs or CLUSTER_EPOCHS, batch_size=64, verbose=0
    )
    dense_layers = [
        layer.name for layer in float_model.layers if isinstance(layer, keras.layers.Dense)
    ]
    factorized, _ = factorize(float_model, parameter_ratio=0.5, layers=dense_layers)
    compile_classifier(factorized, 1e-3).fit(
        split.x_train, split.y_train, epochs=epochs or FACTORIZED_EPOCHS, batch_size=64, verbose=0
    )
    return [
        ("clustered16_int8", strip_clustering(clustered), {"per_channel": False}),
        ("factorized50_int8", factorized, {}),
    ]
