"""The memory-lean global threshold allocates exactly as a stable sort over all scores would."""

from __future__ import annotations

import numpy as np
import pytest

from tfcompress.pruning.allocation import _global_threshold, _lamp_scores, kernel_targets


def _sorted_reference(scores: list[np.ndarray], sparsity: float) -> list[float]:
    """Rank every score of the model with one stable sort; the lowest `drop` ranks go."""
    flat = np.concatenate(scores)
    drop = int(round(sparsity * flat.size))
    ranks = np.empty(flat.size, np.int64)
    ranks[np.argsort(flat, kind="stable")] = np.arange(flat.size)
    dropped = ranks < drop
    bounds = np.cumsum([0] + [s.size for s in scores])
    return [float(dropped[a:b].mean()) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _lamp_reference(kernel: np.ndarray) -> np.ndarray:
    squares = np.square(kernel.astype(np.float64).ravel())
    order = np.argsort(squares)
    suffix = np.cumsum(squares[order][::-1])[::-1]
    scores = np.empty_like(squares)
    scores[order] = squares[order] / np.maximum(suffix, np.finfo(np.float64).tiny)
    return scores


@pytest.fixture(scope="session")
def kernels() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 3, 8), (3, 3, 8, 16), (1, 1, 16, 32), (32, 10)]
    return [rng.normal(size=shape).astype(np.float32) for shape in shapes]


def test_lamp_scores_equal_the_unoptimised_formula(kernels: list[np.ndarray]) -> None:
    for kernel in kernels:
        np.testing.assert_array_equal(_lamp_scores(kernel), _lamp_reference(kernel))


@pytest.mark.parametrize("allocation", ["lamp", "global"])
@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.9])
def test_threshold_allocation_equals_a_stable_sort_of_all_scores(
    kernels: list[np.ndarray], allocation: str, sparsity: float
) -> None:
    scores = [_lamp_reference(k) if allocation == "lamp" else np.abs(k).ravel() for k in kernels]
    expected = _sorted_reference(scores, sparsity)
    assert kernel_targets(kernels, [False] * 4, sparsity, allocation) == expected


def test_ties_at_the_threshold_go_in_kernel_order() -> None:
    # 12 equal scores, 6 to drop: a stable sort drops the first kernel's 4, then 2 of the next
    scores = [np.full(4, 0.5), np.full(4, 0.5), np.full(4, 0.5)]
    assert _global_threshold(scores, 0.5) == _sorted_reference(scores, 0.5) == [1.0, 0.5, 0.0]
