"""Low-rank factorization: replace Dense and 1x1 Conv2D kernels by two thinner layers (truncated SVD)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np

from tfcompress.core.graph import check_model, rebuild, selected_layers
from tfcompress.core.results import Compressed


@dataclass
class FactorizedLayer:
    name: str
    rank: int
    full_rank: int
    parameters_before: int
    parameters_after: int
    macs_before: int
    macs_after: int
    energy_kept: float


@dataclass
class FactorizationReport:
    """What `factorize` changed: per-layer ranks, parameters and multiply-accumulates (MACs)."""

    layers: list[FactorizedLayer] = field(default_factory=list)
    model_parameters_before: int = 0
    model_parameters_after: int = 0

    @property
    def parameters_saved(self) -> int:
        return self.model_parameters_before - self.model_parameters_after

    @property
    def macs_saved(self) -> int:
        return sum(layer.macs_before - layer.macs_after for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "parameters_saved": self.parameters_saved,
            "macs_saved": self.macs_saved,
        }


def factorize(
    model: keras.Model,
    rank: int | None = None,
    energy: float | None = None,
    parameter_ratio: float | None = None,
    layers: Sequence[str] | None = None,
) -> Compressed:
    """Replace Dense (and 1x1 Conv2D) kernels with two thinner layers from a truncated SVD.

    A kernel `W` (in x out) becomes `U_r S_r` (in x r) then `V_r` (r x out): `r (in + out)`
    parameters instead of `in x out`. Give exactly one of:

    Args:
        model: a built functional or Sequential model. It is not modified.
        rank: the same rank for every factorized layer (1 <= rank <= min(in, out)).
        energy: per layer, the smallest rank keeping this share (0, 1] of the squared singular values.
        parameter_ratio: per layer, the largest rank whose parameters are at most this share of the
            original kernel's (0.5 halves them).
        layers: names of the layers to factorize; by default every Dense and 1x1 Conv2D whose
            factorization saves parameters.

    Returns:
        A `Compressed` result: `.model` (the factorized model; fine-tune it a few epochs to
        recover accuracy) and `.report` (a `FactorizationReport`); it unpacks as
        `model, report = factorize(...)`.

    Example:
        >>> import keras, tfcompress as tfc
        >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64), keras.layers.Dense(10)])
        >>> small, report = tfc.factorize(model, parameter_ratio=0.5)
        >>> report.model_parameters_after < report.model_parameters_before
        True
    """
    check_model(model, "factorize")
    given = [arg for arg in (rank, energy, parameter_ratio) if arg is not None]
    if len(given) != 1:
        raise ValueError("factorize needs exactly one of rank=, energy= or parameter_ratio=.")
    if energy is not None and not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1]; got {energy}.")
    if parameter_ratio is not None and not 0.0 < parameter_ratio < 1.0:
        raise ValueError(f"parameter_ratio must be in (0, 1); got {parameter_ratio}.")
    if rank is not None and (not isinstance(rank, int | np.integer) or rank <= 0):
        raise ValueError(f"rank must be a positive integer; got {rank!r}.")
    names = selected_layers(model, layers, "factorize")
    report = FactorizationReport(model_parameters_before=model.count_params())

    def replace(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        explicit = names is not None and layer.name in names
        if names is not None and not explicit:
            return None
        if not _factorizable(layer):
            if explicit:
                raise ValueError(
                    f"Layer '{layer.name}' ({type(layer).__name__}) cannot be factorized: only Dense "
                    "and 1x1 Conv2D layers (stride 1, no groups) can."
                )
            return None
        kernel = _kernel_matrix(layer)
        chosen = _choose_rank(layer.name, kernel, rank, energy, parameter_ratio)
        in_dim, out_dim = kernel.shape
        if chosen * (in_dim + out_dim) >= in_dim * out_dim and not explicit:
            if rank is not None:
                warnings.warn(
                    f"factorize: rank {chosen} would not shrink layer '{layer.name}' "
                    f"({in_dim}x{out_dim}); kept it whole.",
                    stacklevel=3,
                )
            return None
        replacement, info = _factorized_block(layer, kernel, chosen)
        report.layers.append(info)
        return replacement

    factorized = rebuild(model, replace)
    report.model_parameters_after = factorized.count_params()
    return Compressed(factorized, report)


def _factorizable(layer: keras.layers.Layer) -> bool:
    if type(layer) is keras.layers.Dense:
        return True
    if type(layer) is keras.layers.Conv2D:
        return (
            tuple(layer.kernel_size) == (1, 1)
            and tuple(layer.strides) == (1, 1)
            and layer.groups == 1
            and layer.data_format == "channels_last"
        )
    return False


def _kernel_matrix(layer: keras.layers.Layer) -> np.ndarray:
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    return kernel.reshape(kernel.shape[-2], kernel.shape[-1])


def _choose_rank(
    name: str, kernel: np.ndarray, rank: int | None, energy: float | None, ratio: float | None
) -> int:
    in_dim, out_dim = kernel.shape
    full = min(in_dim, out_dim)
    if rank is not None:
        if rank > full:
            raise ValueError(
                f"rank {rank} is larger than layer '{name}' allows: its kernel is {in_dim}x{out_dim}, "
                f"so the rank is at most {full}."
            )
        return int(rank)
    if ratio is not None:
        return max(1, int(ratio * in_dim * out_dim // (in_dim + out_dim)))
    singular = np.linalg.svd(kernel, compute_uv=False)
    cumulative = np.cumsum(singular**2) / np.sum(singular**2)
    return int(min(full, np.searchsorted(cumulative, energy - 1e-9) + 1))


def _factorized_block(
    layer: keras.layers.Layer, kernel: np.ndarray, rank: int
) -> tuple[keras.layers.Layer, FactorizedLayer]:
    u, s, vt = np.linalg.svd(kernel, full_matrices=False)
    root = np.sqrt(s[:rank])
    first = (u[:, :rank] * root).astype(np.float32)  # in x r
    second = (root[:, None] * vt[:rank]).astype(np.float32)  # r x out
    in_dim, out_dim = kernel.shape
    config = layer.get_config()
    input_shape = tuple(layer.input.shape)
    if isinstance(layer, keras.layers.Conv2D):
        down = keras.layers.Conv2D(rank, 1, use_bias=False, name=f"{layer.name}_u")
        up = keras.layers.Conv2D(
            out_dim,
            1,
            use_bias=config["use_bias"],
            activation=config["activation"],
            name=f"{layer.name}_v",
        )
        first, second = first.reshape(1, 1, in_dim, rank), second.reshape(1, 1, rank, out_dim)
    else:
        down = keras.layers.Dense(rank, use_bias=False, name=f"{layer.name}_u")
        up = keras.layers.Dense(
            out_dim,
            use_bias=config["use_bias"],
            activation=config["activation"],
            name=f"{layer.name}_v",
        )
    block = keras.Sequential([down, up], name=layer.name)
    block.build(input_shape)
    down.set_weights([first])
    up.set_weights([second, *layer.get_weights()[1:]])
    spatial = int(np.prod([d for d in input_shape[1:-1] if d is not None])) or 1
    energy = float(np.sum(s[:rank] ** 2) / np.sum(s**2))
    info = FactorizedLayer(
        name=layer.name,
        rank=rank,
        full_rank=min(in_dim, out_dim),
        parameters_before=in_dim * out_dim,
        parameters_after=rank * (in_dim + out_dim),
        macs_before=spatial * in_dim * out_dim,
        macs_after=spatial * rank * (in_dim + out_dim),
        energy_kept=energy,
    )
    return block, info
