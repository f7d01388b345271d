"""Channel pruning to a latency or MACs target, measured on the LiteRT interpreter.

`prune_channels(model, latency_ms=...)`, `latency_ratio=...` or `macs_ratio=...` come here.

1. Cost table. Every Conv/Dense layer and every depthwise convolution is timed alone on the
   LiteRT interpreter (a one-layer model converted in `latency_mode`, batch 1, XNNPACK,
   `threads` threads): the per-layer latency lookup table. Layers of one shape are timed once. For a MACs target the
   cost of a layer is its multiply-accumulates instead.
2. Cost model. A layer's cost scales with the channels it keeps: `in x out` for a Conv/Dense,
   `channels` for a depthwise convolution. The unpruned model is timed too, and what the layers
   do not explain (the input quantize, pooling, the interpreter's overhead) stays constant.
3. Selection. In each prunable channel group (the output channels of a Conv/Dense, merged across
   residual adds so that the groups stay aligned) a channel is removed when its weight norm
   (L1, relative to the mean of its group) is below `lam` times the time one channel of that
   group costs (relative to the mean over groups). One number `lam` is searched so that the model
   meets the target; no group loses more than `max_fraction` of its channels or its last one.
4. Check. For a latency target the pruned model is converted (`latency_mode`) and timed
   (`bisect_goal`): while it is slower than the target, the predicted goal is lowered by the
   measured shortfall (at least 3%); once one goal met the target and another missed, the goal
   is bisected between them (at most `_ROUNDS` measurements in all), so the result lands near
   the target rather than at maximum pruning. A target that even the most pruned model (every
   group at `max_fraction`) misses is an error that says the best reached.

`latency_mode` says which file the target is about. The default, `"float32"`, times float32
files. An int8 file gains less from pruning (its convolutions are cheaper next to the fixed
costs: quantize, pooling, the interpreter), so a target stated for the deployed int8 file is
searched with `latency_mode="int8"`: the table and every check then time int8 files. Latency
does not depend on the calibration values, so the timing files are calibrated on at most
`_TIMING_SAMPLES` of `representative_data`, or on random inputs when none is given.

Groups that reach a model output or a layer that mixes channel positions (Flatten, Reshape,
Concatenate, a shared layer) are left whole; `ChannelPruningReport.left_whole` names them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np

from tfcompress.core import catalog
from tfcompress.core.results import Compressed
from tfcompress.export import convert
from tfcompress.pruning.structured import (
    _channel_scores,
    _ChannelGroups,
    _is_producer,
    _trace,
    apply_keep,
)
from tfcompress.tflite.runtime import benchmark_tflite

LatencyFn = Callable[[bytes], float]  # a .tflite file -> its latency in milliseconds
_log = logging.getLogger("tfcompress")
_ROUNDS = 7
_RUNS = 30
_LATENCY_MODES = ("float32", "int8")
_TIMING_SAMPLES = 16


@dataclass
class ChannelPruningReport:
    """What `prune_channels` removed, and what it reached for a target.

    Attributes:
        target_kind: `"fraction"`, `"latency_ms"`, `"latency_ratio"` or `"macs_ratio"`.
        target: the target as given.
        reached: the same quantity measured on the pruned model (ms, or a ratio of the dense one;
            for a fraction, the share of the prunable groups' channels removed).
        dense_ms: median latency of the unpruned model (latency targets; else None).
        pruned_ms: median latency of the pruned model (latency targets; else None).
        dense_macs: multiply-accumulates of the unpruned model; pruned_macs: of the pruned one.
        rounds: convert-and-time rounds the latency search took.
        latency_mode: the file the latencies were measured on (`"float32"` or `"int8"`).
        kept: `{producer layer names: [kept, total]}` per pruned channel group.
        left_whole: `{producer layer names: why}` per group that cannot be pruned by channel.

    Example:
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.pruning import prune_channels
        >>> small, report = prune_channels(
        ...     build_digits_cnn(width=16), macs_ratio=0.6, return_report=True
        ... )
        >>> report.reached <= 0.6, "logits" in report.left_whole
        (True, True)
    """

    target_kind: str
    target: float
    reached: float
    dense_macs: int
    pruned_macs: int
    dense_ms: float | None = None
    pruned_ms: float | None = None
    rounds: int = 0
    latency_mode: str = "float32"
    kept: dict[str, list[int]] = field(default_factory=dict)
    left_whole: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready values."""
        return asdict(self)


@dataclass
class _Cost:
    layer: Any
    cost: float
    in_group: int | None  # root of the channel group of its input (None: not pruned)
    out_group: int | None
    depthwise: bool


def layer_macs(layer: Any) -> int:
    """Multiply-accumulates of one batch-1 call of a Conv/Dense/depthwise layer (0 for others).

    Example:
        >>> import keras
        >>> dense = keras.layers.Dense(3)
        >>> _ = keras.Sequential([keras.Input((4,)), dense])
        >>> layer_macs(dense)
        12
    """
    if catalog.is_depthwise(layer):
        return int(np.prod(layer.output.shape[1:])) * int(np.prod(layer.kernel.shape[:-2]))
    if _is_producer(layer):
        return int(np.prod(layer.output.shape[1:])) * int(np.prod(layer.kernel.shape[:-1]))
    return 0


def _costs(
    model: keras.Model,
    groups: _ChannelGroups,
    of_tensor: dict[int, int | None],
    latency: bool,
    threads: int,
    mode: str = "float32",
    latency_of: LatencyFn | None = None,
) -> list[_Cost]:
    def root(tensor: Any) -> int | None:
        group = of_tensor.get(id(tensor))
        if group is None or groups.find(group) in groups.fixed:
            return None
        return groups.find(group)

    table: dict[str, float] = {}
    costs = []
    for layer in model.layers:
        if not (_is_producer(layer) or catalog.is_depthwise(layer)):
            continue
        if latency:
            key = _shape_key(layer)
            if key not in table:
                table[key] = _time_alone(layer, threads, mode, latency_of)
            cost = table[key]
        else:
            cost = float(layer_macs(layer))
        costs.append(
            _Cost(layer, cost, root(layer.input), root(layer.output), catalog.is_depthwise(layer))
        )
    return costs


def _shape_key(layer: Any) -> str:
    config = {k: v for k, v in layer.get_config().items() if k not in ("name", "trainable")}
    return f"{type(layer).__name__}|{tuple(layer.input.shape[1:])}|{sorted(config.items())!r}"


def _time_alone(
    layer: Any, threads: int, mode: str = "float32", latency_of: LatencyFn | None = None
) -> float:
    """Latency (ms) of a model made of this one layer, converted in `mode`.

    Measured by `latency_of`, or as the median of LiteRT runs on this machine.
    """
    config = dict(layer.get_config(), name="timed")
    alone = keras.Sequential(
        [keras.Input(tuple(layer.input.shape[1:])), type(layer).from_config(config)]
    )
    flat = _convert_to_time(alone, mode)
    if latency_of is not None:
        return float(latency_of(flat))
    return benchmark_tflite(flat, threads=threads, runs=_RUNS, warmup=3).median_ms


def _random_inputs(model: keras.Model) -> np.ndarray:
    """Calibration inputs for a file that is only timed (its latency ignores the values)."""
    shape = (_TIMING_SAMPLES, *tuple(model.inputs[0].shape[1:]))
    return np.random.default_rng(0).uniform(-1.0, 1.0, shape).astype("float32")


def _convert_to_time(model: keras.Model, mode: str, data: Any = None) -> bytes:
    """The file a latency is measured on: float32, or int8 calibrated on a few inputs."""
    if mode != "int8":
        return convert(model, mode, check=False)
    data = _random_inputs(model) if data is None else data
    return convert(model, mode, data, num_samples=_TIMING_SAMPLES, check=False)


def _predict(costs: list[_Cost], fractions: dict[int, float], rest: float) -> float:
    total = rest
    for item in costs:
        f_in = fractions.get(item.in_group, 1.0) if item.in_group is not None else 1.0
        if item.depthwise:
            total += item.cost * f_in
        else:
            f_out = fractions.get(item.out_group, 1.0) if item.out_group is not None else 1.0
            total += item.cost * f_in * f_out
    return total


def _keep_for(
    lam: float,
    scores: dict[int, np.ndarray],
    unit_cost: dict[int, float],
    max_fraction: float,
) -> dict[int, np.ndarray]:
    mean_cost = float(np.mean(list(unit_cost.values()))) or 1.0
    keep = {}
    for group, score in scores.items():
        size = score.size
        most = min(int(np.floor(max_fraction * size)), size - 1)
        removed = min(int(np.sum(score < lam * unit_cost[group] / mean_cost)), most)
        keep[group] = np.sort(np.argsort(-score, kind="stable")[: size - removed])
    return keep


def _search(
    costs: list[_Cost],
    scores: dict[int, np.ndarray],
    unit_cost: dict[int, float],
    rest: float,
    goal: float,
    max_fraction: float,
) -> dict[int, np.ndarray]:
    """The least pruning (smallest `lam`) whose predicted cost is at most `goal`."""

    def predicted(keep: dict[int, np.ndarray]) -> float:
        return _predict(costs, {g: keep[g].size / scores[g].size for g in keep}, rest)

    low, high = 0.0, 1.0
    while predicted(_keep_for(high, scores, unit_cost, max_fraction)) > goal and high < 1e6:
        high *= 2.0
    for _ in range(40):
        middle = (low + high) / 2.0
        if predicted(_keep_for(middle, scores, unit_cost, max_fraction)) > goal:
            low = middle
        else:
            high = middle
    return _keep_for(high, scores, unit_cost, max_fraction)


def _check_target(kind: str, value: float, max_fraction: float, mode: str, data: Any) -> None:
    if kind == "latency_ms" and not value > 0:
        raise ValueError(f"latency_ms must be a positive number of milliseconds; got {value!r}.")
    if kind in ("latency_ratio", "macs_ratio") and not 0.0 < value <= 1.0:
        raise ValueError(
            f"{kind} must be in (0, 1] (a fraction of the unpruned model); got {value!r}."
        )
    if not 0.0 < max_fraction < 1.0:
        raise ValueError(f"max_fraction must be in (0, 1); got {max_fraction!r}.")
    if mode not in _LATENCY_MODES:
        raise ValueError(
            f"latency_mode must be one of {_LATENCY_MODES} (the file the latency target is "
            f"about); got {mode!r}."
        )


def channel_report(
    model: keras.Model,
    small: keras.Model,
    groups: Any,
    keep: dict[int, np.ndarray],
    counts: dict[int, int],
    kind: str,
    target: float,
    reached: float,
    **extra: Any,
) -> ChannelPruningReport:
    """The `ChannelPruningReport` of `small`, made from `model` by keeping `keep` of each group
    (`counts`: the group's channels before pruning)."""
    kept = {
        ", ".join(layer.name for layer in groups.producers[g]): [int(k.size), counts[g]]
        for g, k in keep.items()
    }
    return ChannelPruningReport(
        target_kind=kind,
        target=target,
        reached=reached,
        dense_macs=sum(layer_macs(layer) for layer in model.layers),
        pruned_macs=sum(layer_macs(layer) for layer in small.layers),
        kept=kept,
        left_whole=groups.left_whole(),
        **extra,
    )


def prune_to_target(
    model: keras.Model,
    kind: str,
    value: float,
    *,
    threads: int = 1,
    max_fraction: float = 0.9,
    mode: str = "float32",
    representative_data: Any = None,
    latency_of: LatencyFn | None = None,
) -> Compressed:
    """`prune_channels` with a `latency_ms`, `latency_ratio` or `macs_ratio` target.

    Args:
        model: a built functional or Sequential model (not modified).
        kind: `"latency_ms"`, `"latency_ratio"` or `"macs_ratio"`.
        value: the target (milliseconds, or a fraction of the unpruned model).
        threads: interpreter threads for the latency measurements.
        max_fraction: most channels one group may lose.
        mode: `"float32"` or `"int8"`: the file the layers and the whole model are timed on.
        representative_data: calibration inputs of the int8 timing files (`mode="int8"`; at
            most `_TIMING_SAMPLES` are used; random inputs when None).
        latency_of: measures one `.tflite` file's latency in milliseconds (for example on
            the target device); the median of LiteRT runs on this machine when None.

    Returns:
        A `Compressed` result: `.model`, the pruned model, and `.report`, its
        `ChannelPruningReport`.

    Raises:
        ValueError: a bad argument, or a target the model cannot reach (says the best reached).

    Example:
        >>> from tfcompress.models import build_digits_cnn
        >>> small, report = prune_to_target(build_digits_cnn(width=16), "macs_ratio", 0.5)
        >>> report.pruned_macs < report.dense_macs
        True
    """
    _check_target(kind, value, max_fraction, mode, representative_data)
    groups, of_tensor = _trace(model)
    latency = kind != "macs_ratio"
    costs = _costs(model, groups, of_tensor, latency, threads, mode, latency_of)
    scores: dict[int, np.ndarray] = {}
    for group, producers in groups.producers.items():
        if groups.find(group) == group and group not in groups.fixed:
            scores[group] = _channel_scores(producers) / len(producers)
    unit_cost = {g: 0.0 for g in scores}
    for item in costs:
        for group in {item.in_group, item.out_group} - {None}:
            unit_cost[group] += item.cost / scores[group].size  # type: ignore[index]
    layers_total = sum(item.cost for item in costs)
    left_whole = groups.left_whole()
    if not scores:
        raise ValueError(
            f"No channel group of '{model.name}' can be pruned by channel; left whole: "
            + "; ".join(f"{names} ({why})" for names, why in left_whole.items())
        )

    def finish(keep: dict[int, np.ndarray], reached: float, **extra: Any) -> Compressed:
        small = apply_keep(model, groups, of_tensor, keep)
        counts = {g: int(scores[g].size) for g in keep}
        return Compressed(
            small, channel_report(model, small, groups, keep, counts, kind, value, reached, **extra)
        )

    if not latency:
        goal = value * layers_total
        most = _keep_for(np.inf, scores, unit_cost, max_fraction)
        best = _predict(costs, {g: most[g].size / scores[g].size for g in most}, 0.0)
        if best > goal * (1 + 1e-9):
            raise ValueError(
                f"macs_ratio={value} cannot be reached by channel pruning '{model.name}' with "
                f"max_fraction={max_fraction}: the best reached is {best / layers_total:.3f} of "
                f"its MACs. Raise max_fraction or the target{_whole_hint(left_whole)}."
            )
        keep = _search(costs, scores, unit_cost, 0.0, goal, max_fraction)
        reached = _predict(costs, {g: keep[g].size / scores[g].size for g in keep}, 0.0)
        return finish(keep, reached / layers_total)

    def measure(candidate: keras.Model) -> float:
        flat = _convert_to_time(candidate, mode, representative_data)
        if latency_of is not None:
            return float(latency_of(flat))
        return benchmark_tflite(flat, threads=threads, runs=_RUNS, warmup=5).median_ms

    dense_ms = measure(model)
    target_ms = value if kind == "latency_ms" else value * dense_ms
    rest = max(dense_ms - layers_total, 0.0)
    scale = dense_ms / (rest + layers_total)  # the table's sum in the whole model's milliseconds
    keep = {g: np.arange(s.size) for g, s in scores.items()}
    measured, rounds = dense_ms, 0
    if dense_ms > target_ms:
        most = _keep_for(np.inf, scores, unit_cost, max_fraction)

        def timed(goal: float) -> tuple[dict[int, np.ndarray], float]:
            candidate = _search(costs, scores, unit_cost, rest, goal, max_fraction)
            if goal <= most_goal:
                candidate = most
            ms = measure(apply_keep(model, groups, of_tensor, candidate))
            _log.info("latency pruning: %.3f ms (target %.3f ms)", ms, target_ms)
            return candidate, ms

        most_goal = _predict(costs, {g: most[g].size / scores[g].size for g in most}, rest)
        found = bisect_goal(timed, target_ms / scale, target_ms, dense_ms / scale, most_goal)
        rounds = found.rounds
        if found.keep is None:
            raise ValueError(
                f"{kind}={value} ({target_ms:.3f} ms) cannot be reached by channel pruning "
                f"'{model.name}' (dense: {dense_ms:.3f} ms, {threads} thread(s), {mode} file): "
                f"the best reached is {found.best_ms:.3f} ms ({found.best_ms / dense_ms:.2f}x) "
                f"with every group at max_fraction={max_fraction}. Raise the target or "
                f"max_fraction, or quantize as well{_whole_hint(left_whole)}."
            )
        keep, measured = found.keep, found.measured
    reached = measured if kind == "latency_ms" else measured / dense_ms
    return finish(
        keep, reached, dense_ms=dense_ms, pruned_ms=measured, rounds=rounds, latency_mode=mode
    )


@dataclass
class GoalSearch:
    """What `bisect_goal` found: the kept channels (None: the target was missed), their
    measured latency, the convert-and-time rounds, and the fastest latency measured."""

    keep: Any
    measured: float
    rounds: int
    best_ms: float


def bisect_goal(
    timed: Any,
    goal: float,
    target: float,
    dense_goal: float,
    most_goal: float,
    rounds: int = _ROUNDS,
    close: float = 0.97,
) -> GoalSearch:
    """Search the predicted-cost goal whose measured latency lands just under `target`.

    Timings are noisy and the cost model is approximate, so the goal is corrected by
    measurement: while no candidate met the target, the goal is lowered by the measured
    shortfall (at least 3%); once one goal met it and another missed, the goal is bisected
    between them, so the result lands near the target instead of at maximum pruning. The
    search stops at a candidate within `close` of the target, after `rounds` measurements, or
    when the bracket is narrower than 1%. The last round before giving up tries the most pruned
    model (`most_goal`), which tells the best reachable latency.

    Args:
        timed: `goal -> (keep, measured_ms)`: prune to a predicted cost of `goal` and time it.
        goal: the first goal (the target in the cost model's units).
        target: the latency to meet, in ms.
        dense_goal: the unpruned model's predicted cost (the first goal known to miss).
        most_goal: the most pruned model's predicted cost (the lowest goal).
        rounds: most measurements.
        close: a candidate measured at or above `close * target` (and at most `target`) ends
            the search.

    Returns:
        A `GoalSearch`; its `keep` is that of the least pruned candidate that met the target.

    Example:
        >>> def timed(goal):  # a cost model 20% optimistic, as a stand-in for a real model
        ...     return goal, 1.2 * goal
        >>> found = bisect_goal(timed, goal=0.55, target=0.55, dense_goal=1.0, most_goal=0.2)
        >>> 0.97 * 0.55 <= found.measured <= 0.55
        True
    """
    high = dense_goal  # the largest goal known to miss
    low: tuple[float, Any, float] | None = None  # (goal, keep, ms) of the best goal that met
    best_ms = float("inf")
    used = 0
    while used < rounds:
        if used == rounds - 1 and low is None:
            goal = min(goal, most_goal)  # the last chance: the most pruned model
        goal = max(goal, most_goal)
        used += 1
        keep, ms = timed(goal)
        best_ms = min(best_ms, ms)
        if ms <= target:
            if low is None or goal > low[0]:
                low = (goal, keep, ms)
            if ms >= close * target:
                break
        else:
            high = min(high, goal)
            if goal <= most_goal:
                break  # even the most pruned model misses
        if low is None:
            goal = goal * min(target / ms, close)
        elif high - low[0] <= 0.01 * high:
            break
        else:
            goal = (high + low[0]) / 2.0
    if low is None:
        return GoalSearch(None, best_ms, used, best_ms)
    return GoalSearch(low[1], low[2], used, best_ms)


def _whole_hint(left_whole: dict[str, str]) -> str:
    if not left_whole:
        return ""
    names = list(left_whole)[:4]
    return f" (left whole: {'; '.join(f'{n} ({left_whole[n]})' for n in names)})"
