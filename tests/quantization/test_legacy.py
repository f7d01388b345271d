"""Legacy tf_keras models go through tfmot (in a TF_USE_LEGACY_KERAS=1 process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    import tfcompress as tfc

    split = tfc.data.load_digits()
    model = tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)), tf.keras.layers.Conv2D(4, 3, activation="relu"),
        tf.keras.layers.Flatten(), tf.keras.layers.Dense(10),
    ])
    qat = tfc.quantize_model(model)
    qat.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(split.x_train[:128], split.y_train[:128], epochs=1, verbose=0)
    print(json.dumps({"module": type(qat.layers[1]).__module__,
                      "outputs_finite": bool(np.isfinite(qat.predict(split.x_test, verbose=0)).all())}))
    """
)


@pytest.mark.slow
def test_tf_keras_model_is_quantized_by_tfmot() -> None:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "tensorflow_model_optimization" in result["module"]
    assert result["outputs_finite"]
