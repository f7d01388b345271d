"""The Keras graph behaviour tfcompress relies on, pinned on real Keras models.

`tfcompress.core.graph` is the only reader of Keras's graph internals; if a Keras release changes
them, these tests say which answer moved.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

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


# -- traced_model: a subclassed model's call() as a functional graph of its layers ------------


class _Positions(keras.layers.Layer):
    """keras.io's token-and-position embedding: positions come from ops.arange, not the input."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = keras.layers.Embedding(20, 4)
        self.positions = keras.layers.Embedding(6, 4)

    def call(self, x):
        return self.tokens(x) + self.positions(keras.ops.arange(0, keras.ops.shape(x)[-1], 1))


class _Text(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.embed = _Positions()
        self.head = keras.layers.Dense(2)

    def call(self, x):
        return self.head(keras.ops.mean(self.embed(x), axis=1))


class _Branches(keras.Model):
    def __init__(self) -> None:
        super().__init__(name="branches")
        self.a, self.b = keras.layers.Dense(2), keras.layers.Dense(2)

    def call(self, x, training=None):
        return self.b(x) if training else self.a(x)


class _TwoInputs(keras.Model):
    def __init__(self) -> None:
        super().__init__(name="two_inputs")
        self.dense = keras.layers.Dense(2)

    def call(self, x, y):
        return self.dense(x) + y


@pytest.fixture
def keras_name_scopes_restored():
    """Keras leaves a name scope open when a subclassed model's first call cannot be traced;
    later variables would get its prefix (and damaged .h5 files would load), so close it."""
    from keras.src.backend.common import global_state

    saved = list(global_state.get_global_attribute("name_scope_stack", default=[]))
    yield
    global_state.set_global_attribute("name_scope_stack", saved)


def test_a_composite_layer_calling_a_layer_on_constants_stays_whole(keras_name_scopes_restored):
    model = _Text()
    ids = np.array([[1, 2, 3, 4, 5, 6]], "int32")
    model(ids)
    with pytest.raises(ValueError, match=r"recorded no input shape.*model\.build"):
        graph.traced_model(model, "test")
    model.build((None, 6))  # Keras could not trace the first call, so it recorded no shape
    traced = graph.traced_model(model, "test")
    assert [type(layer).__name__ for layer in traced.layers] == [
        "InputLayer",
        "_Positions",
        "Dense",
    ]
    assert len(traced.weights) == len(model.weights)
    np.testing.assert_allclose(traced(ids), model(ids), atol=1e-6)


def test_a_branch_on_training_is_traced_at_inference_with_a_warning():
    model = _Branches()
    model(np.ones((1, 3), "float32"))
    with pytest.warns(UserWarning, match="'branches' takes another path with training=True"):
        traced = graph.traced_model(model, "test")
    assert [layer.name for layer in traced.layers][1:] == [model.a.name]


def test_a_call_of_several_inputs_is_refused_with_the_fix():
    model = _TwoInputs()
    model(np.ones((1, 3), "float32"), np.ones((1, 2), "float32"))
    with pytest.raises(ValueError, match=r"'two_inputs' takes 2 inputs \(x, y\).*one argument"):
        graph.traced_model(model, "test")
