"""The coverage matrix: every `keras.layers` layer through QAT, PTQ, pruning and clustering.

Each row is a tiny functional model around one layer (tests/coverage/cases.py); each check trains
or converts it for real and runs the .tflite file on LiteRT (tests/coverage/runner.py). A Keras
layer without a row and without a reason in `SKIPS` fails `test_every_keras_layer_has_a_row`.
"""

from __future__ import annotations

import keras
import pytest

from tests.coverage.cases import SKIPS, all_cases, layer_classes
from tests.coverage.expectations import FLOAT_IN_INT8, KNOWN_GAPS
from tests.coverage.runner import PTQ_AGREEMENT, TECHNIQUES, WEIGHTS, Outcome, saved_weights

CASES = all_cases()
PRUNABLE = [case for case in CASES if case.prunable]


def _rows(cases: list) -> list:
    # a row's checks share one worker (pytest-xdist, --dist loadgroup), so its model trains once
    return [
        pytest.param(case, id=case.id, marks=pytest.mark.xdist_group(case.id)) for case in cases
    ]


def test_every_keras_layer_has_a_row_or_a_reason():
    classes = layer_classes()
    covered = {case.layer for case in CASES}
    missing = sorted(set(classes) - covered - set(SKIPS))
    assert not missing, f"keras.layers exports layers without a coverage row or a skip: {missing}"
    assert not sorted((covered | set(SKIPS)) - set(classes)), "rows for layers Keras no longer has"
    assert all(len(reason) > 20 for reason in SKIPS.values()), "every skip says why"


def test_every_row_has_its_trained_weights_in_the_fixture():
    keras.utils.set_random_seed(0)
    stale = [case.id for case in CASES if saved_weights(case, case.build()) is None]
    assert not stale, (
        f"rows without trained weights in {WEIGHTS.name} (they train in the test, slower): "
        f"{stale}; run .venv/bin/python tests/fixtures/make_coverage_weights.py"
    )


def _check(case, technique: str) -> Outcome:
    key = f"{case.id}/{technique}"
    outcome = TECHNIQUES[technique](case)
    if key in KNOWN_GAPS:
        # strict: a gap that closes fails here until its line in expectations.py is removed
        assert not outcome.ok, f"{key} works now: remove it from KNOWN_GAPS"
        pytest.xfail(KNOWN_GAPS[key])
    expected_float = FLOAT_IN_INT8.get(case.layer)
    if expected_float is not None and technique in ("qat", "ptq"):
        ops, reason = expected_float
        assert outcome.detail == "", outcome.detail
        assert set(outcome.float_ops) <= ops, (outcome.float_ops, reason)
        assert outcome.agreement is not None and outcome.agreement >= PTQ_AGREEMENT
        if technique == "qat":  # the user is told, with the reason and the way out
            assert any(reason in warning for warning in outcome.warnings), outcome.warnings
        return outcome
    assert outcome.ok, outcome
    return outcome


@pytest.mark.parametrize("case", _rows(CASES))
def test_qat_int8_has_no_float_op_and_matches_the_keras_model(case):
    outcome = _check(case, "qat")
    unknown = [w for w in outcome.warnings if "not known to the quantization registry" in w]
    assert not unknown or case.layer == "Lambda", unknown  # user code is the one unknown


@pytest.mark.parametrize("case", _rows(CASES))
def test_ptq_int8_has_no_float_op_and_matches_the_float_model(case):
    _check(case, "ptq")


@pytest.mark.parametrize("case", _rows(PRUNABLE))
def test_pruned_zeros_survive_in_the_int8_file(case):
    _check(case, "pruning")


@pytest.mark.parametrize("case", _rows(PRUNABLE))
def test_clustered_kernels_keep_their_few_values_in_the_int8_file(case):
    _check(case, "clustering")
