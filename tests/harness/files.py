"""Damaged model files and interrupted `save_tflite` writes (issue 14).

1. Damaged files: a QAT model saved to `.keras` and `.h5`, then damaged every way we know
   (truncated at many lengths, random bytes flipped with fixed seeds, config.json not JSON or
   edited, members missing, a file that is not a zip, an HDF5 file with a .keras name, weights
   of another model). A child process loads each with `tfcompress.io.load_model` /
   `load_weights`, so a crash (segfault, abort) would show as the child's death, not ours.
   Counted: files tried, clear `ModelFileError`s, anything else, process crashes.
2. `save_tflite` killed mid-write: a child saves two valid flatbuffers (one 32 MB) in turn to one
   path; when a temporary file is seen, the child gets SIGKILL. The path must then hold one
   of the two complete files (or nothing), and the next save must remove the leftover.

Run: `.venv/bin/python benchmarks/files_bench.py` (writes benchmarks/results/files.json).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `tests` and `tfcompress` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

PADDING = 32 << 20  # bytes appended to the big flatbuffer: a write that takes a while


def _rezip(good: bytes, change: Callable[[str, bytes], bytes | None]) -> bytes:
    """The archive `good` with each member passed through `change` (None drops it)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = change(item.filename, source.read(item.filename))
            if data is not None:
                target.writestr(item, data)
    return out.getvalue()


def _flip(good: bytes, seed: int, count: int = 8) -> bytes:
    rng = random.Random(seed)
    data = bytearray(good)
    for _ in range(count):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def damaged_keras(good: bytes, flips: int = 10, cuts: int = 6) -> dict[str, bytes]:
    """Damaged copies of the `.keras` archive `good`, by name."""

    def config(edit: Callable[[bytes], bytes]) -> bytes:
        return _rezip(good, lambda name, data: edit(data) if name == "config.json" else data)

    files = {
        "empty": b"",
        "not_a_zip": b"this is not a model\n" * 20,
        "config_not_json": config(lambda data: b"{not json"),
        "config_truncated": config(lambda data: data[: len(data) // 2]),
        "config_wrong_units": config(lambda data: data.replace(b'"units": 10', b'"units": 12')),
        "config_unknown_class": config(
            lambda data: data.replace(b"QuantizeWrapper", b"NoSuchWrapper")
        ),
        "no_config": _rezip(good, lambda name, data: None if name == "config.json" else data),
        "no_weights": _rezip(good, lambda name, data: None if name.startswith("model.") else data),
        "weights_truncated": _rezip(
            good, lambda name, data: data[: len(data) // 2] if name.startswith("model.") else data
        ),
    }
    for index in range(1, cuts + 1):
        files[f"truncated_{index}_of_{cuts + 1}"] = good[: len(good) * index // (cuts + 1)]
    for seed in range(flips):
        files[f"flipped_seed{seed}"] = _flip(good, seed)
    return files


def damaged_h5(good: bytes, flips: int = 10, cuts: int = 4) -> dict[str, bytes]:
    """Damaged copies of the `.h5` file `good`, by name (bytes flipped, truncated)."""
    files = {"h5_empty": b"", "h5_signature_only": good[:8]}
    for index in range(1, cuts + 1):
        files[f"h5_truncated_{index}_of_{cuts + 1}"] = good[: len(good) * index // (cuts + 1)]
    for seed in range(flips):
        files[f"h5_flipped_seed{seed}"] = _flip(good, 100 + seed)
    return files


def try_loads(folder: Path, progress: Path | None = None) -> list[dict[str, Any]]:
    """Load every damaged file in `folder` (and the other model's weights); classify each."""
    from tfcompress.io import ModelFileError, load_model, load_weights

    rows = []
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".keras", ".h5"):
            continue
        if progress is not None:  # which file a crash happened in
            progress.write_text(path.name)
        try:
            if path.name.startswith("other_model"):
                load_weights(_digits_qat(), path)
            else:
                load_model(path)
            outcome, message = "loaded", ""
        except ModelFileError as error:
            clear = str(path) in str(error)
            outcome, message = ("clear_error" if clear else "error_without_path"), str(error)
        except Exception as error:  # noqa: BLE001 - counted as not clear
            outcome, message = f"other:{type(error).__name__}", str(error)[:300]
        rows.append({"file": path.name, "outcome": outcome, "message": message[:400]})
    return rows


def _digits_qat() -> Any:
    import keras

    import tfcompress as tfc
    from tfcompress.models import build_digits_cnn

    keras.utils.set_random_seed(0)
    return tfc.quantize_model(build_digits_cnn(width=4))


def write_corpus(folder: Path, flips: int = 10, cuts: int = 6) -> int:
    """Save a small QAT model as .keras and .h5 and write their damaged copies to `folder`,
    plus the weights of a different model (`other_model.weights.h5`). Returns the count."""
    import tfcompress as tfc
    from tfcompress.models import build_digits_cnn

    model = _digits_qat()
    scratch = Path(tempfile.mkdtemp())
    model.save(scratch / "good.keras")
    model.save(scratch / "good.h5")
    files = damaged_keras((scratch / "good.keras").read_bytes(), flips, cuts)
    files["h5_named_keras"] = (scratch / "good.h5").read_bytes()
    for name, data in files.items():
        (folder / f"{name}.keras").write_bytes(data)
    for name, data in damaged_h5((scratch / "good.h5").read_bytes(), flips, cuts).items():
        (folder / f"{name}.h5").write_bytes(data)
    other = tfc.prune_low_magnitude(build_digits_cnn(width=8))
    other.save_weights(folder / "other_model.weights.h5")
    return sum(1 for p in folder.iterdir() if p.suffix in (".keras", ".h5"))


WRITER = """
import sys
from pathlib import Path
from tfcompress.export import save_tflite
first, second, target = Path(sys.argv[1]).read_bytes(), Path(sys.argv[2]).read_bytes(), sys.argv[3]
print("ready", flush=True)
while True:
    for data in (first, second):
        save_tflite(data, target, overwrite=True)
"""


def flatbuffers(folder: Path) -> tuple[Path, Path]:
    """Two valid flatbuffers on disk: a small one and the same padded to a 32 MB write."""
    import tfcompress as tfc
    from tfcompress.models import build_digits_cnn

    small = tfc.convert(build_digits_cnn(width=4))
    (folder / "small.bin").write_bytes(small)
    (folder / "big.bin").write_bytes(small + bytes(PADDING))  # trailing bytes: still valid
    return folder / "small.bin", folder / "big.bin"


def kill_during_save(small: Path, big: Path, target: Path, timeout: float = 300.0) -> list[str]:
    """Start a child saving `small` and `big` in turn to `target`; SIGKILL it while it writes
    the big one (its temporary file is larger than `small`). Returns the temporaries left."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(small), str(big), str(target)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=str(Path(__file__).resolve().parents[2]),
    )
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != b"ready":
            raise RuntimeError("the writer child did not start")
        deadline = time.monotonic() + timeout
        pattern = f".{target.name}.{child.pid}.*.tmp"
        while not _big_write_under_way(target.parent, pattern, small.stat().st_size):
            if time.monotonic() > deadline or child.poll() is not None:
                raise RuntimeError("the writer child never wrote the big file")
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if child.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the writer child ended with {child.returncode}, not SIGKILL")
    return sorted(p.name for p in target.parent.glob(f".{target.name}.*.tmp"))


def _big_write_under_way(folder: Path, pattern: str, small_size: int) -> bool:
    """A temporary file of the big flatbuffer exists and holds more than the small one."""
    for candidate in folder.glob(pattern):
        try:
            if candidate.stat().st_size > small_size:
                return True
        except FileNotFoundError:  # renamed meanwhile
            continue
    return False


def _child_loads(folder: str) -> None:
    rows = try_loads(Path(folder), progress=Path(folder) / "progress.txt")
    (Path(folder) / "outcomes.json").write_text(json.dumps(rows))


if __name__ == "__main__":  # the child process the harness starts
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", required=True, help="internal: the child's part")
    arguments = parser.parse_args()
    _child_loads(arguments.loads)
