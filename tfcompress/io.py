"""Load saved models and weights with errors that name the file, what is wrong and what to do.

`keras.saving.load_model` reports a truncated `.keras` archive as "File not found", flipped
bytes as `zipfile.BadZipFile`, an edited `config.json` as a `JSONDecodeError` or `KeyError`,
and weights of another model as "N objects could not be loaded" without the file's name.
`load_model` and `load_weights` check the file first, register tfcompress's classes, call
Keras, and turn any failure into a `ModelFileError` that says which file, why, and the fix.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

from tfcompress._lazy_registry import register_serializables

__all__ = ["ModelFileError", "check_keras_archive", "load_model", "load_weights"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_KERAS_MEMBERS = ("config.json", "metadata.json")
_WEIGHTS_MEMBERS = ("model.weights.h5", "model.weights.npz")
_RESAVE = "Save it again from the training script (model.save(path)) or use an intact copy."


class ModelFileError(ValueError):
    """A model or weights file cannot be loaded; the message names the file and the fix.

    Attributes:
        path: the file.
        reason: what is wrong with it, in a few words.

    Example:
        >>> error = ModelFileError("m.keras", "not a zip archive", "Save it again.")
        >>> error.path, error.reason
        ('m.keras', 'not a zip archive')
    """

    def __init__(self, path: str | os.PathLike, reason: str, advice: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"Cannot load '{self.path}': {reason}. {advice}")


def _check_path(path: Path, what: str) -> None:
    if not path.exists():
        raise ModelFileError(path, "no such file", f"Check the path of the {what}.")
    if path.is_dir():
        raise ModelFileError(
            path,
            "it is a directory (a TensorFlow SavedModel?)",
            "Give a .keras or .h5 file; convert a SavedModel directly with "
            "tfcompress.convert(path) or wrap it with keras.layers.TFSMLayer.",
        )
    if path.stat().st_size == 0:
        raise ModelFileError(path, "the file is empty (0 bytes)", _RESAVE)


def check_keras_archive(path: str | os.PathLike) -> None:
    """Check that `path` is a complete, readable `.keras` archive (without building the model).

    Reads every member and its checksum, and parses `config.json` and `metadata.json`.

    Args:
        path: the `.keras` file.

    Raises:
        ModelFileError: the file is missing, truncated, damaged or not a Keras archive.

    Example:
        >>> import tempfile, keras
        >>> path = tempfile.mkdtemp() + "/m.keras"
        >>> keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save(path)
        >>> check_keras_archive(path)
    """
    path = Path(path)
    _check_path(path, ".keras file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as stream:
            head = stream.read(8)
        if head.startswith(HDF5_SIGNATURE):
            raise ModelFileError(
                path,
                "it is an HDF5 (.h5) file with a .keras name",
                "Rename it to .h5 and load that (Keras picks the format from the suffix).",
            )
        reason = (
            "truncated or not a zip archive (no zip directory at its end)"
            if head.startswith(b"PK")
            else "not a .keras zip archive"
        )
        raise ModelFileError(path, reason, _RESAVE)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [m for m in _KERAS_MEMBERS if m not in names]
            if not any(m in names for m in _WEIGHTS_MEMBERS):
                missing.append(" or ".join(_WEIGHTS_MEMBERS))
            if missing:
                raise ModelFileError(
                    path,
                    f"the archive lacks {', '.join(missing)} (has {sorted(names)})",
                    "It was not written by Keras Model.save, or was edited. " + _RESAVE,
                )
            damaged = archive.testzip()
            if damaged is not None:
                raise ModelFileError(path, f"member '{damaged}' fails its checksum", _RESAVE)
            for member in _KERAS_MEMBERS:
                try:
                    json.loads(archive.read(member))
                except (ValueError, UnicodeDecodeError) as error:
                    raise ModelFileError(
                        path, f"'{member}' inside it is not valid JSON ({error})", _RESAVE
                    ) from error
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as error:
        raise ModelFileError(path, f"the zip archive is damaged ({error})", _RESAVE) from error


def _check_hdf5(path: Path) -> None:
    _check_path(path, ".h5 file")
    with open(path, "rb") as stream:
        head = stream.read(8)
    if not head.startswith(HDF5_SIGNATURE):
        hint = " (it is a zip: a .keras archive with an .h5 name?)" if head[:2] == b"PK" else ""
        raise ModelFileError(path, f"not an HDF5 file{hint}", _RESAVE)


def _chain(error: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _explain(error: BaseException, hdf5: bool = False) -> tuple[str, str]:
    """A short reason and the fix for an error raised by Keras while loading."""
    texts = [str(e) for e in _chain(error)]
    text = "\n".join(texts)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(error).__name__
    if "deserialization of a `Lambda` layer" in text or "arbitrary code execution" in text:
        return (
            "it holds a Lambda layer (Python code), which Keras's safe mode refuses to run",
            "The file is intact. If you trust where it came from, load it with safe_mode=False "
            "(command line: --unsafe).",
        )
    missing = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
    if missing or "could not be deserialized" in text:
        name = f"'{missing.group(1)}'" if missing else "a class"
        return (
            f"{name} named in its config cannot be found",
            "Import the module that defines the custom class, or pass "
            "custom_objects={'Name': Class}; if config.json was edited, restore it.",
        )
    if "could not be loaded" in text or "shape" in text:
        detail = next((line for line in lines if "shape" in line or "expected" in line), first)
        detail = detail.split(" Target variable")[0]  # the variable's values follow
        return (
            f"the weights do not fit the model's layers ({detail[:300]})",
            "The file was saved from a different model, or its config.json was edited: load "
            "it into the model it came from (same builder and the same tfcompress calls in "
            "the same order). " + _RESAVE,
        )
    if "Unable to synchronously open" in text or "truncated file" in text:
        return (f"its HDF5 data is truncated or damaged ({first[:200]})", _RESAVE)
    if hdf5:  # HDF5 has no checksums: damage shows as odd config or structure errors
        detail = f"{type(error).__name__}: {first[:200]}"
        return (f"the HDF5 file is damaged or was edited ({detail})", _RESAVE)
    return (f"{type(error).__name__}: {first[:300]}", _RESAVE)


def load_model(
    path: str | os.PathLike,
    *,
    custom_objects: dict[str, Any] | None = None,
    compile: bool = True,
    safe_mode: bool = True,
) -> Any:
    """`keras.saving.load_model` for `.keras` and `.h5` files, with clear errors.

    tfcompress's classes are registered first, so nothing else needs importing.

    Args:
        path: a `.keras` archive or an `.h5` file written by Keras.
        custom_objects: your own custom classes, as for Keras.
        compile: restore the optimizer, loss and metrics when the file has them.
        safe_mode: refuse `Lambda` layers' Python code (Keras's default).

    Returns:
        The model.

    Raises:
        ModelFileError: the file is missing, damaged, edited, or not a Keras model file.

    Example:
        >>> import tempfile, keras, tfcompress as tfc
        >>> path = tempfile.mkdtemp() + "/m.keras"
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> tfc.prune_low_magnitude(model).save(path)
        >>> type(load_model(path).layers[0]).__name__
        'PruneLowMagnitude'
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".keras":
        check_keras_archive(path)
    elif suffix in (".h5", ".hdf5"):
        _check_hdf5(path)
    else:
        _check_path(path, "model file")
        raise ModelFileError(
            path,
            f"unknown suffix '{path.suffix}'",
            "Give a .keras (Model.save) or .h5 file; for weights only use load_weights.",
        )
    register_serializables()
    import keras

    try:
        return keras.saving.load_model(
            path, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode
        )
    except Exception as error:  # noqa: BLE001 - every cause is reported, chained
        reason, advice = _explain(error, hdf5=suffix != ".keras")
        raise ModelFileError(path, reason, advice) from error


def load_weights(model: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """`model.load_weights(path)` with an error naming the file when the weights do not fit.

    Args:
        model: a built Keras model (the same architecture and tfcompress calls as the saver).
        path: a `.weights.h5` file (Model.save_weights), or a `.keras` archive.
        **kwargs: passed to `model.load_weights` (e.g. `skip_mismatch=True`).

    Raises:
        ModelFileError: the file is missing, damaged, or holds another model's weights.

    Example:
        >>> import tempfile, keras
        >>> path = tempfile.mkdtemp() + "/m.weights.h5"
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> model.save_weights(path)
        >>> load_weights(model, path)
    """
    path = Path(path)
    if path.suffix.lower() == ".keras":
        check_keras_archive(path)
    else:
        _check_hdf5(path)
    try:
        model.load_weights(path, **kwargs)
    except Exception as error:  # noqa: BLE001 - every cause is reported, chained
        reason, advice = _explain(error)
        name = getattr(model, "name", type(model).__name__)
        raise ModelFileError(path, f"into model '{name}': {reason}", advice) from error


def model_from(model: Any, what: str) -> Any:
    """`model` itself, or the model saved at `model` when it is a path (`.keras` or `.h5`).

    The compression functions take a path as `tfcompress.convert` does; the file is read with
    `load_model` (safe mode), so a damaged file or a missing class is a `ModelFileError`.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model_from(model, "quantize_model") is model
        True
    """
    if isinstance(model, str | os.PathLike):
        if not Path(model).exists():
            raise FileNotFoundError(f"{what}: no model file at '{model}'.")
        return load_model(model)
    return model
