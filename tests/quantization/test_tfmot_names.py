"""Every public name of tfmot.quantization.keras exists in tfc.quantization (import-only migration)."""

import pytest

import tfcompress as tfc

# tfmot's public names (dir(tfmot.quantization.keras)) that a tfcompress user may type; the
# graph-transform internals are left out on purpose (no public role in the guides).
_TFMOT_INTERNALS = {
    "QuantizeLayoutTransform",
    "QuantizeRegistry",
    "collab_opts",
    "experimental",
    "fix_input_output_range",
    "graph_transformations",
    "remove_input_range",
}


def test_every_tfmot_quantization_name_used_by_the_guides_exists() -> None:
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    names = {n for n in dir(tfmot.quantization.keras) if not n.startswith("_")} - _TFMOT_INTERNALS
    missing = sorted(n for n in names if not hasattr(tfc.quantization, n))
    assert missing == []
    quantizers = {n for n in dir(tfmot.quantization.keras.quantizers) if not n.startswith("_")}
    assert sorted(n for n in quantizers if not hasattr(tfc.quantization.quantizers, n)) == []
    combine = {n for n in dir(tfmot.experimental.combine) if not n.startswith("_")}
    assert sorted(n for n in combine if not hasattr(tfc.experimental.combine, n)) == []
