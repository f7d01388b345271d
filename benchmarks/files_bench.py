"""Damaged model files and interrupted `save_tflite` writes (issue 14).

The scenarios and the machinery live in `tests/harness/files.py`, which the tests share.
Run: .venv/bin/python benchmarks/files_bench.py   (writes benchmarks/results/files.json)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_results  # noqa: E402
from tests.harness import files  # noqa: E402
from tests.harness.files import PADDING, flatbuffers, kill_during_save, write_corpus  # noqa: E402


def main(kills: int = 5) -> None:
    from tfcompress.export import save_tflite

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        corpus = folder / "corpus"
        corpus.mkdir()
        count = write_corpus(corpus)
        command = [sys.executable, str(Path(files.__file__).resolve()), "--loads", str(corpus)]
        environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        completed = subprocess.run(command, env=environment, capture_output=True, timeout=1800)
        crashed = completed.returncode != 0
        rows = [] if crashed else json.loads((corpus / "outcomes.json").read_text())
        outcomes: dict[str, int] = {}
        for row in rows:
            outcomes[row["outcome"]] = outcomes.get(row["outcome"], 0) + 1
        small, big = flatbuffers(folder)
        target = folder / "out" / "model.tflite"
        target.parent.mkdir()
        valid = {small.read_bytes(), big.read_bytes()}
        kill_rows = []
        for _ in range(kills):
            leftovers = kill_during_save(small, big, target)
            intact = (not target.exists()) or target.read_bytes() in valid
            save_tflite(small.read_bytes(), target, overwrite=True)
            remaining = sorted(p.name for p in target.parent.glob(".*.tmp"))
            kill_rows.append(
                {"target_intact": intact, "leftovers": len(leftovers), "after_next_save": remaining}
            )
    write_results(
        "files",
        {
            "damaged_files": {
                "count": count,
                "crashes": int(crashed),
                "crash_output": completed.stderr.decode(errors="replace")[-500:]
                if crashed
                else None,
                "outcomes": outcomes,
                "rows": rows,
            },
            "save_tflite_kills": {
                "kills": len(kill_rows),
                "target_intact": sum(r["target_intact"] for r in kill_rows),
                "killed_mid_write": sum(r["leftovers"] > 0 for r in kill_rows),
                "temporaries_left_after_next_save": sum(
                    len(r["after_next_save"]) for r in kill_rows
                ),
                "bytes_per_big_write": PADDING,
                "rows": kill_rows,
            },
        },
    )


if __name__ == "__main__":
    main()
