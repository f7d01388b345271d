"""Check calibration (representative) data against the model inputs and feed it to the converter."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfcompress.tflite.errors import ConversionError

Sample = list[np.ndarray]  # one array per model input, each with a leading batch dimension of 1


def collect_samples(
    data: Any,
    specs: Sequence[tf.TensorSpec],
    num_samples: int,
    model_name: str,
    rescaled: Sequence[bool] = (),
) -> list[Sample]:
    """Read up to `num_samples` samples from an array, a tf.data.Dataset or a generator and check them.

    Arrays and batched dataset elements are split into single samples, so the calibrator sees
    the same batch size (1) whatever the source. Integer data (uint8 images) for a float input
    is cast, as `model.predict` casts it, when `rescaled[i]` says the model scales that input
    itself (a `Rescaling` layer reads it); otherwise it is refused with what to do.

    Example:
        >>> import numpy as np, tensorflow as tf
        >>> spec = tf.TensorSpec((None, 2), tf.float32)
        >>> [s[0].shape for s in collect_samples(np.ones((3, 2)), [spec], 2, "m")]
        [(1, 2), (1, 2)]
    """
    if num_samples <= 0:
        raise ConversionError(f"num_samples must be positive, got {num_samples}.")
    samples: list[Sample] = []
    # arrays given whole hold the batch axis; a dataset's or generator's elements may not
    whole = isinstance(data, np.ndarray | tf.Tensor) or (
        isinstance(data, list | tuple) and all(isinstance(i, np.ndarray | tf.Tensor) for i in data)
    )
    for element in _elements(data):
        arrays = _inputs_of(element, len(specs))
        for sample in _split_batch(arrays, specs, model_name, rescaled, whole):
            samples.append(sample)
            if len(samples) >= num_samples:
                return samples
    if not samples:
        raise ConversionError(
            "representative_data is empty: pass a few hundred real input samples."
        )
    return samples


def synthetic_samples(specs: Sequence[tf.TensorSpec], count: int, seed: int = 0) -> list[Sample]:
    """Random inputs in [0, 1) for a model whose ranges come from its own fake-quant ops."""
    rng = np.random.default_rng(seed)
    return [
        [rng.random((1, *spec.shape[1:])).astype(spec.dtype.as_numpy_dtype) for spec in specs]
        for _ in range(count)
    ]


def as_dataset_fn(samples: list[Sample], progress: bool) -> Callable[[], Iterator[Sample]]:
    """The zero-argument generator function that TFLiteConverter.representative_dataset expects."""

    def generate() -> Iterator[Sample]:
        iterable: Any = samples
        if progress:
            from tqdm.auto import tqdm

            iterable = tqdm(samples, desc="calibrating", unit="sample", leave=False)
        yield from iterable

    return generate


def _elements(data: Any) -> Iterator[Any]:
    if isinstance(data, np.ndarray | tf.Tensor):
        return iter([data])
    if isinstance(data, tf.data.Dataset):
        return data.as_numpy_iterator()
    if (
        isinstance(data, list | tuple)
        and data
        and all(isinstance(item, np.ndarray | tf.Tensor) for item in data)
    ):
        return iter([tuple(data)])  # one array per model input
    if (
        isinstance(data, list | tuple)
        and data
        and all(isinstance(item, list | tuple | int | float) for item in data)
    ):
        raise ConversionError(
            f"representative_data is a Python {type(data).__name__} of {len(data)} "
            f"{type(data[0]).__name__}s: pass a numpy array with the batch first, e.g. "
            "np.asarray(data, dtype='float32') (a list holds one array per model input)."
        )
    if callable(data):
        data = data()
    if hasattr(data, "__iter__"):
        return iter(data)
    raise ConversionError(
        f"representative_data must be a numpy array, a tf.data.Dataset or a generator; got "
        f"{type(data).__name__}."
    )


def _inputs_of(element: Any, num_inputs: int) -> list[np.ndarray]:
    """The model inputs of one element, dropping labels from `(x, y)` pairs."""
    if isinstance(element, dict):
        element = list(element.values())
    if isinstance(element, list | tuple):
        if num_inputs == 1 and len(element) >= 1:
            first = element[0]
            element = list(first) if isinstance(first, list | tuple) else [first]
        elif len(element) == num_inputs + 1 or (
            len(element) == 2 and isinstance(element[0], list | tuple)
        ):
            element = list(element[0]) if isinstance(element[0], list | tuple) else element[:-1]
    else:
        element = [element]
    return [np.asarray(value) for value in element]


def _split_batch(
    arrays: list[np.ndarray],
    specs: Sequence[tf.TensorSpec],
    model_name: str,
    rescaled: Sequence[bool] = (),
    whole: bool = False,
) -> Iterator[Sample]:
    if len(arrays) != len(specs):
        raise ConversionError(
            f"Model '{model_name}' has {len(specs)} inputs but representative_data gives "
            f"{len(arrays)} arrays per element."
        )
    batched = [
        _check_array(a, spec, i, model_name, i < len(rescaled) and rescaled[i], whole)
        for i, (a, spec) in enumerate(zip(arrays, specs, strict=True))
    ]
    sizes = {len(a) for a in batched}
    if len(sizes) != 1:
        raise ConversionError(
            f"representative_data inputs have different batch sizes: {sorted(sizes)}."
        )
    for row in range(sizes.pop()):
        yield [a[row : row + 1] for a in batched]


def _check_array(
    array: np.ndarray,
    spec: tf.TensorSpec,
    index: int,
    model_name: str,
    rescaled: bool = False,
    whole: bool = False,
) -> np.ndarray:
    expected = tuple(spec.shape)
    feature_shape = tuple(expected[1:])
    what = f"representative_data for input {index} of model '{model_name}'"
    if array.ndim == len(feature_shape) and _fits(array.shape, feature_shape) and not whole:
        array = array[None]  # one unbatched element of a dataset or generator
    elif array.ndim == len(feature_shape) and _fits(array.shape, feature_shape):
        raise ConversionError(
            f"{what} has shape {tuple(array.shape)}: one sample without the batch axis, where "
            f"the model takes {_shape_text(expected)}. Calibrate on a batch of real inputs "
            "(x[:200], batch first); for one sample on purpose, add the axis: x[None]."
        )
    if array.ndim >= 1 and len(array) == 0:
        raise ConversionError(
            f"{what} is empty (shape {tuple(array.shape)}): pass a few hundred real input "
            "samples, batch first."
        )
    if array.ndim != len(expected) or not _fits(array.shape[1:], feature_shape):
        raise ConversionError(
            f"{what} has shape {tuple(array.shape)}; expected {_shape_text(expected)} "
            "(batch first). Reshape the data to the model's input shape."
        )
    want = spec.dtype.as_numpy_dtype
    if np.issubdtype(want, np.floating) and not np.issubdtype(array.dtype, np.floating):
        if not rescaled:
            raise ConversionError(
                f"{what} has dtype {array.dtype}; expected {spec.dtype.name}, and the model does "
                "not rescale this input itself. Prepare it as you do for model.predict (e.g. "
                "x.astype('float32') / 255 when the model was trained on [0, 1] inputs)."
            )
    if np.issubdtype(want, np.integer) and not np.issubdtype(array.dtype, np.integer):
        # token ids held as floats (a float keras.Input feeding an Embedding): whole numbers cast
        if not (np.issubdtype(array.dtype, np.floating) and np.all(np.mod(array, 1) == 0)):
            raise ConversionError(
                f"{what} has dtype {array.dtype} with values that are not whole numbers; "
                f"expected {spec.dtype.name} (token ids)."
            )
    array = array.astype(want, copy=False)
    if np.issubdtype(want, np.floating):
        finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise ConversionError(
                f"{what} has NaN or infinite values (first in sample {bad}); calibration ranges would "
                "be meaningless. Clean the data first."
            )
    return array


def _fits(shape: Sequence[int], expected: Sequence[int | None]) -> bool:
    return len(shape) == len(expected) and all(
        want is None or got == want for got, want in zip(shape, expected, strict=True)
    )


def _shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"
