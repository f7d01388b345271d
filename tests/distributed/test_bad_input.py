"""Misuse under tf.distribute: each gives an error that says what to do (or TF's, checked clear).

All checks run in one fresh process (TF_CONFIG is read when a strategy is created, and logical
CPU devices must be configured before TensorFlow initializes them).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.distributed.multiworker_scenarios import child_env

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("distributed-bad-input")

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import tensorflow as tf

    found = {}

    def error(key, build):
        try:
            build()
            found[key] = None
        except Exception as exc:  # the message is what the test checks
            found[key] = f"{type(exc).__name__}: {exc}"

    configs = {
        "malformed": '{"cluster": {"worker": ["127.0.0.1:1"',
        "index_out_of_range": json.dumps(
            {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
             "task": {"type": "worker", "index": 2}}),
        "unknown_task_type": json.dumps(
            {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}),
    }
    for key, config in configs.items():
        os.environ["TF_CONFIG"] = config
        error(key, tf.distribute.MultiWorkerMirroredStrategy)
    del os.environ["TF_CONFIG"]

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    import tfcompress as tfc
    from tests.distributed.multiworker_scenarios import _compile, _small_cnn

    from tfcompress.distribute import multi_worker_strategy

    os.environ["TF_CONFIG"] = configs["malformed"]
    error("malformed_checked", multi_worker_strategy)
    del os.environ["TF_CONFIG"]

    split = tfc.data.load_digits()
    x, y = split.x_train[:64], split.y_train[:64]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    step = [tfc.pruning.UpdatePruningStep()]

    pruned_outside = tfc.prune_low_magnitude(_small_cnn(0))  # before the strategy's scope
    def fit_outside():
        with strategy.scope():
            _compile(pruned_outside).fit(x, y, batch_size=32, verbose=0, callbacks=step)
    error("wrapped_outside_scope", fit_outside)

    teacher, student = _small_cnn(1), _small_cnn(2)
    def distiller_outside():
        with strategy.scope():
            tfc.Distiller(teacher=teacher, student=student).compile()
    error("distiller_outside_scope", distiller_outside)

    with strategy.scope():
        pruned = _compile(tfc.prune_low_magnitude(_small_cnn(0)))
    error("missing_update_pruning_step", lambda: pruned.fit(x, y, batch_size=32, verbose=0))

    float_outside = _small_cnn(0)  # built before the scope, wrapped inside it: supported
    with strategy.scope():
        inside = _compile(tfc.quantize_model(float_outside))
    inside.fit(x, y, batch_size=32, verbose=0)
    found["wrapped_inside_scope_mirrored"] = all(
        type(v.value).__name__ == "MirroredVariable" for v in inside.weights
    )
    print(json.dumps(found))
    """
)


@pytest.fixture(scope="session")
def found() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=child_env({"PYTHONPATH": str(ROOT)}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_malformed_tf_config_is_a_json_error_from_tensorflow(found: dict) -> None:
    # TensorFlow does not name TF_CONFIG here; docs/guide/distributed.md says where to look.
    assert found["malformed"].startswith("JSONDecodeError")


def test_malformed_tf_config_through_tfcompress_names_tf_config(found: dict) -> None:
    assert found["malformed_checked"].startswith("ValueError: TF_CONFIG is not valid JSON")


def test_tf_config_task_index_out_of_range_names_the_index(found: dict) -> None:
    assert found["index_out_of_range"].startswith("ValueError")
    assert "task_id` 2 exceeds the maximum id of worker" in found["index_out_of_range"]


def test_tf_config_task_type_missing_from_cluster_names_it(found: dict) -> None:
    assert "'chief' not found in cluster_spec" in found["unknown_task_type"]


def test_model_wrapped_before_the_strategy_fails_at_fit_naming_the_scope(found: dict) -> None:
    message = found["wrapped_outside_scope"]
    assert message.startswith("ValueError")
    assert "created in this tf.distribute.Strategy.scope()" in message


def test_distiller_with_models_built_outside_the_scope_says_what_to_do(found: dict) -> None:
    message = found["distiller_outside_scope"]
    assert message.startswith("ValueError: Distiller.compile: the student")
    assert "inside `with strategy.scope():`" in message


def test_missing_update_pruning_step_under_a_strategy_names_the_callback(found: dict) -> None:
    assert "UpdatePruningStep" in found["missing_update_pruning_step"]


def test_float_model_built_before_the_scope_can_be_wrapped_inside_it(found: dict) -> None:
    assert found["wrapped_inside_scope_mirrored"] is True
