"""Packed INT4 weights: smaller file, same integers, same LiteRT outputs; clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.converter import run_tflite
from tfcompress.data import load_digits
from tfcompress.models import build_digits_cnn
from tfcompress.tflite.errors import ConversionError
from tfcompress.tflite.int4 import byte_breakdown, pack_int4, pack_nibbles

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("int4-files")


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    split = load_digits()
    return split.x_train[:64], split.x_test[:32]


@pytest.fixture(scope="session")
def files(digits: tuple[np.ndarray, np.ndarray]) -> tuple[bytes, bytes]:
    """The int8-levels file and the INT4 file of one 4-bit QAT model."""
    x_calib, _ = digits
    qat = tfc.quantize_model(build_digits_cnn(width=8), weight_bits=4)
    levels = tfc.convert(qat, "int8", x_calib)
    packed = tfc.convert(qat, "int8", x_calib, int4_weights=True)
    return levels, packed


def test_int4_file_is_smaller_and_stores_int4_filters(files: tuple[bytes, bytes]) -> None:
    levels, packed = files
    assert len(packed) < len(levels)
    report = tfc.inspect(packed)
    filters = [t for t in report.tensors if t.dtype == "INT4"]
    assert len(filters) == 5  # three Conv2D and two Dense kernels
    assert not [t for t in tfc.inspect(levels).tensors if t.dtype == "INT4"]
    for tensor in filters:  # the unpacked values are the 4-bit levels of the int8 file
        assert tensor.nbytes == (int(np.prod(tensor.shape)) + 1) // 2


def test_int4_outputs_match_int8_levels_file_on_litert(
    files: tuple[bytes, bytes], digits: tuple[np.ndarray, np.ndarray]
) -> None:
    levels, packed = files
    _, x_test = digits
    # the builtin kernels compute the same integers from INT4 and from int8 filters
    exact_levels = run_tflite(levels, x_test, builtin_only=True)
    exact_packed = run_tflite(packed, x_test, builtin_only=True)
    np.testing.assert_array_equal(exact_packed, exact_levels)
    # XNNPACK (the default interpreter) rounds its requantization differently: a step or two
    report = tfc.inspect(packed)
    step = report.tensors[report.outputs[0]].quantization.scale[0]
    default = run_tflite(packed, x_test)
    assert np.max(np.abs(default - exact_levels)) <= 2 * step * 1.01


def test_int4_file_stores_equal_zero_point_vectors_once(files: tuple[bytes, bytes]) -> None:
    import flatbuffers

    from tfcompress.core import compat

    levels, packed = files
    before, after = byte_breakdown(levels), byte_breakdown(packed)
    assert sum(before.values()) == len(levels) and sum(after.values()) == len(packed)
    # the filters take half the bytes; the per-channel zero points (int64 zeros) are shared, as
    # in every file convert writes, against one copy per tensor in the converter's own layout
    assert after["data INT4"] == sum(
        (int(np.prod(t.shape)) + 1) // 2 for t in tfc.inspect(packed).tensors if t.dtype == "INT4"
    )
    own = flatbuffers.Builder(0)
    own.Finish(
        compat.tflite_schema().ModelT.InitFromPackedBuf(levels, 0).Pack(own),
        file_identifier=b"TFL3",
    )
    unshared = byte_breakdown(bytes(own.Output()))["quantization zero points"]
    assert after["quantization zero points"] == before["quantization zero points"] < unshared / 2
    # nothing the runtime reads is dropped: every tensor keeps as many zero points as scales
    for tensor in tfc.inspect(packed).tensors:
        quantization = tensor.quantization
        if quantization is not None:
            assert len(quantization.zero_point) == len(quantization.scale)


def test_int4_refused_for_edgetpu_naming_int8_levels(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    with pytest.raises(ConversionError, match="edgetpu.*int8 levels"):
        tfc.convert(build_digits_cnn(width=4), "edgetpu", digits[0], int4_weights=True)
    with pytest.raises(ConversionError, match="needs mode='int8'"):
        tfc.convert(build_digits_cnn(width=4), "float16", int4_weights=True)


def test_int4_on_8_bit_model_says_train_with_weight_bits_4(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    flat = tfc.convert(build_digits_cnn(width=4), "int8", digits[0])
    result = pack_int4(flat)
    assert result.packed == [] and result.flatbuffer == flat
    assert all("more than 4 bits" in why for why in result.kept.values())
    with pytest.raises(ConversionError, match="weight_bits=4"):
        pack_int4(flat, require=True)


def test_pack_nibbles_round_trips_through_inspect_unpacking() -> None:
    from tfcompress.tflite.flatbuffer import _unpack_int4

    values = np.arange(-8, 8, dtype=np.int8)
    np.testing.assert_array_equal(_unpack_int4(pack_nibbles(values).tobytes()), values)
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        pack_nibbles(np.array([9], dtype=np.int8))
