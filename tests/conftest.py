"""Shared fixtures: the real digits data and a small trained float CNN (trained once per session).

Expensive fixtures in test modules are session-scoped, not module-scoped: under pytest-xdist a
worker's queue can interleave two modules' tests, and pytest then tears a module fixture down and
builds it again (the multi-worker launch and auto_quantize ran twice that way).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.fixtures.pretrained import pretrained  # noqa: E402
from tfcompress.data import Split, load_digits  # noqa: E402
from tfcompress.models import build_digits_cnn, compile_classifier  # noqa: E402


@pytest.fixture(scope="session")
def digits() -> Split:
    return load_digits()


@pytest.fixture(scope="session")
def trained_digits_cnn(digits: Split) -> keras.Model:
    """A digits CNN trained for a few epochs (about 97% test accuracy). Do not mutate it in tests."""
    keras.utils.set_random_seed(0)
    model = compile_classifier(build_digits_cnn(width=16))

    def train() -> None:
        model.fit(digits.x_train, digits.y_train, epochs=8, batch_size=64, verbose=0)

    return pretrained("digits-cnn-16", model, train)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long tests first (those marked slow): with `pytest -n 2` the two
    workers then end together, filling the end with short tests, instead of one worker waiting
    for the other's last long test."""

    def long(item: pytest.Item) -> bool:
        return item.get_closest_marker("slow") is not None

    items.sort(key=lambda item: not long(item))  # stable: the order within each part is kept
