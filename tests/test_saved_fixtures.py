"""`.keras` files of every wrapped model type, saved by an earlier release, load with identical outputs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "keras_files"

# a fresh process: only `import tfcompress`, then plain Keras loading, as a user's script does
_LOAD_ALL = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import tfcompress  # noqa: F401 - the only tfcompress line a user's loading script has
    import keras
    import numpy as np

    folder = Path(sys.argv[1])
    expected = np.load(folder / "predictions.npz")
    for path in sorted(folder.glob("*.keras")):
        kind = "sequence" if "recurrent" in path.stem else "image"
        model = keras.saving.load_model(path)
        got = np.asarray(model.predict(expected[f"input_{kind}"], verbose=0))
        same = np.array_equal(got, expected[path.stem])
        print(f"{path.stem}: {'identical' if same else 'DIFFERENT'}")
    """
)


def test_every_saved_model_type_loads_with_plain_keras_and_identical_outputs():
    names = sorted(path.stem for path in FIXTURES.glob("*.keras"))
    assert len(names) >= 8
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_ALL, str(FIXTURES)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if ": " in line]
    assert lines == [f"{name}: identical" for name in names], result.stdout
