"""Built-in real datasets that ship inside packages (no download) and calibration helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Split", "calibration_sample", "load_digits"]


@dataclass(frozen=True)
class Split:
    """A train/test split of images `(N, H, W, C)` float32 in [0, 1] and integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max()) + 1)


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Split:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), shipped with the package.

    Args:
        test_fraction: share of the images held out for testing, stratified by class.
        seed: seed of the shuffle, so that every run sees the same split.

    Returns:
        A `Split` with images of shape `(N, 8, 8, 1)` scaled to [0, 1].

    Example:
        >>> split = load_digits()
        >>> split.x_train.shape[1:], split.num_classes
        ((8, 8, 1), 10)
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]
    y = bunch.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return Split(x_train, y_train, x_test, y_test)


def calibration_sample(x: np.ndarray, count: int = 200, seed: int = 0) -> np.ndarray:
    """A random subset of `x` (without replacement) for post-training calibration."""
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}.")
    rng = np.random.default_rng(seed)
    index = rng.permutation(len(x))[: min(count, len(x))]
    return x[np.sort(index)]
