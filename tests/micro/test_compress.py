"""`tfcompress.micro.compress`: clustered int8 files stored as TFLM look-up tables take less flash,
run on TFLM's own interpreter with the very outputs of the uncompressed file, and decode back to
the original tensors bit for bit."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.micro import MicroError
from tfcompress.micro.compress import (
    ancillary_bytes,
    lut_decode,
    lut_encode,
    pack_indices,
    prune_decode,
    prune_encode,
    unpack_indices,
    zero_values,
)
from tfcompress.micro.firmware import registered_ops
from tfcompress.micro.runner import attempt
from tfcompress.tflite.errors import TFLiteFileError

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("micro-compress")

RNG = np.random.default_rng(0)
X = RNG.random((16, 8, 8, 2), dtype=np.float32)


def _clustered(model: keras.Model, clusters: int) -> keras.Model:
    return tfc.strip_clustering(tfc.cluster_weights(model, number_of_clusters=clusters))


@pytest.fixture(scope="module")
def mixed_int8() -> bytes:
    """Conv2D (tables along axis 0), DepthwiseConv2D (along the last axis) and Dense layers,
    4 clusters each, per-channel int8."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv"),
            keras.layers.DepthwiseConv2D(5, padding="same", name="depthwise"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    return tfc.convert(_clustered(model, 4), "int8", X)


@pytest.fixture(scope="module")
def dense_int8() -> bytes:
    """A 16-cluster model whose Dense kernel holds most of the file, per-tensor int8."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 2)), keras.layers.Flatten(), keras.layers.Dense(256, name="wide")]
    )
    return tfc.convert(_clustered(model, 16), "int8", X, per_channel=False)


def _quantized_inputs(flatbuffer: bytes) -> list[np.ndarray]:
    info = tfc.inspect(flatbuffer)
    quantization = info.tensors[info.inputs[0]].quantization
    scaled = np.round(X / quantization.scale[0] + quantization.zero_point[0])
    return [np.clip(scaled, -128, 127).astype(np.int8)]


def test_compressed_file_gives_the_uncompressed_outputs_on_tflm(mixed_int8):
    small = tfc.micro.compress(mixed_int8)
    inputs = _quantized_inputs(mixed_int8)

    compressed, plain = attempt(small, 1 << 20, inputs), attempt(mixed_int8, 1 << 20, inputs)

    assert compressed.ok, compressed.message + compressed.log
    assert all(np.array_equal(a, b) for a, b in zip(compressed.outputs, plain.outputs, strict=True))
    decoded = {
        tfc.inspect(small).tensors[op.outputs[0]].name.split("/")[1].split("_")[0]
        for op in tfc.inspect(small).ops
        if op.name == "CUSTOM:TFLM_DECODE"
    }
    assert {"depthwise", "hidden"} <= decoded  # per-channel tables along the last and first axis
    assert len(small) < len(mixed_int8)


def test_sixteen_clusters_take_at_most_055_of_the_int8_flash(dense_int8):
    small = tfc.micro.compress(dense_int8)
    inputs = _quantized_inputs(dense_int8)

    assert len(small) <= 0.55 * len(dense_int8)
    compressed, plain = attempt(small, 1 << 20, inputs), attempt(dense_int8, 1 << 20, inputs)
    assert compressed.ok and np.array_equal(compressed.outputs[0], plain.outputs[0])


def test_decompress_gives_back_every_tensor_bit_for_bit(mixed_int8):
    original = tfc.inspect(mixed_int8)
    back = tfc.inspect(tfc.micro.decompress(tfc.micro.compress(mixed_int8)))

    assert back.op_counts == original.op_counts
    assert [t.name for t in back.tensors] == [t.name for t in original.tensors]
    for ours, theirs in zip(back.tensors, original.tensors, strict=True):
        assert (ours.dtype, ours.shape, ours.is_constant) == (
            theirs.dtype,
            theirs.shape,
            theirs.is_constant,
        )
        if theirs.buffer is not None:
            assert ours.buffer.tobytes() == theirs.buffer.tobytes(), theirs.name


def test_check_reports_the_tables_and_compares_with_litert_on_the_decoded_file(dense_int8):
    small = tfc.micro.compress(dense_int8)
    report = tfc.micro.check(small, X)

    assert report.runs and report.compressed_tensors == 1
    assert report.flash_bytes == len(small)
    assert report.uncompressed_flash_bytes == len(tfc.micro.decompress(small))
    assert report.outputs and report.outputs[0].max_difference <= 1
    assert "decoded by TFLM_DECODE" in report.summary()


def test_export_writes_a_compressed_file_and_registers_tflms_decode_op(dense_int8, tmp_path):
    small = tfc.micro.compress(dense_int8)
    files = tfc.micro.export(small, tmp_path, name="wide")

    assert registered_ops(files.ops_header.read_text())["CUSTOM:TFLM_DECODE"] == "AddDecode"
    assert files.report.runs and files.report.compressed_tensors == 1
    assert f"wide_len = {len(small)};" in files.source.read_text()


def test_max_decoded_bytes_leaves_larger_tensors_uncompressed(mixed_int8):
    info = tfc.inspect(tfc.micro.compress(mixed_int8, max_decoded_bytes=4096))
    decoded = [
        info.tensors[i] for op in info.ops if op.name == "CUSTOM:TFLM_DECODE" for i in op.outputs
    ]

    assert decoded and all(np.prod(t.shape) <= 4096 for t in decoded)
    assert not any("hidden" in t.name for t in decoded)  # its 256 x 32 kernel stays as it is


def test_max_bits_leaves_wider_tensors_uncompressed(mixed_int8):
    with pytest.raises(MicroError, match="more than 2 distinct values"):
        tfc.micro.compress(mixed_int8, max_bits=1)
    with pytest.raises(ValueError, match="max_bits must be an integer from 1 to 7"):
        tfc.micro.compress(mixed_int8, max_bits=8)


def test_a_float_file_is_refused_with_the_int8_conversion_to_use():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(MicroError, match=r"float model.*tfc.convert\(model, 'int8'"):
        tfc.micro.compress(tfc.convert(model, "float32"))


def test_an_unclustered_file_says_to_cluster_first(digits_int8):
    with pytest.raises(MicroError, match=r"no weight tensor.*cluster_weights"):
        tfc.micro.compress(digits_int8)


def test_a_compressed_file_is_not_compressed_twice(dense_int8):
    with pytest.raises(MicroError, match="compressed already"):
        tfc.micro.compress(tfc.micro.compress(dense_int8))


def test_a_path_that_is_no_tflite_file_is_refused(tmp_path):
    text = tmp_path / "notes.tflite"
    text.write_text("not a model")
    with pytest.raises(TFLiteFileError, match="not a TFLite flatbuffer"):
        tfc.micro.compress(text)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tfc.micro.compress(tmp_path / "missing.tflite")


@pytest.mark.parametrize("bits", range(1, 8))
def test_packed_indices_round_trip_at_every_width(bits):
    indices = RNG.integers(0, 2**bits, 37)
    packed = pack_indices(indices, bits)

    assert len(packed) == -(-37 * bits // 8)
    assert np.array_equal(unpack_indices(packed, bits, 37), indices)


@pytest.mark.parametrize("axis", [None, 0, 2])
def test_tables_decode_to_the_same_bits_along_each_channel_axis(axis):
    values = np.array([0.5, -0.0, 0.0, 2.0, np.float32(-3.25)], np.float32)
    array = RNG.choice(values, (4, 3, 5))
    lut = lut_encode(array, axis)

    assert lut is not None and lut.bits <= 3
    assert lut_decode(lut, array.shape).tobytes() == array.tobytes()  # -0.0 stays -0.0
    assert len(ancillary_bytes(lut)) == 16 + lut.tables.size * 4


def test_too_many_values_for_the_widest_index_is_no_table():
    assert lut_encode(np.arange(129, dtype=np.int16)) is None
    assert lut_encode(np.arange(128, dtype=np.int16)).bits == 7


@pytest.fixture(scope="module")
def pruned_int8() -> bytes:
    """An 80 % sparse (unclustered) Dense kernel: many distinct values, mostly zeros."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 2)), keras.layers.Flatten(), keras.layers.Dense(64, name="sparse")]
    )
    kernel, bias = model.get_weights()
    kernel[RNG.random(kernel.shape) < 0.8] = 0.0
    model.set_weights([kernel, bias])
    return tfc.convert(model, "int8", X)


def test_a_pruned_kernel_gets_the_zero_mask_and_the_same_outputs_on_tflm(pruned_int8):
    small = tfc.micro.compress(pruned_int8)
    inputs = _quantized_inputs(pruned_int8)

    compressed, plain = attempt(small, 1 << 20, inputs), attempt(pruned_int8, 1 << 20, inputs)
    assert compressed.ok, compressed.message + compressed.log
    assert np.array_equal(compressed.outputs[0], plain.outputs[0])
    assert len(small) < 0.6 * len(pruned_int8)  # 1/8 mask + 20 % of the weights
    back = tfc.inspect(tfc.micro.decompress(small))
    original = tfc.inspect(pruned_int8)
    for ours, theirs in zip(back.tensors, original.tensors, strict=True):
        if theirs.buffer is not None:
            assert ours.buffer.tobytes() == theirs.buffer.tobytes(), theirs.name


@pytest.mark.parametrize("dtype", ["int8", "float32", "int32"])
def test_zero_masks_round_trip_bit_for_bit(dtype):
    array = RNG.integers(-3, 4, (6, 5)).astype(dtype)
    if dtype == "float32":
        array[0, 0] = -0.0  # not a zero for the mask: its bits differ
    zeros = zero_values([6, 5], [0], None)
    mask, ancillary = prune_encode(array, zeros)

    assert prune_decode(mask, ancillary, zeros, array.dtype).tobytes() == array.tobytes()


def test_zero_masks_use_each_channels_zero_point():
    array = np.array([[1, 1, 4], [-2, 7, -2]], np.int8)
    zeros = zero_values([2, 3], [1, -2], 0)
    mask, ancillary = prune_encode(array, zeros)

    assert mask == bytes([0b00101000]) and ancillary[16:] == np.int8([4, 7]).tobytes()
    assert np.array_equal(prune_decode(mask, ancillary, zeros, np.dtype("i1")), array)
