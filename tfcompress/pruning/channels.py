"""`prune_channels`: structured pruning to a fraction, a MACs target or a latency target.

The fraction and MACs targets use the channel groups of `tfcompress.pruning.structured`; a
latency target uses the per-layer latency table of `tfcompress.pruning.latency`.
"""

from __future__ import annotations

from typing import Any

import keras

from tfcompress.core.results import Compressed
from tfcompress.pruning.latency import LatencyFn, channel_report, prune_to_target
from tfcompress.pruning.structured import _keep_indices, _trace, apply_keep


def prune_channels(
    model: keras.Model,
    fraction: float | None = None,
    *,
    latency_ms: float | None = None,
    latency_ratio: float | None = None,
    macs_ratio: float | None = None,
    threads: int = 1,
    max_fraction: float = 0.9,
    latency_mode: str = "float32",
    representative_data: Any = None,
    latency_of: LatencyFn | None = None,
    return_report: bool = False,
) -> keras.Model | Compressed:
    """Remove filters/neurons: `fraction` of every channel group, or as many as a target needs.

    Give exactly one of `fraction`, `latency_ms`, `latency_ratio`, `macs_ratio` (`fraction=0.5`
    when none is given). With a latency target, each Conv/Dense/depthwise layer is timed alone on
    the LiteRT interpreter (a per-layer latency lookup table), channels are removed where they
    cost the most time for the least weight norm, and the pruned model is converted and timed
    until it meets the target (`tfcompress.pruning.latency`).

    Args:
        model: a built functional or Sequential model (not modified).
        fraction: share of channels to remove per group, in [0, 1).
        latency_ms: target LiteRT median latency of one batch-1 call, in milliseconds.
        latency_ratio: target latency as a fraction of the unpruned model's, in (0, 1].
        macs_ratio: target multiply-accumulates as a fraction of the unpruned model's, in (0, 1].
        threads: interpreter threads for the latency measurements.
        max_fraction: most channels any one group may lose with a target, in (0, 1).
        latency_mode: the file a latency target is about and is measured on: `"float32"`
            (default) or `"int8"` (the deployed integer file; its per-layer table and checks
            time int8 files, and pruning gains it less than float32).
        representative_data: calibration inputs of the int8 timing files (a few are used;
            random inputs when None: latency does not depend on the values).
        latency_of: measures one `.tflite` file's latency in milliseconds, for a target on
            another runtime (the phone, via its own benchmark tool); by default the median of
            LiteRT runs on this machine with `threads` threads.

        return_report: return a `Compressed` result instead: `.model` and `.report`, a
            `ChannelPruningReport` (the latency or MACs reached, the channels kept per group,
            the groups left whole and why); it unpacks as `small, report = ...`.

    Returns:
        A smaller plain Keras model (fewer parameters and FLOPs). Fine-tune it briefly: it
        computes a different function than `model`.

    Raises:
        ValueError: a bad argument, or a target the model cannot reach (the message says the
            best reached).

    Example:
        >>> from tfcompress.models import build_digits_cnn
        >>> from tfcompress.pruning import prune_channels
        >>> model = build_digits_cnn(width=32)
        >>> small = prune_channels(model, 0.5)
        >>> small.count_params() < 0.3 * model.count_params()
        True
        >>> fewer, report = prune_channels(model, macs_ratio=0.5, return_report=True)
        >>> report.reached <= 0.5
        True
    """
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise ValueError(
            "prune_channels expects a built functional or Sequential keras.Model; got "
            f"{type(model).__name__}."
        )
    targets = {
        "fraction": fraction,
        "latency_ms": latency_ms,
        "latency_ratio": latency_ratio,
        "macs_ratio": macs_ratio,
    }
    given = [name for name, value in targets.items() if value is not None]
    if len(given) > 1:
        raise ValueError(
            f"prune_channels takes one target; got {', '.join(given)}. Keep one of them."
        )
    if given and given[0] != "fraction":
        result = prune_to_target(
            model,
            given[0],
            float(targets[given[0]]),  # type: ignore[arg-type]
            threads=threads,
            max_fraction=max_fraction,
            mode=latency_mode,
            representative_data=representative_data,
            latency_of=latency_of,
        )
        return result if return_report else result.model
    fraction = 0.5 if fraction is None else fraction
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not (0.0 <= fraction < 1.0)
    ):
        raise ValueError(f"fraction must be a number in [0, 1); got {fraction!r}.")
    groups, of_tensor = _trace(model)
    keep = _keep_indices(groups, float(fraction))
    small = apply_keep(model, groups, of_tensor, keep)
    if not return_report:
        return small
    counts = {g: _channel_count(groups, g) for g in keep}
    removed = 1.0 - sum(k.size for k in keep.values()) / max(sum(counts.values()), 1)
    report = channel_report(model, small, groups, keep, counts, "fraction", fraction, removed)
    return Compressed(small, report)


def _channel_count(groups: Any, group: int) -> int:
    """Channels of a group before pruning: the output channels of its first producer."""
    return int(groups.producers[group][0].output.shape[-1])
