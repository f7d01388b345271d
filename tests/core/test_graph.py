"""The Keras graph behaviour tfcompress relies on, pinned on real Keras models.

`tfcompress.core.graph` is the only reader of Keras's graph internals; if a Keras release changes
them, these tests say which answer moved.
"""

from __future__ import annotations

import keras
import numpy as np

from tfcompress.core import graph


def _residual() -> keras.Model:
    inputs = keras.Input((4, 4, 2), name="x")
    stem = keras.layers.Conv2D(3, 1, name="stem")(inputs)
    shared = keras.layers.ReLU(name="shared")
    left = shared(stem)
    right = keras.layers.Conv2D(3, 1, name="right")(stem)
    merged = keras.layers.Add(name="add")([left, shared(right)])
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(merged))


def test_functional_and_sequential_models_have_a_graph_unbuilt_ones_do_not():
    sequential = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert graph.functional_graph(_residual()) is not None
    assert graph.functional_graph(sequential) is not None
    assert graph.functional_graph(keras.Sequential([keras.layers.Dense(1)])) is None
    assert graph.is_graph_model(sequential) and graph.is_graph_model(_residual())

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert not graph.is_graph_model(Subclassed())


def test_nodes_come_inputs_first_and_each_call_is_a_node():
    model = _residual()
    order = [node.operation.name for node in graph.nodes_inputs_first(model)]
    assert order[0] == "x" and order[-1] == "gap"
    assert order.index("stem") < order.index("right") < order.index("add")
    assert order.count("shared") == 2  # a shared layer: one node per call
    assert graph.call_count(model.get_layer("shared")) == 2
    assert graph.call_count(model.get_layer("stem")) == 1


def test_producers_and_consumers_follow_the_calls():
    model = _residual()
    stem, right, add = (model.get_layer(n) for n in ("stem", "right", "add"))
    assert [layer.name for layer in graph.consumers(stem)] == ["shared", "right"]
    assert [layer.name for layer in graph.producers(add)] == ["shared"]
    assert [layer.name for layer in graph.producers(model.get_layer("shared"))] == [
        "stem",
        "right",
    ]
    assert graph.sole_producer(right) is stem
    assert graph.sole_producer(add) is None  # two inputs
    assert graph.producer_of(model.outputs[0]).name == "gap"
    assert graph.producer_of(np.zeros(2)) is None


def test_tensor_readers_list_every_call_and_mark_the_outputs():
    model = _residual()
    readers = graph.tensor_readers(model)
    stem_out = model.get_layer("stem").output
    assert sorted(layer.name for layer, _ in readers[id(stem_out)]) == ["right", "shared"]
    assert readers[id(model.outputs[0])] == [(None, None)]
    assert readers[id(object())] == []


class TokenAndPositionEmbedding(keras.layers.Layer):
    """keras.io's text-classification layer: sublayers made in __init__, built on first call."""

    def __init__(self, maxlen: int, vocab_size: int, embed_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.token_emb = keras.layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = keras.layers.Embedding(input_dim=maxlen, output_dim=embed_dim)
        self.maxlen, self.vocab_size, self.embed_dim = maxlen, vocab_size, embed_dim

    def call(self, x):
        positions = keras.ops.arange(start=0, stop=keras.ops.shape(x)[-1], step=1)
        return self.token_emb(x) + self.pos_emb(positions)

    def get_config(self):
        config = {"maxlen": self.maxlen, "vocab_size": self.vocab_size, "embed_dim": self.embed_dim}
        return {**super().get_config(), **config}


def test_rebuild_copies_lambdas_and_layers_that_build_on_first_call():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((8,), dtype="int32")
    x = TokenAndPositionEmbedding(8, 20, 4, name="embed")(tokens)
    x = keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    model = keras.Model(tokens, keras.layers.GlobalAveragePooling1D()(x))
    copy = graph.rebuild(model, lambda layer: None)  # every layer copied, none replaced
    ids = np.arange(16).reshape(2, 8) % 20
    np.testing.assert_array_equal(copy.predict(ids, verbose=0), model.predict(ids, verbose=0))
    assert copy.get_layer("embed") is not model.get_layer("embed")
    assert graph.call_count(copy.get_layer("embed")) == 1  # building it added no call
