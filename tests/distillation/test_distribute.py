"""The Distiller under tf.distribute.MirroredStrategy with two logical CPU devices.

Logical devices must be configured before TensorFlow initializes, so the check runs in a fresh
Python process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    import numpy as np
    import tfcompress as tfc

    split = tfc.data.load_digits()
    x, y = split.x_train[:64], split.y_train[:64]

    def mlp(width, seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((8, 8, 1))
        hidden = keras.layers.Dense(width, activation="relu", name="hidden")(
            keras.layers.Flatten()(inputs)
        )
        return keras.Model(inputs, keras.layers.Dense(10)(hidden))

    def train():
        distiller = tfc.Distiller(teacher=mlp(32, 0), student=mlp(8, 1))
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.5),
            metrics=["accuracy"],
            distillation_loss_fn=[
                tfc.distillation.LogitsKL(3),
                tfc.distillation.FeatureLoss("hidden"),
            ],
            alpha=0.3,
        )
        history = distiller.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        return distiller, history.history

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored, mirrored_history = train()
    single, single_history = train()
    difference = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(mirrored.student.get_weights(), single.student.get_weights())
    )
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "weight_difference": difference,
        "mirrored_loss": mirrored_history["loss"],
        "single_loss": single_history["loss"],
    }))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_on_two_devices_matches_single_device_training() -> None:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=240
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    # each replica sees half the batch; the summed, scaled gradients equal the full-batch ones
    assert result["weight_difference"] < 1e-4
    assert result["mirrored_loss"] == pytest.approx(result["single_loss"], rel=1e-4)
