"""Weight clustering: each kernel shares a few trainable centroids (per layer or per channel)."""

from __future__ import annotations

import abc
import enum
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfcompress.core import catalog, compat
from tfcompress.core.batchnorm import fold_batch_norms
from tfcompress.core.graph import (
    check_model,
    fresh_copy,
    needs_tracing,
    rebuild,
    selected_layers,
    traced_model,
)
from tfcompress.core.wrappers import TrainingLayer
from tfcompress.io import model_from

INITS = ("kmeans++", "linear", "density", "random")


class CentroidInitialization(enum.StrEnum):
    """How centroids start, under tfmot's names; each maps to one of `INITS`.

    `LINEAR` spaces them evenly between the smallest and largest weight, `RANDOM` draws them
    uniformly in that range, `DENSITY_BASED` spaces them evenly in the weights' distribution
    and `KMEANS_PLUS_PLUS` runs k-means++ on the weights.

    Example:
        >>> CentroidInitialization.LINEAR.init
        'linear'
    """

    LINEAR = "CentroidInitialization.LINEAR"
    RANDOM = "CentroidInitialization.RANDOM"
    DENSITY_BASED = "CentroidInitialization.DENSITY_BASED"
    KMEANS_PLUS_PLUS = "CentroidInitialization.KMEANS_PLUS_PLUS"

    @property
    def init(self) -> str:
        """The tfcompress `init` string of this initialization."""
        return _ENUM_TO_INIT[self]


_ENUM_TO_INIT = {
    CentroidInitialization.LINEAR: "linear",
    CentroidInitialization.RANDOM: "random",
    CentroidInitialization.DENSITY_BASED: "density",
    CentroidInitialization.KMEANS_PLUS_PLUS: "kmeans++",
}


def normalize_init(init: Any) -> str:
    """The `init` string for a string or a `CentroidInitialization` (tfmot's enum or ours)."""
    if isinstance(init, CentroidInitialization):
        return init.init
    text = str(getattr(init, "value", init))
    for member in CentroidInitialization:  # tfmot's enum and its string values
        if text == member.value:
            return member.init
    if text not in INITS:
        raise ValueError(
            f"init must be one of {', '.join(INITS)} or a CentroidInitialization; got {init!r}."
        )
    return text


def _clustered_whole(layer: keras.layers.Layer) -> bool:
    """A composite layer that names its own clusterable weights is wrapped as one layer."""
    return isinstance(layer, ClusterableLayer)


class ClusterableLayer(abc.ABC):
    """Mixin for a layer of your own: the weights `get_clusterable_weights` names get clustered.

    `cluster_weights` wraps such a layer in `ClusterCustomWeights`, which shares
    `number_of_clusters` values within each returned weight (per tensor).

    Example:
        >>> import keras
        >>> class MyDense(keras.layers.Dense, ClusterableLayer):
        ...     def get_clusterable_weights(self):
        ...         return [("kernel", self.kernel)]
        >>> layer = cluster_weights(MyDense(4), number_of_clusters=2)
        >>> type(layer).__name__
        'ClusterCustomWeights'
    """

    @abc.abstractmethod
    def get_clusterable_weights(self) -> list[tuple[str, Any]]:
        """The `(name, variable)` pairs to cluster."""

    def get_clusterable_algorithm(self, weight_name: str) -> Any:  # noqa: ARG002 - tfmot's API
        """tfmot's hook for a custom lookup; tfcompress supports only the default (None)."""
        return None


def _is_clusterable_layer(layer: Any) -> bool:
    return isinstance(layer, ClusterableLayer) or callable(
        getattr(layer, "get_clusterable_weights", None)
    )


L = keras.layers


def _kernel_name(layer: keras.layers.Layer) -> str | None:
    row = catalog.exact_info(layer)
    return row.cluster_kernel if row is not None else None


_RECURRENT = (L.LSTM, L.GRU, L.SimpleRNN)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)


def _cell_weights(prefix: str, cell: Any) -> list[tuple[str, Any]]:
    return [(f"{prefix}{name}", getattr(cell, name)) for name in ("kernel", "recurrent_kernel")]


def _builtin_weights(layer: Any) -> list[tuple[str, Any]] | None:
    """The kernels of a built-in layer with several of them (None for any other layer)."""
    if type(layer) in _SEPARABLE:
        return [(name, getattr(layer, name)) for name in ("depthwise_kernel", "pointwise_kernel")]
    if type(layer) in _RECURRENT or _is_cell_rnn(layer):
        return _cell_weights("", layer.cell)
    if type(layer) is L.Bidirectional and type(layer.forward_layer) in _RECURRENT:
        forward = _cell_weights("forward_", layer.forward_layer.cell)
        return forward + _cell_weights("backward_", layer.backward_layer.cell)
    if type(layer) is L.MultiHeadAttention:
        parts = ("query", "key", "value", "output")
        return [(f"{part}_kernel", getattr(layer, f"_{part}_dense").kernel) for part in parts]
    return None


def _clusterable_weights(layer: Any) -> list[tuple[str, Any]]:
    """(name, variable) of each weight `ClusterCustomWeights` clusters in `layer`."""
    if _is_clusterable_layer(layer):
        return list(layer.get_clusterable_weights())
    return _builtin_weights(layer) or []


def _custom_clusterable(layer: Any) -> bool:
    """Clustered by `ClusterCustomWeights`: a `ClusterableLayer`, or a built-in multi-kernel layer
    (SeparableConv1D/2D, LSTM, GRU, SimpleRNN, Bidirectional of those, MultiHeadAttention)."""
    if _kernel_name(layer) is not None:
        return False
    return _is_clusterable_layer(layer) or _builtin_weights_type(layer)


def _is_cell_rnn(layer: Any) -> bool:
    cells = (L.LSTMCell, L.GRUCell, L.SimpleRNNCell)
    return type(layer) is L.RNN and type(layer.cell) in cells


def _builtin_weights_type(layer: Any) -> bool:
    if type(layer) in (*_SEPARABLE, *_RECURRENT, L.MultiHeadAttention) or _is_cell_rnn(layer):
        return True
    return type(layer) is L.Bidirectional and type(layer.forward_layer) in _RECURRENT


def initial_centroids(values: np.ndarray, count: int, init: str, seed: int = 0) -> np.ndarray:
    """`count` sorted centroids for a 1-D array of weights."""
    values = values.reshape(-1).astype(np.float64)
    if values.size == 0:  # an all-zero (fully pruned) channel
        return np.zeros(count, np.float32)
    if init == "linear":
        centroids = np.linspace(values.min(), values.max(), count)
    elif init == "random":
        centroids = np.random.default_rng(seed).uniform(values.min(), values.max(), count)
    elif init == "density":
        centroids = np.quantile(values, (np.arange(count) + 0.5) / count)
    else:
        from sklearn.cluster import KMeans

        rng = np.random.default_rng(seed)
        sample = values if values.size <= 20000 else rng.choice(values, 20000, replace=False)
        distinct = np.unique(sample).size
        kmeans = KMeans(
            n_clusters=min(count, distinct), init="k-means++", n_init=1, random_state=seed
        )
        centroids = kmeans.fit(sample[:, None]).cluster_centers_[:, 0]
        if centroids.size < count:  # fewer distinct values than clusters: pad with copies
            centroids = np.resize(centroids, count)
    return np.sort(centroids).astype(np.float32)


@keras.saving.register_keras_serializable(package="tfcompress")
class ClusterWeights(TrainingLayer, keras.layers.Wrapper):
    """Wraps a Dense, EinsumDense, Conv1D/2D/3D (transposed too), DepthwiseConv1D/2D or Embedding
    layer so its kernel (an Embedding's table) takes only
    `number_of_clusters` distinct values (per channel with `per_channel=True`).

    The centroids are trainable. In training, every step re-assigns each weight to its nearest
    centroid; gradients reach both the centroids and the underlying weights (straight-through),
    so weights can move between clusters. `strip_clustering` bakes the clustered kernel in.

    Example:
        >>> import keras, numpy as np
        >>> layer = ClusterWeights(keras.layers.Dense(8), number_of_clusters=4)
        >>> _ = layer(np.ones((1, 16), "float32"))
        >>> len(np.unique(layer.clustered_kernel()))
        4
    """

    technique = "clustered"
    strip_function = "strip_clustering"

    def __init__(
        self,
        layer: keras.layers.Layer,
        number_of_clusters: int = 16,
        init: str = "kmeans++",
        per_channel: bool = False,
        preserve_sparsity: bool = False,
        **kwargs: Any,
    ):
        super().__init__(layer, **kwargs)
        _forward_input_shape(layer, self)
        kernel_name = _kernel_name(layer)
        if kernel_name is None:
            clusterable = ", ".join(
                cls.__name__ for cls in catalog.classes(lambda row: row.cluster_kernel is not None)
            )
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) cannot be clustered; clusterable "
                f"layers are {clusterable}. Leave it out with cluster_weights(..., layers=[...])."
            )
        if getattr(layer, "groups", 1) != 1:
            raise ValueError(f"Layer '{layer.name}': grouped convolutions cannot be clustered.")
        if not isinstance(number_of_clusters, int | np.integer) or number_of_clusters < 2:
            raise ValueError(
                f"number_of_clusters must be an integer >= 2; got {number_of_clusters!r}."
            )
        self.number_of_clusters = int(number_of_clusters)
        self.init = normalize_init(init)
        self.per_channel = bool(per_channel)
        self.preserve_sparsity = bool(preserve_sparsity)
        self.kernel_name = kernel_name

    # -- weights ----------------------------------------------------------------------------
    def build(self, input_shape: Any) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        kernel = self._kernel()
        size = int(np.prod(kernel.shape))
        per = size // self._channels() if self.per_channel else size
        if self.number_of_clusters > per:
            raise ValueError(
                f"number_of_clusters={self.number_of_clusters} is larger than the {per} weights "
                f"{'per channel ' if self.per_channel else ''}of layer '{self.layer.name}'."
            )
        shape = (
            (self._channels(), self.number_of_clusters)
            if self.per_channel
            else (self.number_of_clusters,)
        )
        self.centroids = self.add_weight(name="cluster_centroids", shape=shape, initializer="zeros")
        self.indices = self.add_weight(
            name="pulling_indices",
            shape=tuple(kernel.shape),
            dtype="int32",
            initializer="zeros",
            trainable=False,
        )
        if self.preserve_sparsity:
            self.sparsity_mask = self.add_weight(
                name="sparsity_mask", shape=tuple(kernel.shape), initializer="ones", trainable=False
            )
        self._initialize_clusters()
        self.built = True

    def _kernel(self) -> Any:
        return getattr(self.layer, self.kernel_name)

    def _channel_axis(self) -> int:
        # depthwise kernels are (..., in, multiplier), transposed ones (..., out, in)
        return -2 if catalog.is_depthwise(self.layer) or catalog.is_transposed(self.layer) else -1

    def _channels(self) -> int:
        return int(self._kernel().shape[self._channel_axis()])

    def _initialize_clusters(self) -> None:
        # a Sequential built at `fit` builds its layers inside a tf.function: leave the graph
        with tf.init_scope():
            self._initialize_clusters_eagerly()

    def _initialize_clusters_eagerly(self) -> None:
        kernel = keras.ops.convert_to_numpy(self._kernel())
        mask = kernel != 0 if self.preserve_sparsity else np.ones(kernel.shape, bool)
        if self.preserve_sparsity:
            self.sparsity_mask.assign(mask.astype(np.float32))
        if self.per_channel:
            moved = np.moveaxis(kernel, self._channel_axis(), 0)
            kept = np.moveaxis(mask, self._channel_axis(), 0)
            centroids = np.stack(
                [
                    initial_centroids(c[k], self.number_of_clusters, self.init)
                    for c, k in zip(moved, kept, strict=True)
                ]
            )
        else:
            centroids = initial_centroids(kernel[mask], self.number_of_clusters, self.init)
        self.centroids.assign(centroids)
        self.indices.assign(
            keras.ops.convert_to_numpy(self._nearest(ops.convert_to_tensor(kernel)))
        )

    # -- clustering -------------------------------------------------------------------------
    def _nearest(self, kernel: Any) -> Any:
        if self.per_channel:
            axis = self._channel_axis() % len(kernel.shape)
            # distances of shape (..., channels, clusters) with the channel axis last but one
            moved = ops.moveaxis(kernel, axis, -1)
            distance = ops.abs(ops.expand_dims(moved, -1) - self.centroids)
            return ops.moveaxis(ops.cast(ops.argmin(distance, axis=-1), "int32"), -1, axis)
        distance = ops.abs(ops.expand_dims(kernel, -1) - self.centroids)
        return ops.cast(ops.argmin(distance, axis=-1), "int32")

    def _gather(self, indices: Any) -> Any:
        if not self.per_channel:
            return ops.take(self.centroids, indices)
        axis = self._channel_axis() % len(indices.shape)
        moved = ops.moveaxis(indices, axis, -1)  # (..., channels)
        flat = ops.reshape(moved, (-1, self._channels()))
        offsets = ops.arange(self._channels(), dtype="int32") * self.number_of_clusters
        values = ops.take(ops.reshape(self.centroids, (-1,)), flat + offsets)
        return ops.moveaxis(ops.reshape(values, moved.shape), -1, axis)

    def strip(self) -> keras.layers.Layer:
        """A copy of the inner layer whose kernel holds the clustered values."""
        inner = fresh_copy(self.layer, tuple(self.input.shape))
        kernel = getattr(inner, self.kernel_name)
        kernel.assign(keras.ops.convert_to_numpy(self.clustered_kernel()))
        return inner

    def clustered_kernel(self) -> Any:
        """The kernel as deployed: every weight replaced by its centroid (pruned zeros kept)."""
        return self._masked(self._gather(self.indices))

    def _masked(self, values: Any) -> Any:
        return values * self.sparsity_mask if self.preserve_sparsity else values

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        kernel = self._kernel()
        if training:
            self.indices.assign(self._nearest(kernel))
        # straight-through: the value is the clustered kernel, the gradient also reaches `kernel`
        clustered = self._masked(self._gather(self.indices) + (kernel - ops.stop_gradient(kernel)))
        return self._forward(inputs, clustered)

    def _forward(self, inputs: Any, kernel: Any) -> Any:
        layer = self.layer
        if isinstance(layer, L.Embedding):
            return ops.take(kernel, ops.cast(inputs, "int32"), axis=0)
        if isinstance(layer, L.Dense):
            outputs = ops.matmul(inputs, kernel)
        elif isinstance(layer, L.EinsumDense):
            outputs = ops.einsum(layer.equation, inputs, kernel)
        elif catalog.is_depthwise(layer):
            outputs = ops.depthwise_conv(
                inputs, kernel, layer.strides, layer.padding, layer.data_format, layer.dilation_rate
            )
        elif catalog.is_transposed(layer):
            outputs = ops.conv_transpose(
                inputs,
                kernel,
                layer.strides,
                layer.padding,
                layer.output_padding,
                layer.data_format,
                layer.dilation_rate,
            )
        else:
            outputs = layer.convolution_op(inputs, kernel)  # handles causal padding
        bias = getattr(layer, "bias", None)
        if bias is not None:
            if (
                not isinstance(layer, L.Dense | L.EinsumDense)
                and layer.data_format == "channels_first"
            ):
                bias = ops.reshape(bias, (1, -1) + (1,) * (len(outputs.shape) - 2))
            outputs = outputs + bias
        activation = getattr(layer, "activation", None)
        return activation(outputs) if activation is not None else outputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "number_of_clusters": self.number_of_clusters,
            "init": self.init,
            "per_channel": self.per_channel,
            "preserve_sparsity": self.preserve_sparsity,
        }


def _forward_input_shape(layer: keras.layers.Layer, wrapper: keras.layers.Layer) -> None:
    """Let a Sequential see the wrapped layer's `input_shape=` (it then adds an InputLayer)."""
    shape = getattr(layer, "_input_shape_arg", None)
    if shape is not None:
        wrapper._input_shape_arg = shape


@keras.saving.register_keras_serializable(package="tfcompress")
class ClusterCustomWeights(TrainingLayer, keras.layers.Wrapper):
    """Clusters the weights a `ClusterableLayer` names in `get_clusterable_weights`, or every
    kernel of a built-in layer that has several (SeparableConv1D/2D: depthwise and pointwise;
    LSTM, GRU, SimpleRNN and a Bidirectional of them: kernel and recurrent kernel;
    MultiHeadAttention: query, key, value and output kernels).

    Each named weight shares `number_of_clusters` trainable centroids (per tensor). The layer's
    own `call` runs with the clustered values substituted for its variables, so any layer works;
    gradients reach the centroids and, straight-through, the underlying weights.

    Example:
        >>> import keras, numpy as np
        >>> class MyDense(keras.layers.Dense, ClusterableLayer):
        ...     def get_clusterable_weights(self):
        ...         return [("kernel", self.kernel)]
        >>> layer = ClusterCustomWeights(MyDense(3), number_of_clusters=2)
        >>> _ = layer(np.ones((1, 5), "float32"))
        >>> len(np.unique(layer.clustered_weights()["kernel"]))
        2
    """

    technique = "clustered"
    strip_function = "strip_clustering"

    def __init__(
        self,
        layer: keras.layers.Layer,
        number_of_clusters: int = 16,
        init: str = "kmeans++",
        **kwargs: Any,
    ):
        super().__init__(layer, **kwargs)
        _forward_input_shape(layer, self)
        if not _custom_clusterable(layer):
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) does not implement "
                "get_clusterable_weights(); subclass tfcompress.clustering.ClusterableLayer."
            )
        if not isinstance(number_of_clusters, int | np.integer) or number_of_clusters < 2:
            raise ValueError(
                f"number_of_clusters must be an integer >= 2; got {number_of_clusters!r}."
            )
        self.number_of_clusters = int(number_of_clusters)
        self.init = normalize_init(init)

    def build(self, input_shape: Any) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        self._names: list[str] = []
        self._centroids: list[Any] = []
        self._indices: list[Any] = []
        custom = _is_clusterable_layer(self.layer)
        for name, weight in _clusterable_weights(self.layer):
            if custom and self.layer.get_clusterable_algorithm(name) is not None:
                raise ValueError(
                    f"Layer '{self.layer.name}': get_clusterable_algorithm('{name}') returned a "
                    "custom algorithm; tfcompress always assigns each weight to its nearest "
                    "centroid. Return None from get_clusterable_algorithm."
                )
            if int(np.prod(weight.shape)) < self.number_of_clusters:
                raise ValueError(
                    f"number_of_clusters={self.number_of_clusters} is larger than the "
                    f"{int(np.prod(weight.shape))} values of weight '{name}' of layer "
                    f"'{self.layer.name}'."
                )
            self._names.append(name)
            self._centroids.append(
                self.add_weight(
                    name=f"{name}_cluster_centroids",
                    shape=(self.number_of_clusters,),
                    initializer="zeros",
                )
            )
            self._indices.append(
                self.add_weight(
                    name=f"{name}_pulling_indices",
                    shape=tuple(weight.shape),
                    dtype="int32",
                    initializer="zeros",
                    trainable=False,
                )
            )
        with tf.init_scope():
            for (_, weight), centroids, indices in zip(
                _clusterable_weights(self.layer), self._centroids, self._indices, strict=True
            ):
                values = keras.ops.convert_to_numpy(weight)
                centroids.assign(initial_centroids(values, self.number_of_clusters, self.init))
                indices.assign(_nearest_indices(ops.convert_to_tensor(values), centroids))
        self.built = True

    def clustered_weights(self) -> dict[str, np.ndarray]:
        """Each clustered weight as deployed (every value replaced by its centroid)."""
        return {
            name: keras.ops.convert_to_numpy(ops.take(centroids, indices))
            for name, centroids, indices in zip(
                self._names, self._centroids, self._indices, strict=True
            )
        }

    def call(self, inputs: Any, *args: Any, training: bool | None = None, **kwargs: Any) -> Any:
        mapping = []
        for (_, weight), centroids, indices in zip(
            _clusterable_weights(self.layer), self._centroids, self._indices, strict=True
        ):
            if training:
                indices.assign(_nearest_indices(weight, centroids))
            value = ops.convert_to_tensor(weight)
            mapping.append(
                (weight, ops.take(centroids, indices) + (value - ops.stop_gradient(value)))
            )
        # the layer's own call, reading the clustered values in place of its variables
        with keras.StatelessScope(state_mapping=mapping):
            return self.layer(inputs, *args, **kwargs)

    def strip(self) -> keras.layers.Layer:
        """A copy of the inner layer holding the clustered values."""
        inner = fresh_copy(self.layer)
        baked = self.clustered_weights()
        for name, weight in _clusterable_weights(inner):
            weight.assign(baked[name])
        return inner

    def compute_output_spec(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("training", None)
        return self.layer.compute_output_spec(*args, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "number_of_clusters": self.number_of_clusters,
            "init": self.init,
        }


def _nearest_indices(values: Any, centroids: Any) -> Any:
    distance = ops.abs(ops.expand_dims(values, -1) - centroids)
    return ops.cast(ops.argmin(distance, axis=-1), "int32")


# tfmot's keyword names that mean the same here, and the tfcompress keyword each becomes
TFMOT_ALIASES = {"cluster_centroids_init": "init", "cluster_per_channel": "per_channel"}
_OWN_KEYWORDS = (
    "number_of_clusters",
    "init",
    "per_channel",
    "layers",
    "fold_batchnorm",
    "preserve_sparsity",
)


def _resolve_aliases(options: dict[str, Any], tfmot_kwargs: dict[str, Any]) -> dict[str, Any]:
    for key, value in tfmot_kwargs.items():
        target = TFMOT_ALIASES.get(key)
        if target is None:
            raise TypeError(
                f"cluster_weights got an unknown keyword '{key}'. tfcompress keywords: "
                f"{', '.join(_OWN_KEYWORDS)}; tfmot's names accepted as aliases: "
                f"{', '.join(f'{k} (= {v})' for k, v in TFMOT_ALIASES.items())}."
            )
        if options[target] is not None:
            raise TypeError(
                f"cluster_weights got both '{key}' (tfmot's name) and '{target}'; pass one."
            )
        options[target] = value
    return options


def _refuse_legacy_keras(value: Any, what: str) -> None:
    if isinstance(value, keras.layers.Layer):  # Keras 3: no need to import tf_keras to know
        return
    if compat.is_tf_keras(value):
        raise TypeError(
            f"{what} got a legacy tf_keras (Keras 2) {type(value).__name__}; tfcompress works "
            "on Keras 3 models. Either rebuild the model with `import keras` (Keras 3) and "
            "load its weights, or take the legacy route: tensorflow_model_optimization's "
            "tfmot.clustering.keras in a process started with TF_USE_LEGACY_KERAS=1."
        )


def cluster_weights(
    model_or_layer: keras.Model | keras.layers.Layer,
    number_of_clusters: int = 16,
    init: str | CentroidInitialization | None = None,
    per_channel: bool | None = None,
    layers: Sequence[str] | None = None,
    fold_batchnorm: bool = True,
    preserve_sparsity: bool = False,
    **tfmot_kwargs: Any,
) -> keras.Model | keras.layers.Layer:
    """Cluster the kernels of a model's Dense, Conv, DepthwiseConv, SeparableConv, Embedding,
    LSTM, GRU, SimpleRNN, Bidirectional and MultiHeadAttention layers.

    Args:
        model_or_layer: a built functional or Sequential model (not modified), or one layer.
        number_of_clusters: distinct values per kernel (per channel with `per_channel`), >= 2.
        init: centroid initialization (default "kmeans++"): "kmeans++", "linear" (evenly
            between min and max), "random" (uniform between min and max), "density" (evenly
            in the weights' distribution), or a `CentroidInitialization`.
        per_channel: one set of centroids per output channel (default False).
        layers: names of the layers to cluster; by default every clusterable layer (layers
            implementing `ClusterableLayer` included).
        fold_batchnorm: first fold each BatchNormalization into the layer before it, so the
            converter does not rescale the shared values later (the BatchNormalization layers
            become identities).
        preserve_sparsity: keep the zeros of a pruned model at zero (sparsity-preserving
            clustering): centroids are fitted on the non-zero weights only.
        **tfmot_kwargs: tfmot's names, accepted as aliases: `cluster_centroids_init` (= `init`)
            and `cluster_per_channel` (= `per_channel`). Anything else is an error.

    Returns:
        A model whose clusterable layers are wrapped in `ClusterWeights` (`ClusterCustomWeights`
        for a `ClusterableLayer` and for layers with several kernels), or the wrapped layer. Fine-tune it, then call
        `strip_clustering` before `tfcompress.convert`.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> clustered = tfc.cluster_weights(build_digits_cnn(), number_of_clusters=16)
        >>> sum(isinstance(layer, tfc.sharing.ClusterWeights) for layer in clustered.layers)
        5
    """
    options = _resolve_aliases({"init": init, "per_channel": per_channel}, tfmot_kwargs)
    model_or_layer = model_from(model_or_layer, "cluster_weights")
    _refuse_legacy_keras(model_or_layer, "cluster_weights")
    if not isinstance(number_of_clusters, int | np.integer) or number_of_clusters < 2:
        raise ValueError(f"number_of_clusters must be an integer >= 2; got {number_of_clusters!r}.")
    init = normalize_init("kmeans++" if options["init"] is None else options["init"])
    per_channel = bool(options["per_channel"])

    def wrap(layer: keras.layers.Layer, **kwargs: Any) -> keras.layers.Layer:
        if _custom_clusterable(layer):
            if per_channel or preserve_sparsity:
                raise ValueError(
                    f"Layer '{layer.name}' ({type(layer).__name__}) has several kernels, clustered "
                    "per tensor: per_channel and preserve_sparsity apply to single-kernel layers "
                    "only. Leave it out with cluster_weights(..., layers=[...])."
                )
            return ClusterCustomWeights(layer, int(number_of_clusters), init, **kwargs)
        return ClusterWeights(
            layer,
            int(number_of_clusters),
            init,
            per_channel=per_channel,
            preserve_sparsity=preserve_sparsity,
            **kwargs,
        )

    if not isinstance(model_or_layer, keras.Model):
        if not isinstance(model_or_layer, keras.layers.Layer):
            raise TypeError(
                "cluster_weights expects a keras.Model or a keras layer; got "
                f"{type(model_or_layer).__name__}."
            )
        return wrap(model_or_layer)
    model = model_or_layer
    if needs_tracing(model, keep=_clustered_whole):  # subclassed: the graph of its layers
        model = traced_model(model, "cluster_weights", keep=_clustered_whole)
    check_model(model, "cluster_weights")
    names = selected_layers(model, layers, "cluster_weights")
    if any(isinstance(layer, ClusterWeights | ClusterCustomWeights) for layer in model.layers):
        raise ValueError(f"Model '{model.name}' is already clustered; strip_clustering it first.")
    if fold_batchnorm:
        model = fold_batch_norms(model)

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        chosen = names is None or layer.name in names
        clusterable = _kernel_name(layer) is not None or _custom_clusterable(layer)
        if not chosen or (names is None and not clusterable):
            return None
        if names is None and (per_channel or preserve_sparsity) and _builtin_weights_type(layer):
            warnings.warn(
                f"cluster_weights leaves '{layer.name}' ({type(layer).__name__}) unclustered: its "
                "kernels are clustered per tensor only, without preserve_sparsity. Cluster it "
                "in a separate call without per_channel/preserve_sparsity, or name the layers.",
                stacklevel=3,
            )
            return None
        wrapper = wrap(fresh_copy(layer), name=f"cluster_{layer.name}")
        wrapper.build(keras.tree.map_structure(lambda tensor: tensor.shape, layer.input))
        return wrapper

    return rebuild(model, replace)


def strip_clustering(model: keras.Model) -> keras.Model:
    """A plain Keras model whose kernels hold the clustered values (ready for `convert`).

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> plain = tfc.strip_clustering(tfc.cluster_weights(build_digits_cnn()))
        >>> any(isinstance(layer, tfc.sharing.ClusterWeights) for layer in plain.layers)
        False
    """
    _refuse_legacy_keras(model, "strip_clustering")
    check_model(model, "strip_clustering")

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if isinstance(layer, ClusterWeights | ClusterCustomWeights):
            return layer.strip()
        return None

    return rebuild(model, replace)
