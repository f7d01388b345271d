"""Per-layer 4 vs 8-bit weights: sensitivity ranking, greedy choice and the convert option."""

from __future__ import annotations

import pytest

from tests.diagnose.conftest import SENSITIVE_LAYER
from tfcompress.data import Split
from tfcompress.diagnose.bit_widths import choose_int4_layers, four_bit_sensitivity
from tfcompress.export import convert
from tfcompress.tflite.errors import ConversionError

OPTIMIZE = ["fold_bn", ("adaround", {"iterations": 0, "int4_layers": ["conv1"]})]


def test_sensitivity_ranks_every_kernel_layer_and_the_greedy_set_grows_with_the_budget(
    trained_digits_cnn, digits: Split
) -> None:
    x, y = digits.x_test[:200], digits.y_test[:200]
    rows = four_bit_sensitivity(trained_digits_cnn, x, y)
    assert sorted(r.layer for r in rows) == ["conv1", "conv2", "conv3", "fc1", "logits"]
    sqnr = [r.output_sqnr_db for r in rows]
    assert sqnr == sorted(sqnr, reverse=True) and all(0 < s < 100 for s in sqnr)
    assert {r.layer: r.params for r in rows}["conv2"] == 3 * 3 * 16 * 32
    none = choose_int4_layers(trained_digits_cnn, x, y, 0.0, sensitivity=rows)
    every = choose_int4_layers(trained_digits_cnn, x, y, 1.0, sensitivity=rows)
    assert every == [r.layer for r in rows]  # with no limit, all of them, least sensitive first
    assert set(none) < set(every)


def test_int4_layers_needs_int4_weights_and_known_kernel_layers(
    sensitive_cnn, digits: Split
) -> None:
    x = digits.x_train[:16]
    with pytest.raises(ConversionError, match="int4_layers.*int4_weights=True"):
        convert(sensitive_cnn, "int8", x, optimize=OPTIMIZE)
    unknown = ["fold_bn", ("adaround", {"iterations": 0, "int4_layers": ["bn1", "nope"]})]
    with pytest.raises(
        ConversionError, match=r"\['bn1', 'nope'\].*kernel layers.*" + SENSITIVE_LAYER
    ):
        convert(sensitive_cnn, "int8", x, optimize=unknown, int4_weights=True)
