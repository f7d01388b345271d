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
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

from tfcompress import legacy
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
    """`keras.saving.load_model` for `.keras`, `.h5` and Keras 2 files, with clear errors.

    tfcompress's classes are registered first, so nothing else needs importing. A Keras 2 /
    TF 2.x `.h5` file that Keras 3 refuses, or a TF 2.x SavedModel directory of a Keras model, is
    loaded with `tf_keras` (`pip install 'tfcompress[legacy]'`) and rebuilt as a Keras 3 model
    with the same layers and weights (`tfcompress.legacy.rebuild`; its outputs are checked
    against tf_keras's on a random batch, and a warning says so). Every tool then works on it.

    Args:
        path: a `.keras` archive, an `.h5` file written by Keras 2 or 3, or a SavedModel
            directory written by Keras 2 (`model.save(dir)` in TF 2.x).
        custom_objects: your own custom classes, as for Keras (Keras 3 classes: for a Keras 2
            file, the class that rebuilds each custom layer, by its class name).
        compile: restore the optimizer, loss and metrics when the file has them (a rebuilt
            Keras 2 `.h5` model is compiled with the file's loss, metrics and optimizer
            settings where Keras 3 knows them by name, without the optimizer's state; a rebuilt
            SavedModel comes back uncompiled).
        safe_mode: refuse `Lambda` layers' Python code (Keras's default).

    Returns:
        The Keras 3 model.

    Raises:
        ModelFileError: the file is missing, damaged, edited, or not a Keras model file; or a
            Keras 2 model has a layer Keras 3 cannot rebuild (named, with what to do). An
            intact file is never called damaged.

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
    if legacy.is_savedmodel_dir(path):
        return _load_keras2(path, "a TF 2.x SavedModel", custom_objects, safe_mode, compile)
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

    written_by = _hdf5_keras_version(path) if suffix != ".keras" else None
    try:
        return keras.saving.load_model(
            path, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode
        )
    except Exception as error:  # noqa: BLE001 - every cause is reported, chained
        if written_by is not None and written_by.startswith("2"):
            return _load_keras2(
                path, f"a Keras {written_by} .h5 file", custom_objects, safe_mode, compile
            )
        reason, advice = _explain(error, hdf5=suffix != ".keras")
        raise ModelFileError(path, reason, advice) from error


def _hdf5_keras_version(path: Path) -> str | None:
    """The Keras version an intact `.h5` model file names (None: unreadable or no model in it)."""
    import h5py

    try:
        with h5py.File(path, "r") as file:
            if "model_config" not in file.attrs:
                return None
            json.loads(file.attrs["model_config"])
            version = file.attrs.get("keras_version", "2")
    except Exception:  # noqa: BLE001 - a damaged file: Keras's own error explains it
        return None
    return version.decode() if isinstance(version, bytes) else str(version)


def _model_config_text(path: Path) -> str:
    """The model's config as saved (h5 attribute or SavedModel metadata), for a look before loading."""
    if path.is_dir():
        metadata = path / "keras_metadata.pb"
        return metadata.read_bytes().decode("utf-8", "replace") if metadata.is_file() else ""
    import h5py

    with h5py.File(path, "r") as file:
        config = file.attrs["model_config"]
    return config.decode() if isinstance(config, bytes) else str(config)


def _load_keras2(
    path: Path,
    what: str,
    custom_objects: dict[str, Any] | None,
    safe_mode: bool,
    compile: bool = True,
) -> Any:
    """Load a Keras 2 file with tf_keras and rebuild it in Keras 3 (same weights, same outputs)."""
    if path.is_dir() and not (path / "keras_metadata.pb").is_file():
        raise ModelFileError(
            path,
            "it is a TensorFlow SavedModel without a Keras model in it (no keras_metadata.pb)",
            "Convert it directly with tfcompress.convert(path) (tfcompress convert DIR), or "
            "call it from Keras 3 with keras.layers.TFSMLayer(path).",
        )
    config = _model_config_text(path)
    if safe_mode and re.search(r'"class_name":\s*"Lambda"', config):
        raise ModelFileError(
            path,
            f"it is {what} holding a Lambda layer (Python code), which safe mode refuses to run",
            "The file is intact. If you trust where it came from, load it with safe_mode=False "
            "(command line: --unsafe).",
        )
    try:
        old = legacy.load_with_tf_keras(path)
    except legacy.LegacyModelError as error:
        raise ModelFileError(path, f"it is {what}. {error.reason}", error.advice) from error
    except Exception as error:  # noqa: BLE001 - every cause is reported, chained
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelFileError(
            path,
            f"it is {what}, which Keras 3 cannot read, and tf_keras fails on it too "
            f"({type(error).__name__}: {first[:300]})",
            "If the model has custom layers, load it in the script that defines them with "
            "tf_keras.models.load_model(path, custom_objects=...) and pass that model to "
            "tfcompress.legacy.rebuild(model, custom_objects=...). " + _RESAVE,
        ) from error
    try:
        model = legacy.rebuild(old, custom_objects=custom_objects, safe_mode=safe_mode)
    except legacy.LegacyModelError as error:
        raise ModelFileError(
            path, f"it is {what}, intact, but {error.reason}", error.advice
        ) from error
    training_config = _training_config(path) if compile else None
    compiled = training_config is not None and legacy.compile_as_saved(model, training_config)
    warnings.warn(
        f"'{path}' is {what}, which Keras 3 cannot read: tfcompress loaded it with tf_keras and "
        f"rebuilt it as the Keras 3 model '{model.name}' with the same weights (its outputs were "
        "checked against tf_keras's). "
        + (
            "It is compiled with the file's loss, metrics and optimizer settings (not its "
            "optimizer state)."
            if compiled
            else "It is not compiled: compile it before fit."
        ),
        stacklevel=3,
    )
    return model


def _training_config(path: Path) -> dict[str, Any] | None:
    """The loss, metrics and optimizer a Keras 2 `.h5` file was compiled with (None: none)."""
    if path.is_dir():
        return None
    import h5py

    with h5py.File(path, "r") as file:
        text = file.attrs.get("training_config")
    if text is None:
        return None
    try:
        return json.loads(text.decode() if isinstance(text, bytes) else text)
    except ValueError:
        return None


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
