"""`tfcompress compress` trains and scores classifiers, regressors, segmenters and models with
several outputs (metric and loss per output: the recipe's task, the model's compile config, or
the labels), loads custom layers and Lambdas when told, and refuses up front what it cannot
score."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from tfcompress.cli import main
from tfcompress.recipe import compress
from tfcompress.tflite.runtime import run_tflite

CONVERT_ONLY = {"steps": [{"convert": {"mode": "float32"}}]}
DYNAMIC = {"steps": [{"convert": {"mode": "dynamic"}}]}
QAT_INT8 = {
    "steps": [{"qat": {"epochs": 1}}, {"convert": {"mode": "int8", "num_samples": 16}}],
    "training": {"batch_size": 32},
}
PRUNE = {
    "steps": [{"prune": {"epochs": 1, "frequency": 1}}, {"convert": {"mode": "float16"}}],
    "training": {"batch_size": 32},
}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (64, 8, 8, 1)).astype("float32")


def _flat_model(heads: dict[str, keras.layers.Layer] | None = None, name: str = "model"):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    if heads is None:
        return keras.Model(inputs, keras.layers.Dense(1, name="value")(flat), name=name)
    return keras.Model(inputs, {key: layer(flat) for key, layer in heads.items()}, name=name)


def _run(model, data, recipe, folder: Path):
    return compress(model, data, recipe, folder / "out", log=None)


def test_a_sequential_regression_model_is_scored_by_mean_absolute_error(images, tmp_path):
    targets = images.mean(axis=(1, 2, 3)) * 4.0
    data = {"x": images[:48], "y": targets[:48], "x_test": images[48:], "y_test": targets[48:]}
    keras.utils.set_random_seed(0)
    layers = [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1, name="value")]
    result = _run(keras.Sequential(layers, name="regressor"), data, DYNAMIC, tmp_path)
    (score,) = result.scores
    assert (score.name, score.metric) == ("value", "mae")
    predicted = run_tflite(result.tflite_path.read_bytes(), images[48:])
    assert score.tflite == pytest.approx(np.mean(np.abs(predicted[:, 0] - targets[48:])), rel=1e-5)
    assert "| model.tflite mae on LiteRT |" in (result.output_dir / "report.md").read_text()


def test_a_segmenter_is_scored_pixel_by_pixel(images, tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    scores = keras.layers.Conv2D(3, 3, padding="same", name="mask")(inputs)
    masks = np.digitize(images[..., 0], [0.33, 0.66])  # a class per pixel
    result = _run(keras.Model(inputs, scores), (images, masks), CONVERT_ONLY, tmp_path)
    (score,) = result.scores
    assert score.metric == "accuracy"
    held_out = images[np.random.default_rng(0).permutation(64)[:13]]  # holdout 0.2, seed 0
    labels = masks[np.random.default_rng(0).permutation(64)[:13]]
    pixels = run_tflite(result.tflite_path.read_bytes(), held_out).argmax(-1)
    assert score.tflite == pytest.approx(np.mean(pixels == labels))
    assert score.float_keras == pytest.approx(score.tflite, abs=1e-6)


def test_every_output_of_a_multi_output_model_is_trained_and_scored(images, tmp_path):
    heads = {"digit": keras.layers.Dense(4, name="digit"), "size": keras.layers.Dense(1)}
    classes = np.random.default_rng(1).integers(0, 4, len(images))
    path = tmp_path / "data.npz"
    np.savez(path, x=images, y_digit=classes, y_size=images.sum(axis=(1, 2, 3)))
    result = _run(_flat_model(heads, "two_heads"), path, PRUNE, tmp_path)
    assert [(s.name, s.metric) for s in result.scores] == [("digit", "accuracy"), ("size", "mae")]
    assert set(result.steps[0].keras_scores) == {"digit", "size"}
    report = (result.output_dir / "report.md").read_text()
    for score in result.scores:
        assert f"| {score.name} | " in report and f"{score.tflite:.4f}" in report
    assert "| size | mae (lower is better) |" in report


def test_metrics_come_from_the_recipe_task_then_the_compile_config_then_the_labels(
    images, tmp_path
):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    names = ("kind", "box", "area")
    outputs = [
        keras.layers.Dense(units, name=n)(flat) for n, units in zip(names, (3, 2, 1), strict=True)
    ]
    model = keras.Model(inputs, outputs)
    model.compile(
        "adam",
        loss=["sparse_categorical_crossentropy", "mse", "mse"],
        metrics=[[], ["mse"], ["mse"]],
    )
    boxes = np.stack([images.mean(axis=(1, 2, 3)), images.std(axis=(1, 2, 3))], axis=1)
    data = {"x": images, "y": [np.arange(64) % 3, boxes, images.max(axis=(1, 2, 3))]}
    recipe = {**CONVERT_ONLY, "task": {"metric": {"area": "mae"}}}
    result = _run(model, data, recipe, tmp_path)
    assert [(s.name, s.metric) for s in result.scores] == list(
        zip(names, ("accuracy", "mse", "mae"), strict=True)
    )
    assert "metric:\n    area: mae" in (result.output_dir / "recipe.yaml").read_text()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("labels_missing", r"output\(s\) 'size' have no labels.*y_NAME"),
        ("one_array_for_two_outputs", r"2 outputs \(digit, size\) and the data one label array"),
        ("labels_do_not_fit", r"output 'value' gives shape \(None, 1\).*shape \(None, 3\)"),
        ("accuracy_of_real_values", r"scored by accuracy.*not class ids"),
        ("distill_a_regressor", r"distill step.*value: mae"),
        ("two_inputs", r"it has 2 inputs"),
        ("task_names_no_output", r"task metric names the output\(s\) 'sizee'.*outputs are value"),
    ],
)
def test_what_cannot_be_scored_is_refused_before_any_training(images, tmp_path, case, message):
    two_heads = _flat_model({"digit": keras.layers.Dense(4), "size": keras.layers.Dense(1)})
    recipe, model = QAT_INT8, _flat_model()
    data = {"x": images, "y": images.mean(axis=(1, 2, 3))}
    if case == "labels_missing":
        model, data = two_heads, {"x": images, "y_digit": np.zeros(64, "int64")}
    elif case == "one_array_for_two_outputs":
        model = two_heads
    elif case == "labels_do_not_fit":
        data = {"x": images, "y": np.zeros((64, 3), "float32")}
    elif case == "accuracy_of_real_values":
        recipe = {**QAT_INT8, "task": {"metric": "accuracy"}}
    elif case == "distill_a_regressor":
        recipe = {"steps": [{"distill": {"epochs": 1}}]}
    elif case == "task_names_no_output":
        recipe = {**QAT_INT8, "task": {"metric": {"sizee": "mae"}}}
    elif case == "two_inputs":
        a, b = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
        model = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Flatten()(a + b)))
    with pytest.raises(ValueError, match=message):
        _run(model, data, recipe, tmp_path)
    assert not (tmp_path / "out").exists()


def test_the_command_loads_custom_layers_and_lambdas_when_told(tmp_path, monkeypatch):
    (tmp_path / "my_layers.py").write_text(
        "import keras\n\n"
        "@keras.saving.register_keras_serializable(package='my_layers')\n"
        "class Double(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return 2.0 * x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_layers

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t + 0.0, name="shift")(my_layers.Double()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    path = tmp_path / "custom.keras"
    model.save(path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps:\n  - convert:\n      mode: float32\n")
    out = tmp_path / "out"
    args = ["compress", str(path), "--data", "digits", "--recipe", str(recipe), "-o", str(out)]
    assert main(args) == 2  # safe mode refuses the Lambda: a clear error, exit status 2
    assert main([*args, "--unsafe", "--custom-objects", "my_layers"]) == 0
    assert (out / "model.tflite").stat().st_size > 0
    assert np.isfinite(model.predict(np.ones((1, 8, 8, 1)), verbose=0)).all()


def test_a_subclassed_model_is_compressed_as_the_graph_of_its_layers(tmp_path):
    from tests.harness.subclassed import TinyNet

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).uniform(0, 1, (64, 8, 8, 1)).astype("float32")
    labels = np.random.default_rng(1).integers(0, 10, 64)
    net = TinyNet(name="tiny")
    net(x[:1])
    net.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = {"x": x[:48], "y": labels[:48], "x_test": x[48:], "y_test": labels[48:]}
    result = _run(net, data, QAT_INT8, tmp_path)
    assert result.scores[0].metric == "accuracy"  # the loss it was compiled with says classes
    assert result.fidelity is not None and result.fidelity.outputs  # the file against the model
    assert run_tflite(result.tflite_path.read_bytes(), x[48:]).shape == (16, 10)
