"""auto_quantize with target="micro": files scored on TFLM, flash and arena measured there, budgets."""

from __future__ import annotations

import keras
import pytest

import tfcompress as tfc
from tfcompress.data import Split
from tfcompress.diagnose.auto import AutoQuantizeResult, auto_quantize

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("auto-quantize-micro")

NO_LIMIT = 10**6  # a flash budget every file fits: it turns the look-up-table candidates on


def batch_of(flatbuffer: bytes) -> int:
    """The batch size of the file's first input."""
    info = tfc.inspect(flatbuffer)
    return info.tensors[info.inputs[0]].shape[0]


@pytest.fixture(scope="session")
def clustered_cnn(trained_digits_cnn: keras.Model, digits: Split) -> keras.Model:
    """The trained digits CNN with 16 shared values per kernel: its file shrinks as TFLM LUTs."""
    keras.utils.set_random_seed(0)
    clustered = tfc.cluster_weights(trained_digits_cnn, number_of_clusters=16)
    clustered.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    clustered.fit(digits.x_train, digits.y_train, epochs=1, batch_size=64, verbose=0)
    return tfc.strip_clustering(clustered)


def search(model: keras.Model, digits: Split, **budgets) -> AutoQuantizeResult:
    return auto_quantize(
        model,
        (digits.x_test, digits.y_test),
        max_accuracy_drop=0.02,
        representative_data=digits.x_train[:100],
        recovery=False,
        target="micro",
        **budgets,
    )


@pytest.fixture(scope="session")
def unconstrained(clustered_cnn, digits: Split) -> AutoQuantizeResult:
    return search(clustered_cnn, digits, max_flash=NO_LIMIT)


@pytest.fixture(scope="session")
def arena_limited(clustered_cnn, digits: Split, unconstrained) -> AutoQuantizeResult:
    """An arena budget between the int8 file's arena and its look-up-table file's."""
    plain, lut = unconstrained.candidates
    budget = (plain.arena_bytes + lut.arena_bytes) // 2
    return search(clustered_cnn, digits, max_flash=NO_LIMIT, max_arena=budget)


def test_each_file_is_scored_on_tflm_with_flash_and_arena_measured_there(unconstrained, digits):
    assert unconstrained.runtime == "TensorFlow Lite Micro" and unconstrained.target == "micro"
    assert [c.name for c in unconstrained.candidates] == ["int8", "int8+lut"]
    for candidate in unconstrained.candidates:
        report = tfc.micro.check(candidate.flatbuffer)
        assert report.runs
        assert candidate.flash_bytes == report.flash_bytes == len(candidate.flatbuffer)
        assert candidate.arena_bytes == report.arena_bytes
        assert candidate.settings["target"] == "micro"
    # a static batch of 1, as convert(target="micro") writes it
    assert batch_of(unconstrained.candidates[0].flatbuffer) == 1
    assert unconstrained.held_out.runtime == "TensorFlow Lite Micro"


def test_lut_candidate_is_smaller_in_flash_and_larger_in_arena_with_the_same_outputs(
    unconstrained,
):
    plain, lut = unconstrained.candidates
    assert tfc.micro.check(lut.flatbuffer).compressed_tensors > 0
    assert lut.flash_bytes < plain.flash_bytes and lut.arena_bytes > plain.arena_bytes
    assert lut.search.outputs[0].value == plain.search.outputs[0].value  # decoded exactly
    assert unconstrained.choice == "int8+lut" and unconstrained.budgets_met


def test_max_arena_excludes_the_file_over_it_and_the_summary_says_which(arena_limited):
    plain, lut = arena_limited.candidates
    assert lut.meets_target and not lut.eligible
    assert lut.over_budget == [
        f"arena {lut.arena_bytes:,} bytes > max_arena {arena_limited.max_arena:,} "
        f"(+{lut.arena_bytes - arena_limited.max_arena:,})"
    ]
    assert arena_limited.choice == "int8" and arena_limited.budgets_met
    summary = arena_limited.summary()
    assert "met, over arena" in summary and lut.over_budget[0] in summary
    assert "within the budgets" in summary
    saved = arena_limited.to_dict()
    assert saved["arena_bytes"] == plain.arena_bytes and saved["max_arena"] is not None
    assert saved["candidates"][1]["over_budget"] == lut.over_budget


def test_max_flash_below_every_file_says_which_came_nearest(clustered_cnn, digits, unconstrained):
    smallest = min(c.flash_bytes for c in unconstrained.candidates)
    found = search(clustered_cnn, digits, max_flash=smallest - 100)
    assert not found.budgets_met and found.target_met
    assert found.choice == "int8+lut"  # over by the least
    (note,) = [n for n in found.notes if "budgets" in n]
    assert note.startswith("No candidate fits the budgets; the nearest is 'int8+lut'")
    assert "(+100)" in note and "budgets NOT met" in found.summary()


def test_max_flash_met_by_the_int8_file_alone_without_luts(trained_digits_cnn, digits):
    found = search(trained_digits_cnn, digits, max_flash=40_000)
    # unclustered weights hold too many values per channel for look-up tables
    assert [c.name for c in found.candidates] == ["int8"]
    assert found.choice == "int8" and found.budgets_met
    assert found.chosen.flash_bytes == len(found.flatbuffer) <= 40_000


def test_phone_target_measures_no_flash_or_arena(trained_digits_cnn, digits):
    found = auto_quantize(
        trained_digits_cnn, digits.x_test[:60], max_accuracy_drop=1.0, recovery=False,
        measure_latency=False,
    )  # fmt: skip
    assert found.chosen.flash_bytes is None and found.chosen.arena_bytes is None
    assert found.target == "phone" and found.budgets_met and "budgets" not in found.summary()


@pytest.mark.parametrize(
    "options, words",
    [
        ({"max_flash": 50_000}, "max_flash is a budget measured on TensorFlow Lite Micro"),
        ({"max_arena": 8_000, "target": "phone"}, "pass target='micro' with it"),
        ({"max_flash": 0, "target": "micro"}, "max_flash must be a positive number of bytes"),
        ({"max_arena": -5, "target": "micro"}, "max_arena must be a positive number of bytes"),
        ({"max_arena": 2.5, "target": "micro"}, "max_arena must be a positive number of bytes"),
        ({"target": "mcu"}, "target must be one of 'phone', 'micro'"),
        ({"target": "micro", "runtime": "xnnpack"}, "Leave runtime out"),
        ({"target": "micro", "mode": "edgetpu"}, "Use mode='int8'"),
    ],
)
def test_bad_target_and_budgets_are_refused_naming_the_argument(digits, options, words):
    with pytest.raises(ValueError, match=words):
        auto_quantize("never_loaded.keras", digits.x_test, **options)


def test_float_fallback_is_rebuilt_for_tflm_and_measured_there(sensitive_cnn, digits):
    found = auto_quantize(
        sensitive_cnn, digits.x_test, digits.y_test, representative_data=digits.x_train[:100],
        recovery=False, target="micro", max_arena=50_000,
    )  # fmt: skip
    assert found.choice == "int8 with 1 of 7 ops float" and found.budgets_met
    assert found.settings == {"keep_float": ["fc1"], "target": "micro"}
    report = tfc.micro.check(found.flatbuffer)
    assert found.chosen.arena_bytes == report.arena_bytes and report.runs
    assert batch_of(found.flatbuffer) == 1  # rebuilt with batch 1
