"""`compress` end to end on digits: prune + QAT + int8, the report's figures, the CLI, the folder."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import yaml

import tfcompress as tfc
from tests.recipe.conftest import RECIPE
from tfcompress.cli import main
from tfcompress.recipe import compress, load_recipe
from tfcompress.tflite.isolation import IsolatedCrash

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("recipe-compress")


def test_compress_writes_file_reports_and_recipe(compressed):
    result, out, lines = compressed
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".png")) == [
        "model.tflite",
        "recipe.yaml",
        "report.html",
        "report.md",
    ]
    assert [p.name for p in out.parent.iterdir()] == ["out"]  # no staging folder left behind
    assert any(line.startswith("[1/3] prune") for line in lines)  # progress was shown
    used = load_recipe(out / "recipe.yaml")
    assert used.to_dict() == load_recipe(RECIPE).to_dict()
    assert yaml.safe_load((out / "recipe.yaml").read_text())["steps"][0]["prune"]["frequency"] == 10


def test_report_accuracy_is_the_files_accuracy_on_litert(compressed, digits):
    result, out, _ = compressed
    measured = tfc.evaluate_tflite(out / "model.tflite", digits.x_test, digits.y_test)
    assert result.tflite_accuracy == pytest.approx(measured)
    assert measured > 0.7  # a trained CNN, pruned to 50% and quantized, still far above chance
    assert (
        f"| model.tflite accuracy on LiteRT | {measured:.4f} |" in (out / "report.md").read_text()
    )
    assert f"{measured:.4f}" in (out / "report.html").read_text()
    # the file is checked against the compressed Keras model on held-out rows, and says so
    fidelity = result.fidelity
    assert fidelity.held_out and fidelity.rows == min(200, result.holdout_samples)
    assert fidelity.passed, fidelity.summary()
    assert "| model.tflite matches the compressed Keras model |" in (out / "report.md").read_text()


def test_file_is_full_integer_and_keeps_the_pruned_zeros(compressed):
    result, out, _ = compressed
    report = tfc.inspect(out / "model.tflite")
    assert report.float_ops == [] and report.input_dtypes == ["INT8"]
    kernels = [t for t in report.tensors if t.is_constant and len(t.shape) >= 2]
    zeros = sum(int(np.sum(t.buffer == 0)) for t in kernels)
    assert zeros / sum(t.buffer.size for t in kernels) == pytest.approx(0.5, abs=0.05)
    assert max(result.layer_sparsity.values()) > 0.3
    # int8 keeps a dynamic batch, which the Edge TPU compiler refuses: the map says so per op
    assert len(result.edgetpu["ops"]) == len(report.ops)
    assert any("batch 1" in op["reason"] for op in result.edgetpu["ops"])


def test_non_empty_output_is_refused_then_replaced_with_overwrite(compressed, digits, tmp_path):
    _, out, _ = compressed
    with pytest.raises(FileExistsError, match="--overwrite"):
        compress(digits, "digits", RECIPE, out, log=None)  # refused before the model is read
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    model_path = tmp_path / "model.keras"
    tfc.models.build_digits_cnn(width=4).save(model_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps:\n  - convert: {mode: float16}\n")
    data = tmp_path / "train.npz"  # x and y only: the recipe's holdout share is measured on
    np.savez(data, x=digits.x_train, y=digits.y_train)
    argv = [str(model_path), "--data", str(data), "--recipe", str(recipe), "-o", str(target)]
    assert main(["compress", *argv, "--in-process"]) == 2
    assert (target / "old.txt").exists()
    assert main(["compress", *argv, "--overwrite", "--in-process"]) == 0
    assert not (target / "old.txt").exists()
    assert tfc.inspect(target / "model.tflite").op_counts  # a real float16 file
    report_md = (target / "report.md").read_text()
    assert "float16" in report_md
    assert f"| held-out samples | {round(len(digits.y_train) * 0.2)} |" in report_md


_CRASHING_LAYER = """
import os
import signal

import keras


@keras.saving.register_keras_serializable("crash_test")
class CrashWhenTrained(keras.layers.Layer):
    def call(self, x, training=False):
        if training:  # a native crash inside a training step, as TensorFlow's kernels can have
            os.kill(os.getpid(), signal.SIGSEGV)
        return x
"""


def test_a_crash_in_a_training_step_is_an_error_naming_the_step_and_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "crashing_layers.py").write_text(_CRASHING_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import crashing_layers

    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Flatten()(crashing_layers.CrashWhenTrained()(inputs))
    model_path = tmp_path / "model.keras"
    keras.Model(inputs, keras.layers.Dense(10)(hidden)).save(model_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps:\n  - prune: {epochs: 1}\n  - convert: {mode: float16}\n")
    out = tmp_path / "out"
    argv = [str(model_path), "--data", "digits", "--recipe", str(recipe), "-o", str(out)]
    assert main(["compress", *argv, "--custom-objects", "crashing_layers"]) == 2  # we live on
    error = capsys.readouterr().err
    assert "tfcompress compress: error: the recipe's process died" in error
    assert "(SIGSEGV) during '[1/2] prune" in error and "TF_ENABLE_ONEDNN_OPTS=0" in error
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name == "out"] == []


def test_a_crash_from_python_is_an_isolated_crash_naming_the_step_and_this_process_lives(
    tmp_path, monkeypatch
):
    (tmp_path / "crashing_layers_py.py").write_text(_CRASHING_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import crashing_layers_py

    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Flatten()(crashing_layers_py.CrashWhenTrained()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(hidden))
    recipe = {"steps": [{"prune": {"epochs": 1}}, {"convert": {"mode": "float16"}}]}
    out = tmp_path / "out"
    lines: list[str] = []
    with pytest.raises(IsolatedCrash, match=r"\(SIGSEGV\) during '\[1/2\] prune") as caught:
        compress(model, "digits", recipe, out, log=lines.append)
    assert "nothing was written" in str(caught.value) and "isolate=False" in str(caught.value)
    assert lines[0].startswith("input model") and lines[-1].startswith("[1/2] prune")
    assert not out.exists()
    assert np.isfinite(model.predict(np.ones((1, 8, 8, 1)), verbose=0)).all()  # we live on


def test_the_recipe_process_writes_the_bytes_this_process_writes(trained_digits_cnn, tmp_path):
    recipe = {"steps": [{"convert": {"mode": "float16"}}]}
    isolated = compress(trained_digits_cnn, "digits", recipe, tmp_path / "a", log=None)
    here = compress(trained_digits_cnn, "digits", recipe, tmp_path / "b", log=None, isolate=False)
    assert isolated.tflite_path.read_bytes() == here.tflite_path.read_bytes()
    assert isolated.scores == here.scores


def test_a_model_whose_layer_no_module_defines_runs_here_and_the_user_is_told(tmp_path):
    class LocalDouble(keras.layers.Layer):  # defined in a function: no other process imports it
        def call(self, x):
            return 2.0 * x

    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Flatten()(LocalDouble()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(hidden), name="local")
    recipe = {"steps": [{"convert": {"mode": "float16"}}]}
    warning = r"runs the recipe in this process: model 'local'.*LocalDouble is defined .*function"
    with pytest.warns(UserWarning, match=warning):
        result = compress(model, "digits", recipe, tmp_path / "out", log=None)
    assert result.tflite_path.stat().st_size > 0


def test_cli_reports_a_bad_recipe_with_its_line_before_loading(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps:\n  - prune: {final_sparsity: lots}\n")
    argv = ["compress", "missing.keras", "--data", "digits", "--recipe", str(recipe), "-o", "x"]
    assert main(argv) == 2
    assert f"{recipe} line 2:" in capsys.readouterr().err


def test_cluster_after_distill_keeps_at_most_k_values_per_kernel(
    digits, trained_digits_cnn, tmp_path
):
    recipe = {
        "steps": [
            {"distill": {"epochs": 1}},
            {"cluster": {"number_of_clusters": 8, "epochs": 1}},
            {"qat": {"epochs": 1}},
        ],
        "training": {"batch_size": 128},
    }
    result = compress(trained_digits_cnn, "digits", recipe, tmp_path / "out", log=None)
    report = tfc.inspect(result.tflite_path)
    kernels = [t for t in report.tensors if t.is_constant and len(t.shape) >= 2]
    assert kernels and all(len(np.unique(t.buffer)) <= 8 for t in kernels)
    assert [step.name for step in result.steps] == ["distill", "cluster", "qat"]
    assert result.tflite_accuracy > 0.5


def test_failed_run_leaves_no_output_folder(trained_digits_cnn, tmp_path, capsys):
    wrong = {"x": np.zeros((40, 4, 4, 1), "float32"), "y": np.zeros(40, "int64")}  # not 8x8x1
    with pytest.raises(ValueError):
        compress(trained_digits_cnn, wrong, {"steps": ["qat"]}, tmp_path / "out", log=None)
    assert list(tmp_path.iterdir()) == []
