"""How a model's overall target sparsity is spread over its prunable kernels.

A schedule gives one sparsity `s` per step. With an allocation other than `"uniform"`, that `s` is
the sparsity of all the pruned kernels together, and each kernel `i` gets its own target
`s_i = clip(1 - (1 - s) * scale_i, 0, 1)`. The `scale_i` (how much denser than average kernel `i`
stays) are computed once, when the model is wrapped, for the schedule's final sparsity, so that
the kernels' targets add up to exactly that overall sparsity; during the ramp, kernels whose
target would be negative stay dense (the overall sparsity then trails the schedule a little).

- `"uniform"`: every kernel at `s` (tfcompress's behaviour before allocations existed).
- `"dense_depthwise"`: depthwise kernels (DepthwiseConv1D/2D and the depthwise half of
  SeparableConv1D/2D: 9 weights per channel in a 3x3 conv) stay dense, as tfmot's registry
  leaves them; the other kernels are pruned harder so that the overall sparsity is still `s`.
- `"global"`: one magnitude threshold over all kernels (the smallest `|w|` of the whole model go).
- `"lamp"`: one threshold over layer-adaptive magnitude scores (Lee et al., 2021): a weight's
  score is `w^2` over the sum of the `w^2` of the weights of its kernel at least as large, so
  each kernel's largest weight scores 1 and survives.
- `"erk"`: Erdős–Rényi-Kernel densities (Evci et al., 2020): kernel density proportional to
  `sum(shape) / prod(shape)`, so small kernels (depthwise, first convs, classifiers) stay
  denser than large ones; kernels that would be denser than 1 stay dense.

The default is `"lamp"`: at equal overall sparsity it kept int8 accuracy at or above tfmot's
on every zoo architecture (docs/dev/decisions/2026-11-23-pruning-allocation-lamp.md).

Example:
    >>> import numpy as np
    >>> kernels = [np.ones((3, 3, 1, 16)), np.ones((1, 1, 16, 64))]
    >>> [round(s, 3) for s in kernel_targets(kernels, [True, False], 0.5, "dense_depthwise")]
    [0.0, 0.57]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ALLOCATIONS = ("uniform", "dense_depthwise", "global", "lamp", "erk")
# the most accurate at equal overall sparsity in benchmarks/pruning_allocation_bench.py
DEFAULT_ALLOCATION = "lamp"


def check_allocation(allocation: object) -> str:
    """`allocation` if it names a known allocation, else a ValueError listing the choices.

    Example:
        >>> check_allocation("erk")
        'erk'
    """
    if not isinstance(allocation, str) or allocation not in ALLOCATIONS:
        raise ValueError(
            f"allocation must be one of {', '.join(repr(a) for a in ALLOCATIONS)}; got "
            f"{allocation!r}. Use 'uniform' to prune every layer to the schedule's sparsity."
        )
    return allocation


def kernel_targets(
    kernels: Sequence[np.ndarray],
    depthwise: Sequence[bool],
    sparsity: float,
    allocation: str,
) -> list[float]:
    """Per-kernel sparsities whose weighted mean over all the kernels is `sparsity`.

    Args:
        kernels: the current values of every prunable kernel of the model.
        depthwise: for each kernel, whether it is a depthwise kernel.
        sparsity: the overall target, in [0, 1).
        allocation: one of `ALLOCATIONS`.

    Returns:
        The sparsity of each kernel, in [0, 1). The overall sparsity can only fall short of
        `sparsity` when the allocation cannot reach it (e.g. `"dense_depthwise"` on a model that
        is mostly depthwise kernels).

    Example:
        >>> kernels = [np.full((4, 4), 0.1), np.full((4, 4), 1.0)]
        >>> kernel_targets(kernels, [False, False], 0.5, "global")
        [1.0, 0.0]
    """
    check_allocation(allocation)
    sizes = np.array([k.size for k in kernels], dtype=np.float64)
    if allocation == "uniform" or sparsity == 0.0:
        return [float(sparsity)] * len(kernels)
    if allocation == "dense_depthwise":
        return _dense_depthwise(sizes, np.asarray(depthwise, bool), sparsity)
    if allocation == "erk":
        ratios = np.array([sum(k.shape) / k.size for k in kernels], dtype=np.float64)
        return _erk(sizes, ratios, sparsity)
    scores = [_lamp_scores(k) if allocation == "lamp" else np.abs(k).ravel() for k in kernels]
    return _global_threshold(scores, sparsity)


def _dense_depthwise(sizes: np.ndarray, depthwise: np.ndarray, sparsity: float) -> list[float]:
    rest = sizes[~depthwise].sum()
    if rest == 0:
        return [0.0] * len(sizes)
    harder = min(sparsity * sizes.sum() / rest, 0.99)
    return [0.0 if dw else float(harder) for dw in depthwise]


def _erk(sizes: np.ndarray, ratios: np.ndarray, sparsity: float) -> list[float]:
    # density_i = epsilon * ratio_i; kernels whose density would exceed 1 are dense, and epsilon
    # is solved again over the others until no kernel is over 1
    dense = np.zeros(len(sizes), bool)
    budget = (1.0 - sparsity) * sizes.sum()
    while True:
        free = ~dense
        epsilon = (budget - sizes[dense].sum()) / (ratios[free] * sizes[free]).sum()
        density = np.where(dense, 1.0, epsilon * ratios)
        over = free & (density > 1.0)
        if not over.any():
            return [float(1.0 - d) for d in np.clip(density, 0.0, 1.0)]
        dense |= over


def _lamp_scores(kernel: np.ndarray) -> np.ndarray:
    squares = np.square(kernel.ravel(), dtype=np.float64)
    order = np.argsort(squares)
    ordered = squares[order]
    # the sum of the squares from each weight to the largest (suffix sums of the sorted squares),
    # computed in place: one float64 copy of the kernel besides `squares`, not four
    suffix = np.cumsum(ordered[::-1])[::-1]
    np.maximum(suffix, np.finfo(np.float64).tiny, out=suffix)
    np.divide(ordered, suffix, out=ordered)
    del suffix
    squares[order] = ordered  # `squares` becomes the scores
    return squares


def _global_threshold(scores: Sequence[np.ndarray], sparsity: float) -> list[float]:
    total = sum(score.size for score in scores)
    drop = int(round(sparsity * total))
    if drop == 0:
        return [0.0] * len(scores)
    # The `drop` lowest scores of the model go, ties broken by position (kernel order, then
    # index), as one stable sort over all the scores would. Only the threshold (the drop-th
    # smallest score) is needed: it is found by bisection on the scores' bit patterns, which
    # order like the values because scores are >= 0, so no model-sized copy is made (a sort and
    # its rank arrays took 600 MB more on ResNet50's 25M weights).
    dtype = np.result_type(*scores)
    unsigned = np.uint32 if dtype == np.float32 else np.uint64
    bits = [np.ascontiguousarray(score, dtype).view(unsigned) for score in scores]
    low, high = 0, max(int(b.max()) for b in bits)
    while low < high:
        middle = (low + high) // 2
        if sum(int(np.count_nonzero(b <= middle)) for b in bits) >= drop:
            high = middle
        else:
            low = middle + 1
    below = [int(np.count_nonzero(b < low)) for b in bits]
    ties_left = drop - sum(below)  # scores equal to the threshold go first come, first served
    targets = []
    for kernel_bits, count in zip(bits, below, strict=True):
        taken = min(int(np.count_nonzero(kernel_bits == low)), ties_left)
        ties_left -= taken
        targets.append((count + taken) / kernel_bits.size)
    return targets


def density_scales(targets: Sequence[float], sparsity: float) -> list[float]:
    """`scale_i = (1 - s_i) / (1 - s)`: how much denser than the overall kernel `i` stays.

    Example:
        >>> density_scales([0.0, 0.75], 0.5)
        [2.0, 0.5]
    """
    if sparsity == 0.0:
        return [1.0] * len(targets)
    return [float((1.0 - t) / (1.0 - sparsity)) for t in targets]
