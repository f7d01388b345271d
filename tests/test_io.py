"""Damaged model files give a clear `ModelFileError` naming the file, never a crash.

The damaged copies come from tests/harness/files.py (benchmarks/files_bench.py also counts them in
a child process, where a crash would show). Here each is loaded in this process: pytest's faulthandler
would print the stack of a segfault or abort and the run would fail visibly.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.harness import files as fb
from tfcompress.io import ModelFileError, check_keras_archive, load_model, load_weights
from tfcompress.models import build_digits_cnn


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("damaged")
    fb.write_corpus(folder, flips=4, cuts=3)
    return folder


def _files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.iterdir() if p.suffix in (".keras", ".h5"))


def test_every_damaged_file_raises_model_file_error_naming_it(corpus: Path):
    rows = fb.try_loads(corpus)
    assert len(rows) == len(_files(corpus)) >= 25
    unclear = [row for row in rows if row["outcome"] != "clear_error"]
    assert unclear == []


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated_2_of_4.keras", "truncated"),
        ("not_a_zip.keras", "not a .keras zip archive"),
        ("config_not_json.keras", "'config.json' inside it is not valid JSON"),
        ("config_unknown_class.keras", "'NoSuchWrapper' named in its config"),
        ("config_wrong_units.keras", "the weights do not fit"),
        ("no_weights.keras", "lacks model.weights.h5"),
        ("h5_named_keras.keras", "HDF5 (.h5) file with a .keras name"),
        ("h5_truncated_2_of_4.h5", "truncated or damaged"),
    ],
)
def test_damaged_file_error_says_what_is_wrong(corpus: Path, name: str, reason: str):
    with pytest.raises(ModelFileError, match="Cannot load") as info:
        load_model(corpus / name)
    assert reason in str(info.value)
    assert info.value.path == str(corpus / name)
    assert isinstance(info.value, ValueError)


def test_flipped_bytes_in_a_keras_archive_fail_the_checksum_before_keras_reads_it(corpus: Path):
    for path in corpus.glob("flipped_seed*.keras"):
        with pytest.raises(ModelFileError, match="fails its checksum|damaged|not valid"):
            check_keras_archive(path)


def test_weights_of_a_different_model_name_the_file_and_the_fix(corpus: Path):
    qat = fb._digits_qat()
    with pytest.raises(ModelFileError, match="different model") as info:
        load_weights(qat, corpus / "other_model.weights.h5")
    assert "other_model.weights.h5" in str(info.value) and "digits_cnn_qat" in str(info.value)


def test_load_weights_of_the_same_model_restores_it(tmp_path: Path):
    keras.utils.set_random_seed(1)
    saved = tfc.prune_low_magnitude(build_digits_cnn(width=4))
    saved.save_weights(tmp_path / "m.weights.h5")
    keras.utils.set_random_seed(2)
    restored = tfc.prune_low_magnitude(build_digits_cnn(width=4))
    load_weights(restored, tmp_path / "m.weights.h5")
    for a, b in zip(saved.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p / "missing.keras", "no such file"),
        (lambda p: p, "it is a directory"),
        (lambda p: (p / "m.onnx").write_bytes(b"x") and p / "m.onnx", "unknown suffix"),
    ],
)
def test_wrong_paths_say_what_to_give(tmp_path: Path, make, reason: str):
    with pytest.raises(ModelFileError, match=reason):
        load_model(make(tmp_path))


def test_registering_modules_are_found_from_the_sources():
    from tfcompress import _lazy_registry

    names = _lazy_registry.registering_modules()
    for expected in (
        "tfcompress.pruning.wrapper",
        "tfcompress.quantization.wrapper",
        "tfcompress.distillation.distiller",
        "tfcompress.sharing.clustering",
    ):
        assert expected in names
    _lazy_registry.register_serializables()
    assert "tfcompress>Distiller" in keras.saving.get_custom_objects()


def test_installing_the_lazy_registry_imports_neither_keras_nor_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys; from tfcompress import _lazy_registry as r; r.install(); "
        "print(sorted({'keras', 'tensorflow'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("keras_first", [False, True], ids=["tfcompress-first", "keras-first"])
def test_plain_keras_finds_every_tfcompress_class_after_import_tfcompress(keras_first):
    import subprocess
    import sys

    imports = (
        "import keras; import tfcompress" if keras_first else "import tfcompress; import keras"
    )
    code = (
        f"{imports}; from tfcompress import _lazy_registry as r; import sys; "
        "objects = keras.saving.get_custom_objects(); "
        "missing = sorted(set(r.serializable_classes()) - set(objects)); "
        "print(missing, 'tfcompress.pruning.wrapper' in sys.modules, "
        "'tfcompress>NoSuchClass' in objects)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # every class is known, none of their modules was imported for it, and nothing else is
    assert out.stdout.strip().splitlines()[-1] == "[] False False"


def test_lambda_file_is_called_intact_and_the_way_to_load_it_is_named(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ModelFileError, match=r"Lambda layer.*intact.*safe_mode=False.*--unsafe"):
        load_model(path)
    assert load_model(path, safe_mode=False).predict(np.ones((1, 4)), verbose=0)[0, 0] == 2.0


@pytest.mark.parametrize("technique", ["quantize_model", "prune_low_magnitude", "cluster_weights"])
def test_compression_functions_take_a_model_file_as_convert_does(technique, tmp_path):
    import tfcompress as tfc
    from tfcompress.models import build_digits_cnn

    path = tmp_path / "model.keras"
    build_digits_cnn(width=4).save(path)
    wrapped = getattr(tfc, technique)(str(path))
    assert isinstance(wrapped, keras.Model) and len(wrapped.layers) >= 8
    with pytest.raises(FileNotFoundError, match=f"{technique}: no model file"):
        getattr(tfc, technique)(str(tmp_path / "missing.keras"))


# -- Keras 2 / TF 2.x files (the legacy extra: tf_keras) ----------------------------------------

KERAS2 = Path(__file__).resolve().parent / "fixtures" / "keras_files"


@pytest.fixture(scope="module")
def keras2_expected() -> dict[str, np.ndarray]:
    with np.load(KERAS2 / "keras2_predictions.npz") as saved:
        return {"x": saved["x"], "y": saved["y"]}


@pytest.fixture(scope="module")
def keras2_loaded() -> dict[str, keras.Model]:
    loaded = {}
    for name in ("keras2_mobilenet.h5", "keras2_mobilenet_savedmodel"):
        with pytest.warns(UserWarning, match="rebuilt it as the Keras 3 model 'mobilenet_tiny'"):
            loaded[name] = load_model(KERAS2 / name)
    return loaded


@pytest.mark.parametrize("name", ["keras2_mobilenet.h5", "keras2_mobilenet_savedmodel"])
def test_a_keras2_file_keras3_refuses_loads_as_a_keras3_model_with_its_outputs(
    name, keras2_loaded, keras2_expected
):
    model = keras2_loaded[name]
    assert isinstance(model, keras.Model)
    assert [type(layer).__name__ for layer in model.layers].count("DepthwiseConv2D") == 2
    got = keras.ops.convert_to_numpy(model(keras2_expected["x"], training=False))
    np.testing.assert_allclose(got, keras2_expected["y"], rtol=1e-5, atol=1e-6)


def test_a_keras2_h5_file_compiled_with_builtins_comes_back_compiled(keras2_files):
    with pytest.warns(UserWarning, match="compiled with the file's loss, metrics"):
        model = load_model(keras2_files / "compiled.h5")
    config = model.get_compile_config()
    assert config["loss"] == "mse" and "mae" in str(config["metrics"])
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)  # SGD's default: 0.01


def test_every_tool_works_on_a_rebuilt_keras2_model(keras2_loaded, keras2_expected):
    model = keras2_loaded["keras2_mobilenet.h5"]
    x = keras2_expected["x"]
    int8 = tfc.convert(model, "int8", x)
    report = tfc.inspect(int8)
    assert report.input_dtypes == ["INT8"] and "DEPTHWISE_CONV_2D" in report.op_counts
    # the int8 file picks the class tf_keras's model picks on most samples
    agreement = tfc.evaluate_tflite(int8, x, keras2_expected["y"].argmax(-1))
    assert agreement >= 0.75
    qat = tfc.quantize_model(model)
    scores = keras.ops.convert_to_numpy(qat(x, training=False))
    assert scores.shape == keras2_expected["y"].shape
    assert np.abs(scores - keras2_expected["y"]).max() < 0.1  # fake-quantized, same model


def test_a_keras2_file_without_tf_keras_names_the_extra(monkeypatch):
    from tfcompress import legacy

    monkeypatch.setattr(legacy, "has_tf_keras", lambda: False)
    with pytest.raises(ModelFileError, match=r"Keras 2\.\d.*tfcompress\[legacy\]") as info:
        load_model(KERAS2 / "keras2_mobilenet.h5")
    assert "damaged" not in str(info.value)


@pytest.fixture(scope="module")
def keras2_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keras 2 .h5 files Keras 3 refuses: a TensorFlow call in the graph, a Lambda, a cut copy."""
    import tensorflow as tf
    import tf_keras

    folder = tmp_path_factory.mktemp("keras2")
    inputs = tf_keras.Input((4,))
    depthwise = tf_keras.layers.Reshape((1, 1, 4))(inputs)
    depthwise = tf_keras.layers.DepthwiseConv2D(1, name="dw")(depthwise)  # Keras 3 refuses it
    hidden = tf_keras.layers.Flatten()(depthwise)
    scaled = tf_keras.layers.ReLU(6.0)(hidden * 2.0 + 1.0)  # TensorFlow calls: rebuilt as layers
    tf_keras.Model(inputs, tf.math.reduce_max(scaled, axis=1)).save(folder / "tf_op.h5")
    doubled = tf_keras.layers.Lambda(lambda t: t * 2.0, name="double")(hidden)
    tf_keras.Model(inputs, doubled).save(folder / "lambda.h5")
    compiled = tf_keras.Model(inputs, depthwise)
    compiled.compile(tf_keras.optimizers.SGD(0.05), "mse", metrics=["mae"])
    compiled.save(folder / "compiled.h5")
    whole = (KERAS2 / "keras2_mobilenet.h5").read_bytes()
    (folder / "cut.h5").write_bytes(whole[: len(whole) // 2])
    return folder


def test_a_keras2_layer_keras3_cannot_rebuild_is_named_and_the_file_called_intact(keras2_files):
    with pytest.raises(ModelFileError, match=r"intact.*'tf\.math\.reduce_max'.*TFOpLambda") as info:
        load_model(keras2_files / "tf_op.h5")
    assert "damaged" not in str(info.value) and "load_weights" in str(info.value)


def test_elementwise_tensorflow_calls_of_a_keras2_model_become_keras3_layers():
    import tensorflow as tf
    import tf_keras

    from tfcompress import legacy

    inputs = tf_keras.Input((4,))
    a, b = tf_keras.layers.Dense(4)(inputs), tf_keras.layers.Dense(4)(inputs)
    hard_sigmoid = tf.nn.relu6(a + 3.0) * (1.0 / 6.0)  # as MobileNetV3 writes it
    outputs = tf.math.sigmoid((2.0 - hard_sigmoid) / 2.0 - b) * b
    rebuilt = legacy.rebuild(tf_keras.Model(inputs, outputs))  # outputs compared inside
    kinds = [type(layer).__name__ for layer in rebuilt.layers]
    assert kinds.count("Rescaling") == 4 and {"ReLU", "Subtract", "Multiply"} <= set(kinds)


def test_a_keras2_lambda_file_needs_unsafe_and_then_loads(keras2_files):
    with pytest.raises(ModelFileError, match=r"Lambda.*intact.*safe_mode=False"):
        load_model(keras2_files / "lambda.h5")
    with pytest.warns(UserWarning, match="rebuilt"):
        model = load_model(keras2_files / "lambda.h5", safe_mode=False)
    assert model.predict(np.ones((1, 4)), verbose=0).shape == (1, 4)


def test_a_cut_keras2_file_is_still_called_damaged(keras2_files):
    with pytest.raises(ModelFileError, match="truncated or damaged"):
        load_model(keras2_files / "cut.h5")


def test_a_keras3_h5_lambda_file_loads_with_safe_mode_off(tmp_path):
    inputs = keras.Input((4,))
    path = tmp_path / "lambda.h5"
    keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs)).save(path)
    with pytest.raises(ModelFileError, match=r"Lambda layer.*intact"):
        load_model(path)
    assert load_model(path, safe_mode=False).predict(np.ones((1, 4)), verbose=0)[0, 0] == 2.0


def test_a_savedmodel_without_a_keras_model_says_how_to_use_it(tmp_path):
    import tensorflow as tf

    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.__call__ = tf.function(
        lambda x: x * module.scale, input_signature=[tf.TensorSpec([None])]
    )
    tf.saved_model.save(module, str(tmp_path / "plain"))
    with pytest.raises(ModelFileError, match=r"without a Keras model.*TFSMLayer"):
        load_model(tmp_path / "plain")


def test_tf23_tensorflow_op_layers_become_keras3_layers():
    """TF 2.3 and earlier recorded `tf.nn.relu6(x + 3.0)` as TensorFlowOpLayers (a NodeDef)."""
    import tf_keras

    from tfcompress import legacy

    inputs = tf_keras.Input((4,), name="x")
    config = tf_keras.Model(inputs, tf_keras.layers.Dense(4, name="dense")(inputs)).get_config()

    def op_layer(op: str, source: str, constants: dict) -> dict:
        inputs = [f"{source}/out", *(f"{op}/y" for _ in constants)]
        node_def = {"name": op, "op": op, "input": inputs, "attr": {"T": {"type": "DT_FLOAT"}}}
        layer = {"name": op, "trainable": True, "dtype": "float32", "node_def": node_def}
        return {
            "class_name": "TensorFlowOpLayer",
            "name": op,
            "inbound_nodes": [[[source, 0, 0, {}]]],
            "config": {**layer, "constants": constants},
        }

    config["layers"] += [op_layer("AddV2", "dense", {"1": 3.0}), op_layer("Relu6", "AddV2", {})]
    config["output_layers"] = [["Relu6", 0, 0]]
    rebuilt = legacy.rebuild(tf_keras.Model.from_config(config))  # outputs compared inside
    assert [type(layer).__name__ for layer in rebuilt.layers][-2:] == ["Rescaling", "ReLU"]
