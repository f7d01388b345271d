"""Recipes with `target: micro`: converted for TFLM, flash and arena measured there, budgets."""

from __future__ import annotations

import pytest

import tfcompress as tfc
from tfcompress.recipe import RecipeError, compress, load_recipe
from tfcompress.recipe.runner import BudgetError

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("recipe-micro")

MICRO = """\
steps:
  - convert:
      mode: int8
      target: micro
      max_flash: 200000
      max_arena: 100000
"""


def batch_of(flatbuffer: bytes) -> int:
    """The batch size of the file's first input."""
    info = tfc.inspect(flatbuffer)
    return info.tensors[info.inputs[0]].shape[0]


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory, digits, trained_digits_cnn):
    """(CompressResult, output folder) of MICRO on the trained digits CNN (no training step)."""
    out = tmp_path_factory.mktemp("micro") / "out"
    data = {"x": digits.x_train, "y": digits.y_train, "x_test": digits.x_test,
            "y_test": digits.y_test}  # fmt: skip
    return compress(trained_digits_cnn, data, MICRO, out, log=None), out


def test_micro_target_and_budgets_are_validated_and_round_trip():
    recipe = load_recipe(MICRO)
    options = recipe.convert.options
    assert (options["target"], options["max_flash"], options["max_arena"]) == (
        "micro", 200_000, 100_000
    )  # fmt: skip
    assert load_recipe(recipe.to_yaml()).to_dict() == recipe.to_dict()
    assert load_recipe({"steps": ["qat"]}).convert.options["target"] == "phone"


@pytest.mark.parametrize(
    "convert, line, words",
    [
        ("{mode: int8, max_flash: 50000}", 3, ["'max_flash' is a budget", "add 'target: micro'"]),
        ("{mode: int8, target: micro, max_arena: 0}", 3, ["'max_arena'", "bytes >= 1"]),
        ("{mode: int8, target: micro, max_flash: 1.5e4}", 3, ["'max_flash'", "bytes >= 1"]),
        ("{mode: float16, target: micro}", 3, ["target micro takes mode int8", "'float16'"]),
        ("{mode: int8, target: mcu}", 3, ["'target'", "one of phone, micro"]),
        ("{mode: int8, micro_compress: true}", 3, ["'micro_compress'", "add 'target: micro'"]),
        ("{mode: float32, target: micro, micro_compress: true}", 3, ["needs an integer file"]),
    ],
)
def test_bad_target_or_budget_names_the_line(tmp_path, convert, line, words):
    path = tmp_path / "recipe.yaml"
    path.write_text(f"steps:\n  - qat: {{}}\n  - convert: {convert}\n")
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    assert f"{path} line {line}:" in str(error.value)
    for word in words:
        assert word in str(error.value)


def test_flash_and_arena_are_measured_on_tflm_and_reported(micro_run):
    result, out = micro_run
    file = (out / "model.tflite").read_bytes()
    measured = tfc.micro.check(file)
    assert measured.runs and result.target == "micro"
    assert result.flash_bytes == measured.flash_bytes == len(file) <= 200_000
    assert result.arena_bytes == measured.arena_bytes <= 100_000
    assert batch_of(file) == 1  # static batch 1, as firmware runs it
    report = (out / "report.md").read_text()
    assert f"| flash on TFLM (model only) | {result.flash_bytes:,} bytes (budget 200,000) |" in (
        report
    )
    assert f"{result.arena_bytes:,} bytes (budget 100,000)" in report
    assert "target: micro" in (out / "recipe.yaml").read_text()
    assert result.tflite_accuracy > 0.9


def test_file_over_a_budget_fails_naming_it_and_writes_nothing(
    micro_run, trained_digits_cnn, tmp_path
):
    result, _ = micro_run
    budget = result.arena_bytes - 16
    recipe = MICRO.replace("max_arena: 100000", f"max_arena: {budget}")
    with pytest.raises(BudgetError) as error:
        compress(trained_digits_cnn, "digits", recipe, tmp_path / "out", log=None)
    message = str(error.value)
    assert f"max_arena {budget:,}" in message and "TensorFlow Lite Micro" in message
    assert "tfc.auto_quantize" in message and "max_flash" not in message.split("Nothing")[0]
    assert list(tmp_path.iterdir()) == []


def test_clustered_file_is_stored_as_tflm_look_up_tables_within_the_flash_budget(
    micro_run, trained_digits_cnn, tmp_path
):
    plain, _ = micro_run
    recipe = {
        "steps": [
            {"cluster": {"number_of_clusters": 16, "epochs": 1}},
            {"convert": {"mode": "int8", "target": "micro", "micro_compress": True,
                         "max_flash": plain.flash_bytes * 3 // 4}},
        ]
    }  # fmt: skip
    result = compress(trained_digits_cnn, "digits", recipe, tmp_path / "out", log=None)
    file = result.tflite_path.read_bytes()
    assert tfc.inspect(file).op_counts["CUSTOM:TFLM_DECODE"] > 0
    assert result.compressed_tensors == tfc.micro.check(file).compressed_tensors > 0
    assert result.flash_bytes == len(file) <= plain.flash_bytes * 3 // 4
    # scored on LiteRT with the tables decoded: the same weights, so a real accuracy
    assert result.tflite_accuracy > 0.9
    assert "| TFLM look-up tables |" in (tmp_path / "out" / "report.md").read_text()
