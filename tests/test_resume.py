"""Training killed with SIGKILL and resumed with BackupAndRestore ends as if never killed (issue 14).

One child process (one TensorFlow import) does all the interrupted work: it loads a `.keras`
file written here by `ModelCheckpoint` after `import tfcompress` alone and trains it on, then
trains a pruned model with `UpdatePruningStep` listed before `BackupAndRestore` (the order that
lost the pruning step) and a backup every 4 batches, killed with SIGKILL mid-epoch. This
process resumes it with a fresh model and compares every model and optimizer variable with the
reference run. The full matrix (6 model types x 4 kill
points) is benchmarks/resume_bench.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.harness import resume as rb

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("resume")]

PRUNING_KILLED = rb.Scenario("pruning", 4, rb.STEPS_PER_EPOCH + 3)  # last: SIGKILL
CONTINUED = ("pruning",)  # every type trains on after .keras in tests/test_saving.py


@pytest.fixture(scope="session")
def killed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("resume")
    in_memory = {kind: rb.write_checkpoint(kind, root) for kind in CONTINUED}
    returncode = rb.run_child([PRUNING_KILLED], root, continue_kinds=CONTINUED)
    assert returncode == -9  # the child really died of SIGKILL
    return root, in_memory


def test_pruning_killed_mid_epoch_resumes_step_masks_and_optimizer_exactly(killed):
    root, _ = killed
    after = rb.resumed(PRUNING_KILLED, rb.backup_dir(root, PRUNING_KILLED))
    reference = rb.replayed(PRUNING_KILLED)  # the batches a resumed Keras job runs, no kill
    difference, where = rb.max_difference(after, reference)
    assert difference == 0.0, f"differs by {difference} at {where}"
    steps = {int(v) for k, v in after.items() if k.endswith("pruning_step")}
    iterations = {int(v) for k, v in after.items() if k.endswith("iteration")}
    # the first batch is step 0: one step per optimizer iteration, none lost or replayed
    assert steps == {iteration - 1 for iteration in iterations}
    masks = [v for k, v in after.items() if "/mask" in k]
    pruned = sum(int(np.sum(m == 0)) for m in masks) / sum(m.size for m in masks)
    assert pruned > 0.6  # the schedule ran on to its final 70% (allocated across layers)


@pytest.mark.parametrize("kind", CONTINUED)
def test_model_checkpoint_file_trains_on_in_a_fresh_process_identically(killed, kind: str):
    root, in_memory = killed
    difference, where = rb.max_difference(rb.continued(root, kind), in_memory[kind])
    assert difference == 0.0, f"differs by {difference} at {where}"


def test_model_checkpoint_file_loads_with_plain_keras_after_import_tfcompress_alone(killed):
    root, _ = killed
    report = json.loads((root / "continue_report.json").read_text())
    assert report == {kind: "loaded after import tfcompress alone" for kind in CONTINUED}
