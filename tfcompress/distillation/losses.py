"""Distillation losses: what the student should copy from the teacher.

Each loss compares one teacher tensor with one student tensor (final logits or an intermediate
layer picked by name) and returns a scalar averaged over the batch of one replica. The
`Distiller` extracts the tensors, adds a learned projection when feature widths differ, weights
the losses and scales them for `tf.distribute`.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = [
    "AngleLoss",
    "DistillationLoss",
    "FeatureLoss",
    "LogitsKL",
    "NonTargetKL",
    "PairwiseDistanceLoss",
    "TeacherCorrectKL",
    "per_sample_loss",
]

_EPSILON = 1e-12


def per_sample_loss(loss_fn: Any, y_true: Any, y_pred: Any) -> Any:
    """The unreduced loss of a Keras loss object or plain loss function.

    Calling a `keras.losses.Loss` directly would already divide by the number of replicas under
    `tf.distribute`; the Distiller does that scaling once, for the sum of all its losses.
    """
    if isinstance(loss_fn, keras.losses.Loss):
        return loss_fn.call(y_true, y_pred)
    return loss_fn(y_true, y_pred)


def _check_weight(weight: float, what: str) -> float:
    if not isinstance(weight, (int, float)) or weight < 0:
        raise ValueError(f"{what}: `weight` must be a number >= 0, got {weight!r}.")
    return float(weight)


def _flatten(features: Any) -> Any:
    """(batch, ...) -> (batch, features) for relations between samples."""
    return ops.reshape(features, (ops.shape(features)[0], -1))


def _smooth_l1(a: Any, b: Any) -> Any:
    """Huber loss with delta 1: robust to the few pairs whose relation changes a lot."""
    diff = ops.abs(a - b)
    return ops.mean(ops.where(diff < 1.0, 0.5 * ops.square(diff), diff - 0.5))


@keras.saving.register_keras_serializable(package="tfcompress")
class DistillationLoss:
    """Base class: compares a teacher tensor with a student tensor.

    Subclasses implement `compute(teacher, student) -> scalar`. `teacher_layer` and
    `student_layer` name the layers whose outputs are compared (`None`: the model output).

    Args:
        weight: multiplier of this loss in the distillation term.
        teacher_layer: teacher layer name, or `None` for the teacher's output.
        student_layer: student layer name, or `None` (then the teacher's layer name is reused
            when one is given, else the student's output).
        name: name of the loss in the training history.

    Example:
        >>> import tfcompress as tfc
        >>> tfc.distillation.LogitsKL(temperature=4).name
        'logits_kl'
    """

    default_name = "distillation"
    #: whether a learned projection may map student features to the teacher's width
    projects_features = False
    #: whether `compute` takes the batch's labels too (`compute(teacher, student, labels=y)`)
    uses_labels = False

    def __init__(
        self,
        weight: float = 1.0,
        teacher_layer: str | None = None,
        student_layer: str | None = None,
        name: str | None = None,
    ) -> None:
        self.weight = _check_weight(weight, type(self).__name__)
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer if student_layer is not None else teacher_layer
        self.name = name or self.default_name

    def compute(self, teacher: Any, student: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement compute().")

    def get_config(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "teacher_layer": self.teacher_layer,
            "student_layer": self.student_layer,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DistillationLoss:
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"


@keras.saving.register_keras_serializable(package="tfcompress")
class LogitsKL(DistillationLoss):
    """KL divergence between temperature-softened teacher and student distributions.

    The loss is multiplied by `temperature**2` so its gradients keep the same magnitude as the
    hard-label loss whatever the temperature (Hinton et al., 2015).

    Args:
        temperature: softmax temperature, > 0. Higher values expose more of the teacher's
            "dark knowledge" about wrong classes.
        loss: `None` for the exact KL divergence on logits, or a Keras loss (object, name or
            function) applied to `(teacher_probabilities, student_probabilities)`, such as
            `keras.losses.KLDivergence()` from the keras.io example.
        weight, teacher_layer, student_layer, name: see `DistillationLoss`.

    Example:
        >>> import numpy as np, tfcompress as tfc
        >>> loss = tfc.distillation.LogitsKL(temperature=2)
        >>> float(loss.compute(np.ones((1, 3), "float32"), np.ones((1, 3), "float32")))
        0.0
    """

    default_name = "logits_kl"

    def __init__(
        self,
        temperature: float = 3.0,
        loss: Any = None,
        weight: float = 1.0,
        teacher_layer: str | None = None,
        student_layer: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(weight, teacher_layer, student_layer, name)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise ValueError(f"LogitsKL: `temperature` must be a number > 0, got {temperature!r}.")
        if temperature <= 0:
            raise ValueError(
                f"LogitsKL: `temperature` must be > 0, got {temperature}; use 1 for plain "
                "softmax or 2-8 for the usual softened targets."
            )
        self.temperature = float(temperature)
        self.loss = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss

    def compute(self, teacher: Any, student: Any) -> Any:
        teacher = ops.convert_to_tensor(teacher) / self.temperature
        student = ops.convert_to_tensor(student) / self.temperature
        if self.loss is None:
            teacher_probs = ops.softmax(teacher, axis=-1)
            per_sample = ops.sum(
                teacher_probs
                * (ops.log_softmax(teacher, axis=-1) - ops.log_softmax(student, axis=-1)),
                axis=-1,
            )
        else:
            per_sample = per_sample_loss(
                self.loss, ops.softmax(teacher, axis=-1), ops.softmax(student, axis=-1)
            )
        return ops.mean(per_sample) * (self.temperature**2)

    def get_config(self) -> dict[str, Any]:
        loss = None if self.loss is None else keras.losses.serialize(self.loss)
        return {**super().get_config(), "temperature": self.temperature, "loss": loss}


class _ExactLogitsKL(LogitsKL):
    """A `LogitsKL` computed on the logits only (no Keras loss argument), temperature 1 by default.

    A subclass that can only compare the models' outputs says why in `outputs_only`; naming a
    `teacher_layer` is then refused with that reason.
    """

    outputs_only: str | None = None

    def __init__(
        self,
        temperature: float = 1.0,
        weight: float = 1.0,
        teacher_layer: str | None = None,
        student_layer: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(temperature, None, weight, teacher_layer, student_layer, name)
        if teacher_layer is not None and self.outputs_only is not None:
            raise ValueError(
                f"{type(self).__name__}: {self.outputs_only}; got teacher_layer={teacher_layer!r}. "
                "Use LogitsKL or FeatureLoss for layers."
            )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("loss")
        return config


@keras.saving.register_keras_serializable(package="tfcompress")
class NonTargetKL(_ExactLogitsKL):
    """KL divergence over the classes other than the teacher's top class ("dark knowledge" only).

    Both distributions are renormalized over the classes the teacher does not predict, so the
    loss says how the teacher ranks the wrong classes and nothing about the predicted class:
    its gradient on the student's logit of that class is zero, and the hard-label loss alone
    decides how fast the student fits the labels (the non-target term of decoupled knowledge
    distillation, Zhao et al., 2022, with the teacher's prediction standing for the label).
    It is an option, not the default (docs/dev/decisions/2026-11-24-distiller-defaults.md).

    Args:
        temperature: softmax temperature, > 0 (the loss is multiplied by `temperature**2`).
        weight, teacher_layer, student_layer, name: see `DistillationLoss`.

    Example:
        >>> import numpy as np, tfcompress as tfc
        >>> loss = tfc.distillation.NonTargetKL()
        >>> teacher = np.array([[9.0, 2.0, 0.0]], "float32")
        >>> # the same ranking of the wrong classes: nothing to learn, whatever the top logit
        >>> round(float(loss.compute(teacher, np.array([[0.0, 2.0, 0.0]], "float32"))), 6)
        0.0
    """

    default_name = "non_target_kl"

    def compute(self, teacher: Any, student: Any) -> Any:
        teacher = ops.convert_to_tensor(teacher) / self.temperature
        student = ops.cast(ops.convert_to_tensor(student), teacher.dtype) / self.temperature
        top = ops.one_hot(ops.argmax(teacher, axis=-1), ops.shape(teacher)[-1], dtype="bool")
        # the top class leaves both softmaxes (a very negative logit), then its terms are dropped
        teacher = ops.where(top, -1e9, teacher)
        student = ops.where(top, -1e9, student)
        log_teacher = ops.log_softmax(teacher, axis=-1)
        terms = ops.exp(log_teacher) * (log_teacher - ops.log_softmax(student, axis=-1))
        per_sample = ops.sum(ops.where(top, 0.0, terms), axis=-1)
        return ops.mean(per_sample) * (self.temperature**2)


@keras.saving.register_keras_serializable(package="tfcompress")
class TeacherCorrectKL(_ExactLogitsKL):
    """`LogitsKL` on the examples the teacher classifies correctly, zero on the others.

    The Distiller passes the batch's labels; an example whose label is not the teacher's top
    class adds nothing to the distillation term (it still counts in the batch mean), so a
    teacher that is wrong cannot pull the student away from the label there, while the
    hard-label loss keeps training on every example. An option, not the default: see
    `Distiller.compile` for what it measured.

    Args:
        temperature: softmax temperature, > 0 (the loss is multiplied by `temperature**2`).
        weight, teacher_layer, student_layer, name: see `DistillationLoss`.

    Example:
        >>> import numpy as np, tfcompress as tfc
        >>> loss = tfc.distillation.TeacherCorrectKL()
        >>> teacher = np.array([[4.0, 0.0], [4.0, 0.0]], "float32")
        >>> student = np.array([[0.0, 4.0], [0.0, 4.0]], "float32")
        >>> # the teacher is wrong on both labels: nothing to distill
        >>> float(loss.compute(teacher, student, labels=np.array([1, 1])))
        0.0
        >>> float(loss.compute(teacher, student, labels=np.array([0, 1]))) > 0
        True
    """

    default_name = "teacher_correct_kl"
    uses_labels = True
    outputs_only = "compares the models' outputs (class logits) with the labels"

    def compute(self, teacher: Any, student: Any, labels: Any = None) -> Any:
        if labels is None:
            raise ValueError(
                "TeacherCorrectKL.compute: needs the batch's `labels` (class indices or one-hot) "
                "to tell where the teacher is right; the Distiller passes them."
            )
        teacher = ops.convert_to_tensor(teacher)
        labels = ops.convert_to_tensor(labels)
        if len(labels.shape) == len(teacher.shape) and labels.shape[-1] == teacher.shape[-1]:
            labels = ops.argmax(labels, axis=-1)  # one-hot
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        correct = ops.cast(ops.equal(ops.argmax(teacher, axis=-1), labels), teacher.dtype)
        teacher = teacher / self.temperature
        student = ops.cast(ops.convert_to_tensor(student), teacher.dtype) / self.temperature
        log_teacher = ops.log_softmax(teacher, axis=-1)
        per_sample = ops.sum(
            ops.exp(log_teacher) * (log_teacher - ops.log_softmax(student, axis=-1)), axis=-1
        )
        return ops.mean(per_sample * correct) * (self.temperature**2)


@keras.saving.register_keras_serializable(package="tfcompress")
class FeatureLoss(DistillationLoss):
    """Match an intermediate student layer to a teacher layer (FitNets hints).

    When the last dimensions (channels) differ, the Distiller learns a linear projection from
    the student's width to the teacher's (a 1x1 convolution for feature maps); it trains with
    the student and is not part of `distiller.student`. Other dimensions must match.

    Args:
        teacher_layer: name of the teacher layer (`None`: the teacher's output).
        student_layer: name of the student layer (default: the same name).
        loss: Keras loss on `(teacher_features, student_features)`, default mean squared error.
        weight, name: see `DistillationLoss`.

    Example:
        >>> import tfcompress as tfc
        >>> tfc.distillation.FeatureLoss("relu2", "relu1").student_layer
        'relu1'
    """

    default_name = "feature"
    projects_features = True

    def __init__(
        self,
        teacher_layer: str | None,
        student_layer: str | None = None,
        loss: Any = "mean_squared_error",
        weight: float = 1.0,
        name: str | None = None,
    ) -> None:
        if teacher_layer is not None and not isinstance(teacher_layer, str):
            raise ValueError(
                f"FeatureLoss: `teacher_layer` must be a layer name or None (the model output), "
                f"got {teacher_layer!r}."
            )
        super().__init__(
            weight, teacher_layer, student_layer, name or f"feature_{teacher_layer or 'output'}"
        )
        self.loss = keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss

    def compute(self, teacher: Any, student: Any) -> Any:
        return ops.mean(per_sample_loss(self.loss, teacher, student))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "loss": keras.losses.serialize(self.loss)}


@keras.saving.register_keras_serializable(package="tfcompress")
class PairwiseDistanceLoss(DistillationLoss):
    """Relational distillation: the student keeps the teacher's distances between samples.

    Distances between every pair of samples in the batch are normalized by their mean, then
    compared with a Huber loss (RKD-D, Park et al., 2019). Widths may differ: only relations
    between samples are compared.

    Example:
        >>> import numpy as np, tfcompress as tfc
        >>> x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
        >>> float(tfc.distillation.PairwiseDistanceLoss().compute(x, 2 * x)) < 1e-6
        True
    """

    default_name = "pairwise_distance"

    def compute(self, teacher: Any, student: Any) -> Any:
        return _smooth_l1(_normalized_distances(teacher), _normalized_distances(student))


def _normalized_distances(features: Any) -> Any:
    flat = _flatten(ops.convert_to_tensor(features))
    squared = ops.sum(ops.square(flat), axis=1)
    gram = ops.matmul(flat, ops.transpose(flat))
    d2 = ops.expand_dims(squared, 1) + ops.expand_dims(squared, 0) - 2.0 * gram
    batch = ops.shape(flat)[0]
    off_diagonal = 1.0 - ops.eye(batch, dtype=flat.dtype)
    # clip before sqrt: its gradient is infinite at 0 (the diagonal)
    distances = ops.sqrt(ops.maximum(d2, _EPSILON)) * off_diagonal
    mean = ops.sum(distances) / ops.maximum(ops.sum(off_diagonal), 1.0)
    return distances / (mean + _EPSILON)


@keras.saving.register_keras_serializable(package="tfcompress")
class AngleLoss(DistillationLoss):
    """Relational distillation: the student keeps the angles formed by triplets of samples.

    For each anchor sample, the cosines between its difference vectors to every other pair of
    samples are compared with a Huber loss (RKD-A, Park et al., 2019). Costs batch**3 memory
    per feature, so use it on small batches or low-dimensional features.

    Example:
        >>> import numpy as np, tfcompress as tfc
        >>> x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
        >>> float(tfc.distillation.AngleLoss().compute(x, 3 * x)) < 1e-6
        True
    """

    default_name = "angle"

    def compute(self, teacher: Any, student: Any) -> Any:
        return _smooth_l1(_angles(teacher), _angles(student))


def _angles(features: Any) -> Any:
    flat = _flatten(ops.convert_to_tensor(features))
    # differences[i, j] = x_j - x_i: the vector from anchor i to sample j
    differences = ops.expand_dims(flat, 0) - ops.expand_dims(flat, 1)
    norms = ops.sqrt(ops.maximum(ops.sum(ops.square(differences), -1, keepdims=True), _EPSILON))
    unit = differences / norms
    return ops.einsum("ijd,ikd->ijk", unit, unit)
