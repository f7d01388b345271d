"""Every python example of the README and the user guides runs as written.

The blocks of one page run in order, in one namespace, like a script: a block may use what an
earlier block of its page made. A README block whose every statement a guide also holds runs with
that guide, not twice. The names a page takes from the reader (`model`, `x`, `y`,
`x_test`, a teacher, a file to load, ...) are given by `_namespace`: a small digits CNN with
softmax outputs trained on 256 rows (about 85 % accurate), its data, and the files the pages
open. Latency targets are timed with a deterministic timer (the file size), so an example never
depends on the machine's speed.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc
from tests.fixtures.pretrained import pretrained
from tests.test_docs import _python_blocks
from tfcompress.data import Split, load_digits
from tfcompress.models import build_digits_cnn, compile_classifier

# one worker runs the whole module (pytest-xdist, --dist loadgroup), so its fixtures run once
pytestmark = pytest.mark.xdist_group("docs-examples")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "keras_files"
ROWS = 256  # training rows the pages' `x` and `y` hold: every `fit` in a page stays short
HELD_OUT = 64


PAGES = [
    path
    for path in [ROOT / "README.md", *sorted(ROOT.glob("docs/guide/*.md"))]
    if _python_blocks(path)
]


def _classifier(width: int = 8, name: str = "digits_cnn", logits: bool = False) -> keras.Model:
    """The digits CNN, compiled: softmax outputs named `probs` (as the guides compile it with
    `"sparse_categorical_crossentropy"`), or logits (what the Distiller's default loss takes)."""
    model = build_digits_cnn(width=width, name=name)
    if logits:
        return compile_classifier(model)
    probs = keras.layers.Softmax(name="probs")(model.output)
    model = keras.Model(model.input, probs, name=name)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def split() -> Split:
    return load_digits()


@pytest.fixture(scope="module")
def weights(split: Split) -> dict[str, list[np.ndarray]]:
    """Trained weights of the pages' model (width 8) and teacher (width 16)."""
    found = {}
    for width in (8, 16):
        keras.utils.set_random_seed(width)
        model = _classifier(width)

        def train(model: keras.Model = model) -> None:
            # about 85 % accurate: the tools' examples work on a model that has learned something
            model.fit(split.x_train[:ROWS], split.y_train[:ROWS], epochs=20, verbose=0)

        found[f"width{width}"] = pretrained(f"docs-digits-cnn-{width}", model, train).get_weights()
    return found


class ResidualBlock(keras.layers.Layer):
    """A reader's own layer of layers (docs/guide/qat.md's subclassed model uses it)."""

    def __init__(self, filters: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")
        self.add = keras.layers.Add()

    def call(self, x: Any, training: bool = False) -> Any:
        return self.add([x, self.conv(x)])


def _namespace(split: Split, weights: dict, folder: Path, code: str) -> dict[str, Any]:
    """The names the pages take from their reader, fresh for each page.

    The models a page does not name (`code` is the page's python) are not built: each costs a
    build, a training step or a conversion.
    """

    def trained(width: int, name: str, logits: bool = False) -> keras.Model:
        model = _classifier(width, name, logits)
        model.set_weights(weights[f"width{width}"])
        return model

    def qat4() -> keras.Model:
        qat = tfc.quantize_model(trained(8, "qat4"), weight_bits=4)
        qat.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        qat.fit(x, y, epochs=1, verbose=0)
        return qat

    def clustered_int8() -> bytes:
        clustered = tfc.strip_clustering(tfc.cluster_weights(trained(8, "clustered"), 16))
        return tfc.convert(clustered, "int8", x[:128], per_channel=False)

    x, y = split.x_train[:ROWS], split.y_train[:ROWS]
    x_test, y_test = split.x_test[:HELD_OUT], split.y_test[:HELD_OUT]
    model = trained(8, "digits_cnn")
    keras.Model(model.input, model.output).save(folder / "checkpoint.keras")  # not compiled
    shutil.copy(FIXTURES / "keras2_mobilenet.h5", folder / "mobilenet_tf23.h5")
    shutil.copy(ROOT / "docs" / "example_recipe.yaml", folder / "recipe.yaml")
    legacy_shape = (16, 8, 8, 3)  # inputs of tests/fixtures/keras_files/keras2_mobilenet.h5
    built_if_named: dict[str, Any] = {
        "teacher": lambda: trained(16, "teacher", logits=True),
        "student": lambda: trained(8, "student", logits=True),
        "teacher_a": lambda: trained(16, "teacher_a", logits=True),
        "teacher_b": lambda: trained(16, "teacher_b", logits=True),
        "qat4": qat4,
        "clustered_int8": clustered_int8,
    }
    named = set(re.findall(r"\w+", code))
    return {
        "keras": keras,
        "tf": tf,
        "np": np,
        "tfc": tfc,
        "model": model,
        **{name: build() for name, build in built_if_named.items() if name in named},
        "build_model": lambda: _classifier(8, "built"),
        "loss": "sparse_categorical_crossentropy",
        "GLOBAL_BATCH": 64,
        "EPOCHS": 2,
        "index": 0,
        "x": x,
        "y": y,
        "x_train": x,
        "y_train": y,
        "x_val": x_test,
        "y_val": y_test,
        "x_test": x_test,
        "y_test": y_test,
        "x_cal": x[:128],
        "x_calib": x[:128],
        "split": split,
        "calibration_images": np.random.default_rng(0).uniform(size=legacy_shape).astype("float32"),
        "ResidualBlock": ResidualBlock,
    }


def _size_as_latency(flatbuffer: bytes, *args: Any, **kwargs: Any) -> SimpleNamespace:
    """A deterministic stand-in for a LiteRT timing: the file's size in kilobytes, as ms."""
    return SimpleNamespace(median_ms=len(flatbuffer) / 1024)


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_run_in_order(page, split, weights, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from tfcompress.pruning import latency

    monkeypatch.setattr(latency, "benchmark_tflite", _size_as_latency)
    blocks = _python_blocks(page)
    if page.name == "README.md":
        blocks = _not_run_by_a_guide(blocks)
    namespace = _namespace(split, weights, tmp_path, "\n".join(code for _, code in blocks))
    for line, code in blocks:
        where = f"{page.relative_to(ROOT)}:{line}"
        try:
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 - the docs are ours
        except Exception as error:  # noqa: BLE001 - name the block that failed
            pytest.fail(f"the example at {where} failed: {type(error).__name__}: {error}")
    if page.name == "README.md":  # the tour's file
        assert (tmp_path / "tflite_models" / "digits_int8.tflite").stat().st_size > 0


def _statements(code: str) -> list[str]:
    """The statements of a block, each as its syntax tree: formatting and comments aside."""
    return [ast.dump(statement) for statement in ast.parse(code).body]


def _not_run_by_a_guide(blocks: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The README blocks to run: a block whose every statement a guide's block also holds runs
    with that guide (the same call on the same names), unless a later block uses a name it sets.
    """
    in_guides = {
        statement
        for guide in PAGES
        if guide.name != "README.md"
        for _, code in _python_blocks(guide)
        for statement in _statements(code)
    }
    names = [_names(code) for _, code in blocks]
    kept: list[tuple[int, str]] = []
    for index, (line, code) in enumerate(blocks):
        used_later = set().union(*(loaded for _, loaded in names[index + 1 :]))
        if not set(_statements(code)) <= in_guides or names[index][0] & used_later:
            kept.append((line, code))
    return kept


def _names(code: str) -> tuple[set[str], set[str]]:
    """(names a block sets, names it reads)."""
    nodes = [node for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)]
    stored = {node.id for node in nodes if isinstance(node.ctx, ast.Store)}
    return stored, {node.id for node in nodes if isinstance(node.ctx, ast.Load)}


def test_readme_blocks_a_guide_runs_are_left_to_it():
    readme = _python_blocks(ROOT / "README.md")
    kept = _not_run_by_a_guide(readme)
    assert readme[0] in kept, "the tour runs with the README (it writes the file checked there)"
    left = [(line, code) for line, code in readme if (line, code) not in kept]
    assert left, "no README block is a guide's: nothing is left to the guides"
    guides = "\n".join(
        code for page in PAGES if page.name != "README.md" for _, code in _python_blocks(page)
    )
    for line, code in left:  # each statement runs in a guide, as it is written here
        assert set(_statements(code)) <= set(_statements(guides)), f"README.md:{line}"


def _tour(path: Path) -> str:
    return _python_blocks(path)[0][1]


def test_the_documentation_home_shows_the_readme_tour():
    # docs/index.md repeats the README's tour word for word (it runs once, with the README)
    assert _tour(ROOT / "docs" / "index.md") == _tour(ROOT / "README.md")
