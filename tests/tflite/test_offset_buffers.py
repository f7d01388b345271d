"""Files that keep their weights after the flatbuffer, by offset, survive every byte rewrite."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.core import compat
from tfcompress.tflite.flatbuffer import pack, read_model, share_vectors
from tfcompress.tflite.requantize import fold_float_requantize
from tfcompress.tflite.runtime import run_tflite


def _with_offset_buffers(flatbuffer: bytes) -> bytes:
    """The same model with every weight buffer stored after the flatbuffer, by offset."""
    schema = compat.tflite_schema()
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    moved = [(b, bytes(np.asarray(b.data, np.uint8))) for b in model.buffers if b.data is not None]
    moved = [(b, data) for b, data in moved if data]
    for buffer, data in moved:
        buffer.data, buffer.offset, buffer.size = None, 1 << 40, len(data)  # room for the field
    head = pack(model, len(flatbuffer))
    position, tail = -(-len(head) // 16) * 16, b""
    for buffer, data in moved:
        buffer.offset = position + len(tail)
        tail += data + b"\0" * (-len(data) % 16)
    head = pack(model, len(flatbuffer))
    assert len(head) <= position
    return head + b"\0" * (position - len(head)) + tail


@pytest.fixture(scope="module")
def files() -> tuple[bytes, bytes, np.ndarray]:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    plain = bytes(tfc.convert(model, "int8", x, check=False))
    return plain, _with_offset_buffers(plain), x


def test_a_file_with_offset_buffers_runs_as_the_plain_file(files):
    plain, offset, x = files
    assert np.array_equal(run_tflite(offset, x), run_tflite(plain, x))


@pytest.mark.parametrize("rewrite", [share_vectors, lambda f: fold_float_requantize(f)[0]])
def test_byte_rewrites_keep_the_weights_stored_by_offset(files, rewrite):
    plain, offset, x = files
    rewritten = rewrite(offset)
    read_model(rewritten)  # complete: no weight dropped, nothing past the end
    assert np.array_equal(run_tflite(rewritten, x), run_tflite(plain, x))
