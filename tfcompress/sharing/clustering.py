"""Weight clustering: each kernel shares a few trainable centroids (per layer or per channel)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from tfcompress._graph import (
    DEPTHWISE,
    TRANSPOSED,
    check_model,
    fresh_copy,
    rebuild,
    selected_layers,
)
from tfcompress.sharing._rewrite import fold_batch_norms

INITS = ("kmeans++", "linear", "density")
L = keras.layers
_KERNEL_ATTRIBUTE = {
    L.Dense: "kernel",
    L.EinsumDense: "kernel",
    L.Conv1D: "kernel",
    L.Conv2D: "kernel",
    L.Conv3D: "kernel",
    L.Conv1DTranspose: "kernel",
    L.Conv2DTranspose: "kernel",
    L.Conv3DTranspose: "kernel",
    L.DepthwiseConv1D: "kernel",
    L.DepthwiseConv2D: "kernel",
    L.Embedding: "embeddings",
}


def _kernel_name(layer: keras.layers.Layer) -> str | None:
    return _KERNEL_ATTRIBUTE.get(type(layer))


def initial_centroids(values: np.ndarray, count: int, init: str, seed: int = 0) -> np.ndarray:
    """`count` sorted centroids for a 1-D array of weights."""
    values = values.reshape(-1).astype(np.float64)
    if values.size == 0:  # an all-zero (fully pruned) channel
        return np.zeros(count, np.float32)
    if init == "linear":
        centroids = np.linspace(values.min(), values.max(), count)
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
class ClusterWeights(keras.layers.Wrapper):
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
        kernel_name = _kernel_name(layer)
        if kernel_name is None:
            clusterable = ", ".join(cls.__name__ for cls in _KERNEL_ATTRIBUTE)
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
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}.")
        self.number_of_clusters = int(number_of_clusters)
        self.init = init
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
        return -2 if isinstance(self.layer, DEPTHWISE | TRANSPOSED) else -1

    def _channels(self) -> int:
        return int(self._kernel().shape[self._channel_axis()])

    def _initialize_clusters(self) -> None:
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
        elif isinstance(layer, DEPTHWISE):
            outputs = ops.depthwise_conv(
                inputs, kernel, layer.strides, layer.padding, layer.data_format, layer.dilation_rate
            )
        elif isinstance(layer, TRANSPOSED):
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


def cluster_weights(
    model_or_layer: keras.Model | keras.layers.Layer,
    number_of_clusters: int = 16,
    init: str = "kmeans++",
    per_channel: bool = False,
    layers: Sequence[str] | None = None,
    fold_batchnorm: bool = True,
    preserve_sparsity: bool = False,
) -> keras.Model | ClusterWeights:
    """Cluster the kernels of a model's Dense, Conv1D, Conv2D and DepthwiseConv2D layers.

    Args:
        model_or_layer: a built functional or Sequential model (not modified), or one layer.
        number_of_clusters: distinct values per kernel (per channel with `per_channel`), >= 2.
        init: centroid initialization: "kmeans++", "linear" (evenly between min and max) or
            "density" (evenly in the weights' distribution).
        per_channel: one set of centroids per output channel.
        layers: names of the layers to cluster; by default every clusterable layer.
        fold_batchnorm: first fold each BatchNormalization into the layer before it, so the
            converter does not rescale the shared values later (the BatchNormalization layers
            become identities).
        preserve_sparsity: keep the zeros of a pruned model at zero (sparsity-preserving
            clustering): centroids are fitted on the non-zero weights only.

    Returns:
        A model whose clusterable layers are wrapped in `ClusterWeights` (or the wrapped layer).
        Fine-tune it, then call `strip_clustering` before `tfcompress.convert`.

    Example:
        >>> import tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> clustered = tfc.cluster_weights(build_digits_cnn(), number_of_clusters=16)
        >>> sum(isinstance(layer, tfc.sharing.ClusterWeights) for layer in clustered.layers)
        5
    """
    options = {
        "number_of_clusters": number_of_clusters,
        "init": init,
        "per_channel": per_channel,
        "preserve_sparsity": preserve_sparsity,
    }
    if not isinstance(model_or_layer, keras.Model):
        return ClusterWeights(model_or_layer, **options)
    model = model_or_layer
    check_model(model, "cluster_weights")
    names = selected_layers(model, layers, "cluster_weights")
    if not isinstance(number_of_clusters, int | np.integer) or number_of_clusters < 2:
        raise ValueError(f"number_of_clusters must be an integer >= 2; got {number_of_clusters!r}.")

    if any(isinstance(layer, ClusterWeights) for layer in model.layers):
        raise ValueError(f"Model '{model.name}' is already clustered; strip_clustering it first.")
    if fold_batchnorm:
        model = fold_batch_norms(model)

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        chosen = names is None or layer.name in names
        if not chosen or (names is None and _kernel_name(layer) is None):
            return None
        wrapper = ClusterWeights(fresh_copy(layer), **options, name=f"cluster_{layer.name}")
        wrapper.build(layer.input.shape)
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
    check_model(model, "strip_clustering")

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if not isinstance(layer, ClusterWeights):
            return None
        inner = fresh_copy(layer.layer, tuple(layer.input.shape))
        kernel = getattr(inner, layer.kernel_name)
        kernel.assign(keras.ops.convert_to_numpy(layer.clustered_kernel()))
        return inner

    return rebuild(model, replace)
