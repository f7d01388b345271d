"""`validate`: bad bytes are refused every time; bytes already read are not parsed again."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.tflite import flatbuffer
from tfcompress.tflite.errors import TFLiteFileError
from tfcompress.tflite.runtime import run_tflite


@pytest.fixture(scope="module")
def small_file() -> bytes:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    return bytes(tfc.convert(model, "int8", np.random.default_rng(0).random((32, 4), "float32")))


def test_bytes_read_before_are_not_parsed_again(small_file, monkeypatch, tmp_path):
    flatbuffer.read_model(small_file)

    def parse(*args, **kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr(flatbuffer, "read_model", parse)
    flatbuffer.validate(small_file)
    tfc.save_tflite(small_file, tmp_path / "model.tflite")  # validates through the same cache
    assert run_tflite(small_file, np.zeros((1, 4), "float32")).shape == (1, 3)


def test_damaged_bytes_are_refused_though_the_intact_file_was_read(small_file):
    flatbuffer.read_model(small_file)
    damaged = small_file[: len(small_file) // 2]
    for _ in range(2):  # refused every time: only bytes that parsed are remembered
        with pytest.raises(TFLiteFileError, match="truncated or corrupted"):
            flatbuffer.validate(damaged, "the damaged file")
    with pytest.raises(TFLiteFileError, match="truncated or corrupted"):
        run_tflite(damaged, np.zeros((1, 4), "float32"))
