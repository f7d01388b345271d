"""Audio front ends stay float inside an integer file by default, and the file says so."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.tflite.runtime import run_tflite

L = keras.layers
FRONT_ENDS = {
    "STFTSpectrogram": (
        (256, 1),
        lambda: L.STFTSpectrogram(frame_length=64, frame_step=32, fft_length=64, name="front"),
    ),
    "MelSpectrogram": (
        (256,),
        lambda: L.MelSpectrogram(
            fft_length=64, sequence_stride=32, sequence_length=64, num_mel_bins=16, name="front"
        ),
    ),
}


def _tones(shape: tuple[int, ...], count: int = 560) -> tuple[np.ndarray, np.ndarray]:
    """Four tones in noise: a task the front end alone separates."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, count)
    t = np.arange(256) / 256.0
    waves = np.sin(2 * np.pi * (8 + 16 * labels)[:, None] * t[None]) + 0.3 * rng.normal(
        size=(count, 256)
    )
    return waves.astype("float32").reshape(count, *shape), labels


@pytest.mark.parametrize("kind", sorted(FRONT_ENDS))
def test_a_spectrogram_front_end_is_kept_float_and_the_file_agrees(kind):
    shape, front = FRONT_ENDS[kind]
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape)
    features = L.Flatten()(front()(inputs))
    model = keras.Model(inputs, L.Dense(4)(features))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _tones(shape)
    model.fit(x[:160], y[:160], epochs=8, verbose=0)
    with pytest.warns(UserWarning, match=rf"keeps \['front'\].*\({kind}\).*keep_float=\[\]"):
        flatbuffer = tfc.convert(model, "int8", x[:128])
    held_out = x[160:]  # 400 inputs neither trained nor calibrated on
    expected = model.predict(held_out, verbose=0).argmax(-1)
    agreement = np.mean(run_tflite(flatbuffer, held_out).argmax(-1) == expected)
    # asked for, the front end is quantized with the rest: the file loses the tones
    quantized = tfc.convert(model, "int8", x[:128], keep_float=[])
    assert len(tfc.inspect(quantized).float_ops) < len(tfc.inspect(flatbuffer).float_ops)
    quantized_agreement = np.mean(run_tflite(quantized, held_out).argmax(-1) == expected)
    assert agreement >= 0.97 and agreement >= quantized_agreement + 0.15


def test_a_quantization_aware_model_keeps_its_front_end_float_too():
    shape, front = FRONT_ENDS["MelSpectrogram"]
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape)
    model = keras.Model(inputs, L.Dense(4)(L.Flatten()(front()(inputs))))
    x, y = _tones(shape, count=400)
    qat = tfc.quantize_model(model)
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x[:200], y[:200], epochs=4, verbose=0)
    with pytest.warns(UserWarning, match=r"keeps \['front'\]"):
        flatbuffer = tfc.convert(qat, "int8", x[:200], validation_data=x[200:])
    assert flatbuffer.fidelity.outputs[0].agreement >= 0.99
