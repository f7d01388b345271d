"""`tfcompress.micro.export`: the C++ files compile with the host g++ and hold exactly the file,
and the op resolver header registers exactly the file's ops with TFLM's method names."""

from __future__ import annotations

import re
import shutil
import subprocess

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.micro import MicroError
from tfcompress.micro.firmware import ops_header, registered_ops

# TFLM's MicroMutableOpResolver method of every op the test models use, as TFLM names them
# (tensorflow/lite/micro/micro_mutable_op_resolver.h)
TFLM_METHODS = {
    "CONV_2D": "AddConv2D",
    "FULLY_CONNECTED": "AddFullyConnected",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MEAN": "AddMean",
    "RESHAPE": "AddReshape",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "SOFTMAX": "AddSoftmax",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "ADD": "AddAdd",
    "QUANTIZE": "AddQuantize",
    "DEQUANTIZE": "AddDequantize",
}

_MAIN = r"""
#include <cstdint>
#include <cstdio>
#include "digits.h"

int main(int argc, char** argv) {
  if (reinterpret_cast<std::uintptr_t>(digits) % 16 != 0) return 3;
  std::FILE* out = std::fopen(argv[1], "wb");
  if (out == nullptr) return 4;
  if (std::fwrite(digits, 1, digits_len, out) != digits_len) return 5;
  std::fclose(out);
  std::printf("%u %u %.9g %d", digits_arena_size, digits_arena_measured,
              static_cast<double>(digits_input0_scale), digits_input0_zero_point);
  for (int i = 0; i < digits_input0_rank; ++i) std::printf(" %d", digits_input0_dims[i]);
  std::printf(" %u\n", digits_output0_bytes);
  return 0;
}
"""


@pytest.fixture(scope="session")
def digits_export(digits_int8, tmp_path_factory):
    return tfc.micro.export(digits_int8, tmp_path_factory.mktemp("firmware"), name="digits")


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs the host C++ compiler g++")
def test_exported_array_compiles_and_holds_the_file_16_byte_aligned(
    digits_int8, digits_export, tmp_path
):
    (tmp_path / "main.cc").write_text(_MAIN)
    program = tmp_path / "check_model"
    folder = digits_export.source.parent
    subprocess.run(
        ["g++", "-std=c++17", "-Wall", "-Werror", f"-I{folder}", str(tmp_path / "main.cc"),
         str(digits_export.source), "-o", str(program)],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    done = subprocess.run(
        [str(program), str(tmp_path / "bytes.bin")], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, f"exit {done.returncode}: 3 means the array is not 16-byte aligned"
    assert (tmp_path / "bytes.bin").read_bytes() == digits_int8
    report = digits_export.report
    info = tfc.inspect(digits_int8)
    quantization = info.tensors[info.inputs[0]].quantization
    arena, measured, scale, zero_point, *dims, output_bytes = done.stdout.split()
    assert (int(arena), int(measured)) == (report.recommended_arena_bytes, report.arena_bytes)
    assert np.float32(scale) == np.float32(quantization.scale[0])
    assert int(zero_point) == quantization.zero_point[0]
    assert [int(d) for d in dims] == info.tensors[info.inputs[0]].shape
    assert int(output_bytes) == int(np.prod(info.tensors[info.outputs[0]].shape))


def test_ops_header_registers_exactly_the_file_ops_with_tflm_method_names(
    digits_int8, digits_export
):
    text = digits_export.ops_header.read_text()
    ops = tfc.inspect(digits_int8).all_op_counts

    assert registered_ops(text) == {op: TFLM_METHODS[op] for op in ops}
    assert f"tflite::MicroMutableOpResolver<{len(ops)}>" in text
    assert len(re.findall(r"resolver\.Add\w+\(\)", text)) == len(ops)
    assert '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"' in text


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_resolver_methods_of_a_wider_model_are_tflm_names(mode):
    inputs = keras.Input((8, 8, 2), batch_size=1)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(inputs)
    x = keras.layers.Add()([x, inputs])
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.Resizing(8, 8, interpolation="nearest")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    x = np.random.default_rng(0).random((16, 8, 8, 2), dtype=np.float32)
    flatbuffer = tfc.convert(model, mode, x if mode == "int8" else None)
    ops = tfc.inspect(flatbuffer).all_op_counts

    assert tfc.micro.check(flatbuffer).runs
    text = ops_header(tfc.inspect(flatbuffer), "m")
    assert registered_ops(text) == {op: TFLM_METHODS[op] for op in ops}
    assert f"tflite::MicroMutableOpResolver<{len(ops)}>" in text


def test_export_refuses_a_file_tflm_cannot_run_and_writes_nothing(upsampling_int8, tmp_path):
    with pytest.raises(MicroError, match=r"TILE.*'upsample'.*Resizing"):
        tfc.micro.export(upsampling_int8, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_refuses_the_report_of_another_file(digits_int8, upsampling_int8, tmp_path):
    report = tfc.micro.check(digits_int8)
    with pytest.raises(MicroError, match="another file"):
        tfc.micro.export(upsampling_int8, tmp_path, report=report)


@pytest.mark.parametrize("name", ["2model", "my-model", "int", ""])
def test_name_must_be_a_c_identifier(digits_int8, tmp_path, name):
    with pytest.raises(MicroError, match="C identifier"):
        tfc.micro.export(digits_int8, tmp_path, name=name)
