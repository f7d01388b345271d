"""The MLPerf Tiny reference models: published parameter counts, stand-in data, TFLM-ready files."""

from __future__ import annotations

import numpy as np
import pytest

import tfcompress as tfc
from tfcompress.examples import mlperf_tiny


@pytest.fixture(scope="session")
def mlperf_models() -> dict:
    """The four reference models, untrained (built once: the suite reuses them)."""
    return {task: mlperf_tiny.build(task) for task in mlperf_tiny.TASKS}


@pytest.mark.parametrize("task", mlperf_tiny.TASKS)
def test_each_model_has_the_reference_parameter_count_and_shapes(task, mlperf_models):
    model = mlperf_models[task]
    assert model.count_params() == mlperf_tiny.PARAMETERS[task]
    assert model.input_shape[1:] == mlperf_tiny.INPUT_SHAPES[task]
    outputs = mlperf_tiny.CLASSES.get(task, 640)
    assert model.output_shape == (None, outputs)


@pytest.mark.parametrize("task", mlperf_tiny.TASKS)
def test_stand_in_data_fits_the_model_with_held_out_rows_of_every_label(task):
    split = mlperf_tiny.load(task)
    assert split.x_train.shape[1:] == split.x_test.shape[1:] == mlperf_tiny.INPUT_SHAPES[task]
    assert split.x_train.dtype == np.float32 and 0.0 <= split.x_train.min() <= 1.0
    assert split.x_train.max() <= 1.0
    labels = 2 if task == "ad" else mlperf_tiny.CLASSES[task]
    assert set(np.unique(split.y_test)) == set(range(labels))
    if task == "ad":  # the autoencoder trains on the normal sound only
        assert not split.y_train.any()


@pytest.mark.parametrize("task", ["kws", "ad"])
def test_micro_file_runs_on_tflm_within_one_step_of_litert(task, mlperf_models):
    x = mlperf_tiny.load(task).x_test[:8]
    flatbuffer = tfc.convert(mlperf_models[task], "int8", x, target="micro")
    report = tfc.micro.check(flatbuffer, x)
    assert report.runs and report.arena_bytes > 0
    assert all(output.max_difference <= 1 for output in report.outputs)


def test_anomaly_auc_ranks_higher_scores_as_anomalies():
    labels = np.array([0, 0, 1, 1])
    assert mlperf_tiny.auc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert mlperf_tiny.auc(np.array([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    with pytest.raises(ValueError, match="both normal"):
        mlperf_tiny.auc(np.array([0.1, 0.2]), np.array([1, 1]))


def test_unknown_task_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="Unknown MLPerf Tiny task 'asr'.*kws, vww, ic, ad"):
        mlperf_tiny.build("asr")
