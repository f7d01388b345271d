"""A trained digits CNN whose `fc1` layer is made int8-sensitive (one outlier row of weights)."""

from __future__ import annotations

import keras
import pytest

from tfcompress.data import Split
from tfcompress.diagnose.outliers import inject_weight_outlier, quietest_channel

SENSITIVE_LAYER = "fc1"


@pytest.fixture(scope="session")
def sensitive_cnn(trained_digits_cnn: keras.Model, digits: Split) -> keras.Model:
    """Same float function as `trained_digits_cnn`; its int8 file loses about 13 pp."""
    channel = quietest_channel(trained_digits_cnn, SENSITIVE_LAYER, digits.x_train[:200])
    return inject_weight_outlier(trained_digits_cnn, SENSITIVE_LAYER, 300.0, channel)


@pytest.fixture(scope="session")
def sensitive_calibrated(sensitive_cnn: keras.Model, digits: Split):
    """One calibration of the sensitive model, reused by the debugger and keep_float tests."""
    from tfcompress.export import calibrate

    return calibrate(sensitive_cnn, "int8", digits.x_train[:100])
