"""Fixtures for the distillation tests: a frozen copy of the trained digits CNN as teacher."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfcompress.data import Split
from tfcompress.models import build_digits_cnn


@pytest.fixture()
def teacher(trained_digits_cnn: keras.Model) -> keras.Model:
    """A copy of the session's trained CNN (the Distiller freezes its teacher; keep the original)."""
    copy = keras.models.clone_model(trained_digits_cnn)
    copy.set_weights(trained_digits_cnn.get_weights())
    return copy


@pytest.fixture()
def student() -> keras.Model:
    keras.utils.set_random_seed(1)
    return build_digits_cnn(width=4, name="student")


@pytest.fixture()
def batch(digits: Split) -> tuple[np.ndarray, np.ndarray]:
    """A small slice of the real training data."""
    return digits.x_train[:128], digits.y_train[:128]
