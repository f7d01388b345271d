"""The `tfcompress` command line, called in-process the way the console script calls it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfcompress.cli import main


@pytest.fixture(scope="session")
def model_file(trained_digits_cnn, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "digits.keras"
    trained_digits_cnn.save(path)
    return path


@pytest.fixture(scope="session")
def data_file(digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "test.npz"
    np.savez(path, x=digits.x_test, y=digits.y_test)
    return path


def test_convert_inspect_evaluate_bench(model_file, data_file, tmp_path, capsys):
    out = tmp_path / "digits_int8.tflite"
    assert (
        main(
            [
                "convert",
                str(model_file),
                "--mode",
                "int8",
                "--calibration",
                str(data_file),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert "0 float ops" in capsys.readouterr().out
    assert main(["inspect", str(out), "--edgetpu"]) == 0
    assert "full integer" in capsys.readouterr().out
    assert main(["inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["float_ops"] == []
    assert main(["evaluate", str(out), "--data", str(data_file)]) == 0
    accuracy = float(capsys.readouterr().out.split()[1])
    assert accuracy > 0.9
    assert main(["bench", str(out), "--runs", "5", "--warmup", "1"]) == 0
    assert "median" in capsys.readouterr().out


def test_convert_with_builtin_digits_calibration(model_file, tmp_path, capsys):
    out = tmp_path / "m.tflite"
    assert (
        main(
            [
                "convert",
                str(model_file),
                "--mode",
                "edgetpu",
                "--calibration",
                "digits",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert main(["evaluate", str(out), "--data", "digits"]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_convert_keeps_the_named_layers_16_bit_inside_the_int8_file(model_file, tmp_path, capsys):
    out = tmp_path / "mixed.tflite"
    argv = ["convert", str(model_file), "--mode", "int8", "--calibration", "digits"]
    assert main([*argv, "--int16-layers", "relu2", "-o", str(out)]) == 0
    assert "0 float ops" in capsys.readouterr().out
    assert main(["inspect", str(out), "--json"]) == 0
    dtypes = {tensor["dtype"] for tensor in json.loads(capsys.readouterr().out)["tensors"]}
    assert {"INT8", "INT16"} <= dtypes


def test_existing_output_is_an_error_without_overwrite(model_file, tmp_path, capsys):
    out = tmp_path / "m.tflite"
    out.write_bytes(b"keep me")
    assert main(["convert", str(model_file), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["convert", str(model_file), "-o", str(out), "--overwrite"]) == 0


def test_errors_are_one_clear_line_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.tflite" in err and "Traceback" not in err
    assert main(["evaluate", str(tmp_path / "none.tflite"), "--data", "digits"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_int8_without_calibration_says_what_to_pass(model_file, tmp_path, capsys):
    assert (
        main(["convert", str(model_file), "--mode", "int8", "-o", str(tmp_path / "x.tflite")]) == 2
    )
    assert "representative_data" in capsys.readouterr().err
    assert not (tmp_path / "x.tflite").exists()


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("demo", "convert", "inspect", "evaluate", "bench"):
        assert command in text


_LIGHT_RUN = """
import json, sys
from tfcompress.cli import main
status = main(sys.argv[2:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "tf_keras"})
with open(sys.argv[1], "w") as stream:
    json.dump({"status": status, "heavy": heavy}, stream)
"""


def _run_light(args: list[str], tmp_path) -> tuple[dict, str, str]:
    """Run the CLI in a fresh interpreter; what it printed and which heavy modules it loaded."""
    import subprocess
    import sys

    record = tmp_path / "record.json"
    done = subprocess.run(
        [sys.executable, "-c", _LIGHT_RUN, str(record), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(record.read_text()), done.stdout, done.stderr


@pytest.fixture(scope="session")
def float_file(trained_digits_cnn, tmp_path_factory):
    import tfcompress as tfc

    path = tmp_path_factory.mktemp("light") / "digits.tflite"
    tfc.save_tflite(tfc.convert(trained_digits_cnn, "float32"), path)
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["inspect", "{file}", "--edgetpu"],
        ["evaluate", "{file}", "--data", "{data}"],
        ["bench", "{file}", "--runs", "3", "--warmup", "1"],
    ],
)
def test_light_commands_load_neither_tensorflow_nor_keras(command, float_file, data_file, tmp_path):
    args = [a.format(file=float_file, data=data_file) for a in command]
    record, out, err = _run_light(args, tmp_path)
    assert record == {"status": 0, "heavy": []}
    assert out.strip() and ("FULLY_CONNECTED" in out or "accuracy" in out or "median" in out)
    # TensorFlow's and LiteRT's native log lines ("I0000 ...", "INFO: Created ... delegate")
    assert not any(line[:1] in "IWE" and line[1:5].isdigit() for line in err.splitlines()), err
    assert "INFO:" not in err and "tensorflow" not in err.lower(), err


def test_evaluate_multi_output_file_needs_output(digits, data_file, tmp_path, capsys):
    import keras

    import tfcompress as tfc

    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(10)(flat), keras.layers.Dense(3)(flat)])
    path = tfc.save_tflite(tfc.convert(model), tmp_path / "two.tflite")
    assert main(["evaluate", str(path), "--data", str(data_file)]) == 2
    err = capsys.readouterr().err
    assert "2 outputs" in err and "--output" in err and "Traceback" not in err
    assert main(["evaluate", str(path), "--data", str(data_file), "--output", "0"]) == 0
    score = float(capsys.readouterr().out.split()[1])
    logits = model.predict(digits.x_test, verbose=0)[0]
    assert score == pytest.approx(np.mean(logits.argmax(-1) == digits.y_test), abs=1e-4)


def test_evaluate_scores_a_regression_file_with_mae_by_default(digits, tmp_path, capsys):
    import keras

    import tfcompress as tfc

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs)))
    path = tfc.save_tflite(tfc.convert(model), tmp_path / "regression.tflite")
    targets = model.predict(digits.x_test, verbose=0)[:, 0] + 0.25
    data = tmp_path / "targets.npz"
    np.savez(data, x=digits.x_test, y=targets)
    assert main(["evaluate", str(path), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mae: 0.2500") and "LiteRT XNNPACK" in out
