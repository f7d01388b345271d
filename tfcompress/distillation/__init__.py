"""Knowledge distillation: a `Distiller` model and the losses it combines.

Example:
    >>> import tfcompress as tfc
    >>> from tfcompress.models import build_digits_cnn
    >>> d = tfc.Distiller(teacher=build_digits_cnn(width=8), student=build_digits_cnn(width=4))
    >>> d.compile(distillation_loss_fn=[tfc.distillation.LogitsKL(temperature=4),
    ...                                 tfc.distillation.FeatureLoss("relu2")])
    >>> sorted(d.projections)
    ['1_0']
"""

from tfcompress.distillation.distiller import Distiller
from tfcompress.distillation.losses import (
    AngleLoss,
    DistillationLoss,
    FeatureLoss,
    LogitsKL,
    NonTargetKL,
    PairwiseDistanceLoss,
    TeacherCorrectKL,
)

__all__ = [
    "AngleLoss",
    "DistillationLoss",
    "Distiller",
    "FeatureLoss",
    "LogitsKL",
    "NonTargetKL",
    "PairwiseDistanceLoss",
    "TeacherCorrectKL",
]
