"""tfcompress.distribute.fit drives train_step and Keras callbacks as model.fit does (one process).

The 2-worker run of the same function is in test_multiworker.py; here the single-process loop is
compared with Keras's own `fit` on the same model, bit for bit, and TF_CONFIG mistakes are named.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.distributed.multiworker_scenarios import _compile, _small_cnn
from tfcompress.distribute import check_tf_config, fit


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    split = tfc.data.load_digits()
    return split.x_train[:128], split.y_train[:128]


def _qat() -> keras.Model:
    return _compile(tfc.quantize_model(_small_cnn(0)))


def test_min_max_qat_trained_by_distribute_fit_equals_keras_fit(digits: tuple) -> None:
    x, y = digits
    reference = _qat()
    expected = reference.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    model = _qat()
    history = fit(model, x, y, batch_size=32, epochs=2)
    for ours, theirs in zip(model.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=1e-6)


def test_pruning_steps_once_per_batch_and_checkpoint_loads(digits: tuple, tmp_path: Path) -> None:
    x, y = digits
    schedule = tfc.pruning.ConstantSparsity(0.5, begin_step=0, frequency=2)
    model = _compile(tfc.prune_low_magnitude(_small_cnn(0), schedule=schedule))
    path = tmp_path / "pruned.keras"
    callbacks = [tfc.pruning.UpdatePruningStep(), keras.callbacks.ModelCheckpoint(str(path))]
    fit(model, x, y, batch_size=32, epochs=2, steps_per_epoch=3, callbacks=callbacks)
    steps = {int(layer.pruning_step.numpy()) for layer in tfc.pruning.pruned_layers(model)}
    assert steps == {5}  # 2 epochs x 3 steps, the first step is 0
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0))


def test_backup_and_restore_resumes_at_the_saved_epoch(digits: tuple, tmp_path: Path) -> None:
    x, y = digits

    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            raise RuntimeError("interrupted")

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted = _qat()
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(interrupted, x, y, batch_size=32, epochs=3, callbacks=[backup, StopAfterFirstEpoch()])
    resumed = _qat()
    history = fit(resumed, x, y, batch_size=32, epochs=3, callbacks=[backup])
    assert len(history.history["loss"]) == 2  # epochs 1 and 2: epoch 0 was restored
    straight = _qat()
    fit(straight, x, y, batch_size=32, epochs=3)
    for ours, theirs in zip(resumed.weights, straight.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_fit_with_arrays_and_no_batch_size_says_what_to_pass(digits: tuple) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        fit(_qat(), *digits)


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ('{"cluster": {"worker": ["127.0.0.1:1"', "not valid JSON"),
        ('["127.0.0.1:1"]', "must be a JSON object"),
        ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}}', 'no "task"'),
        ('{"cluster": {"worker": "127.0.0.1:1"}, "task": {"type": "worker", "index": 0}}', "list"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "'chief'"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "0..1"),
    ],
)
def test_malformed_tf_config_names_tf_config_and_the_mistake(config: str, named: str) -> None:
    with pytest.raises(ValueError, match="TF_CONFIG") as raised:
        check_tf_config(config)
    assert named in str(raised.value)
    assert "Expected e.g." in str(raised.value)


def test_valid_or_absent_tf_config_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert check_tf_config() is None
    config = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}
    assert check_tf_config(json.dumps(config)) == config
