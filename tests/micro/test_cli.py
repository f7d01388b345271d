"""`tfcompress micro FILE -o OUT [--data DATA.npz]`: check + export, the summary, the exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from tfcompress.cli import main


def _write(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_micro_command_checks_exports_and_prints_the_summary(digits_int8, digits, tmp_path, capsys):
    model = _write(tmp_path, "digits.tflite", digits_int8)
    data = tmp_path / "test.npz"
    np.savez(data, x=digits.x_test[:50], y=digits.y_test[:50])
    out = tmp_path / "firmware"

    status = main(
        ["micro", str(model), "-o", str(out), "--data", str(data), "--name", "digits",
         "--json", str(tmp_path / "report.json")]
    )  # fmt: skip

    printed = capsys.readouterr().out
    assert status == 0
    assert "on TensorFlow Lite Micro" in printed and ": runs" in printed
    assert "bytes measured" in printed and "50 samples" in printed
    assert sorted(p.name for p in out.iterdir()) == ["digits.cc", "digits.h", "digits_ops.h"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["runs"] and report["arena_bytes"] > 0 and report["outputs"][0]["unit"] == "steps"
    assert f"digits_arena_measured = {report['arena_bytes']};" in (out / "digits.h").read_text()


def test_micro_command_on_a_file_tflm_cannot_run_exits_2_with_one_error_line(
    upsampling_int8, tmp_path, capsys
):
    model = _write(tmp_path, "up.tflite", upsampling_int8)

    status = main(["micro", str(model), "-o", str(tmp_path / "firmware")])

    captured = capsys.readouterr()
    assert status == 2
    assert "does NOT run" in captured.out and "Resizing" in captured.out
    [line] = captured.err.strip().splitlines()
    assert line.startswith("tfcompress micro: error: TFLM cannot run") and "TILE" in line
    assert not (tmp_path / "firmware").exists()


def test_micro_command_without_tflite_micro_says_how_to_install(
    digits_int8, tmp_path, capsys, monkeypatch
):
    model = _write(tmp_path, "digits.tflite", digits_int8)
    monkeypatch.setitem(sys.modules, "tflite_micro", None)

    status = main(["micro", str(model), "-o", str(tmp_path / "firmware")])

    assert status == 2
    assert "pip install 'tfcompress[micro]'" in capsys.readouterr().err


_LIGHT_RUN = """
import sys
from tfcompress.cli import main
status = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "tf_keras"})
print("STATUS", status, "HEAVY", heavy)
"""


def test_micro_command_never_loads_tensorflow(digits_int8, tmp_path):
    model = _write(tmp_path, "digits.tflite", digits_int8)

    done = subprocess.run(
        [sys.executable, "-c", _LIGHT_RUN, "micro", str(model), "-o", str(tmp_path / "fw")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert "STATUS 0 HEAVY []" in done.stdout, done.stderr
