"""`save_tflite` killed with SIGKILL mid-write leaves the old file whole, never a partial one.

A child process saves two valid flatbuffers (one padded to a 32 MB write) in turn to one path
and is killed while it writes the big one (benchmarks/files_bench.py repeats this 5 times).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness import files as fb
from tfcompress.export import save_tflite


@pytest.mark.slow
def test_save_tflite_killed_mid_write_leaves_a_whole_file_and_the_next_save_cleans_up(
    tmp_path: Path,
):
    small, big = fb.flatbuffers(tmp_path)
    target = tmp_path / "out" / "model.tflite"
    target.parent.mkdir()
    save_tflite(small.read_bytes(), target)  # the "old" file
    leftovers = fb.kill_during_save(small, big, target)
    assert leftovers, "the kill should land inside the write of the big file"
    assert target.read_bytes() in (small.read_bytes(), big.read_bytes())
    save_tflite(small.read_bytes(), target, overwrite=True)
    assert sorted(os.listdir(target.parent)) == ["model.tflite"]


def test_save_tflite_keeps_the_temporary_file_of_a_live_concurrent_save(tmp_path: Path):
    small, _ = fb.flatbuffers(tmp_path)
    target = tmp_path / "model.tflite"
    live = tmp_path / f".model.tflite.{os.getpid()}.abc123.tmp"  # this process is alive
    dead = tmp_path / ".model.tflite.999999999.abc123.tmp"  # no such process
    other = tmp_path / ".model.tflite.x.999999999.abc123.tmp"  # another target's temporary
    for path in (live, dead, other):
        path.write_bytes(b"partial")
    save_tflite(small.read_bytes(), target)
    assert live.exists() and other.exists() and not dead.exists()
