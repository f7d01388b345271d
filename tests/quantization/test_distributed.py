"""QAT trains under tf.distribute.MirroredStrategy (2 logical CPUs) like on one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.xdist_group("mirrored_qat")

# Logical devices must be configured before TensorFlow initializes them: run in a fresh process.
SCRIPT = textwrap.dedent(
    """
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import keras
    import numpy as np
    import tfcompress as tfc
    from tfcompress.models import build_digits_cnn, compile_classifier

    split = tfc.data.load_digits()
    x, y = split.x_train[:256], split.y_train[:256]

    def train(strategy, ranges):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            qat = tfc.quantize_model(build_digits_cnn(width=4), learned_step=ranges == "lsq")
            model = compile_classifier(qat, 1e-3)
        model.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0)
        ranges = [layer.get_weights()[:2] for layer in model.layers
                  if type(layer).__name__ == "ActivationQuantizer"]
        return model.predict(split.x_test, verbose=0), np.array(ranges)

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {}
    for ranges in ("min_max", "lsq"):
        out_2, ranges_2 = train(mirrored, ranges)
        out_1, ranges_1 = train(tf.distribute.get_strategy(), ranges)
        results[ranges] = {
            "replicas": mirrored.num_replicas_in_sync,
            "max_output_diff": float(np.abs(out_2 - out_1).max()),
            "output_scale": float(np.abs(out_1).max()),
            "max_range_diff": float(np.abs(ranges_2 - ranges_1).max()),
            "range_scale": float(np.abs(ranges_1).max()),
        }
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="session")
def trained() -> dict:
    """Both range kinds trained in one child process (one TensorFlow start, not two)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("ranges", ["min_max", "lsq"])
def test_mirrored_strategy_matches_single_device_training(trained: dict, ranges: str) -> None:
    result = trained[ranges]
    assert result["replicas"] == 2
    assert result["max_output_diff"] <= 0.05 * result["output_scale"]
    # Replicas see half batches, so their moving-average ranges differ slightly from one device's.
    assert result["max_range_diff"] <= 0.25 * result["range_scale"]
