"""The `tfcompress` command line, called in-process the way the console script calls it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfcompress.cli import main


@pytest.fixture(scope="module")
def model_file(trained_digits_cnn, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "digits.keras"
    trained_digits_cnn.save(path)
    return path


@pytest.fixture(scope="module")
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
