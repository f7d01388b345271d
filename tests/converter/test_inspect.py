"""inspect(): ops with versions, dtypes, quantization and the size breakdown."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tfcompress as tfc


@pytest.fixture(scope="module")
def int8_report(trained_digits_cnn, digits):
    return tfc.inspect(tfc.convert(trained_digits_cnn, "int8", digits.x_train[:50]))


def test_size_breakdown_adds_up_to_the_file_size(int8_report):
    assert int8_report.weights_bytes > 0 and int8_report.graph_bytes > 0
    assert int8_report.weights_bytes + int8_report.graph_bytes == int8_report.size_bytes


def test_ops_have_names_versions_and_dtypes(int8_report):
    conv = [op for op in int8_report.ops if op.name == "CONV_2D"]
    assert len(conv) == 3
    assert all(op.version >= 1 for op in int8_report.ops)
    assert conv[0].input_dtypes[:2] == ["INT8", "INT8"] and conv[0].input_dtypes[2] == "INT32"


def test_conv_weights_are_per_channel_symmetric(int8_report):
    conv = next(op for op in int8_report.ops if op.name == "CONV_2D")
    weights = int8_report.tensors[conv.inputs[1]]
    assert weights.quantization.per_channel
    assert len(weights.quantization.scale) == weights.shape[0]
    assert set(weights.quantization.zero_point) == {0}
    assert weights.buffer is not None and weights.buffer.dtype == np.int8
    assert weights.buffer.min() >= -127  # narrow range


def test_float_model_lists_its_float_ops(trained_digits_cnn):
    report = tfc.inspect(tfc.convert(trained_digits_cnn, "float32"))
    assert set(report.float_ops) == {"CONV_2D", "MAX_POOL_2D", "MEAN", "FULLY_CONNECTED"}


def test_report_serializes_to_json_and_prints(int8_report, tmp_path):
    payload = json.loads(json.dumps(int8_report.to_dict()))
    assert payload["float_ops"] == [] and payload["op_counts"]["CONV_2D"] == 3
    text = int8_report.summary()
    assert "full integer" in text and "CONV_2D" in text


def test_inspect_reads_a_path_like_the_bytes(trained_digits_cnn, tmp_path):
    flatbuffer = tfc.convert(trained_digits_cnn, "float16")
    path = tfc.save_tflite(flatbuffer, tmp_path / "m.tflite")
    assert tfc.inspect(path).op_counts == tfc.inspect(flatbuffer).op_counts
