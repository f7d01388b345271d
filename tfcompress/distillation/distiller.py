"""`Distiller`: train a student (float, QAT or pruning-wrapped) to imitate frozen teachers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from tfcompress.core.compat import keras_distillation_module
from tfcompress.distillation.losses import (
    DistillationLoss,
    FeatureLoss,
    LogitsKL,
    per_sample_loss,
)

__all__ = ["Distiller"]

_OUTPUT = "__output__"

# Why: docs/dev/decisions/2026-11-24-distiller-defaults.md (keras.io's alpha=0.1, T=3 left
# small students below the same student trained alone).
DEFAULT_ALPHA = 0.5
DEFAULT_TEMPERATURE = 1.0


class _Untracked:
    """Holds helper models out of Keras's attribute tracking (not saved, not in `layers`)."""

    def __init__(self, **items: Any) -> None:
        self.__dict__.update(items)


def _num_replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


def _check_strategy(models: dict[str, keras.Model]) -> None:
    """Teachers and student must hold variables of the strategy whose scope is open."""
    if not tf.distribute.has_strategy():
        return
    strategy = tf.distribute.get_strategy()
    for role, model in models.items():
        for variable in model.weights:
            if not strategy.extended.variable_created_in_scope(
                getattr(variable, "value", variable)
            ):
                raise ValueError(
                    f"Distiller.compile: the {role} '{model.name}' was built outside the "
                    f"{type(strategy).__name__} scope (its variable '{variable.path}' is not "
                    "distributed). Create the strategy first, then build (or wrap) the teacher, "
                    "the student and the Distiller inside `with strategy.scope():`."
                )


def _output_shape(model: keras.Model, role: str) -> tuple:
    outputs = getattr(model, "outputs", None)
    if not outputs:
        raise ValueError(
            f"Distiller: the {role} '{model.name}' has no symbolic outputs; pass a built "
            "functional or Sequential model (call it on keras.Input first)."
        )
    if len(outputs) != 1:
        raise ValueError(
            f"Distiller: the {role} '{model.name}' has {len(outputs)} outputs; the Distiller "
            "supports single-output models."
        )
    return tuple(outputs[0].shape[1:])


def _layer_output(model: keras.Model, layer_name: str, role: str) -> Any:
    try:
        return model.get_layer(layer_name).output
    except ValueError:
        names = [layer.name for layer in model.layers]
        raise ValueError(
            f"Distiller: the {role} '{model.name}' has no layer named '{layer_name}'. "
            f"Its layers are: {names}. Pass one of these names to the distillation loss."
        ) from None


def _feature_model(model: keras.Model, layer_names: list[str], role: str) -> keras.Model | None:
    """A model sharing `model`'s layers that returns its output and the named layers' outputs."""
    if not layer_names:
        return None
    outputs = {_OUTPUT: model.outputs[0]}
    for name in layer_names:
        outputs[name] = _layer_output(model, name, role)
    return keras.Model(model.inputs, outputs, name=f"{model.name}_features")


def _as_distillation_losses(
    distillation_loss_fn: Any, temperature: float
) -> list[DistillationLoss]:
    """Normalize the keras.io loss function, Keras's own losses and ours to our loss objects."""
    items = (
        list(distillation_loss_fn)
        if isinstance(distillation_loss_fn, (list, tuple))
        else [distillation_loss_fn]
    )
    if not items:
        raise ValueError("Distiller.compile: `distillation_loss_fn` is an empty list.")
    return [_as_distillation_loss(item, temperature) for item in items]


def _as_distillation_loss(item: Any, temperature: float) -> DistillationLoss:
    if isinstance(item, DistillationLoss):
        return item
    keras_distillation = keras_distillation_module()
    if keras_distillation is not None:
        if isinstance(item, keras_distillation.LogitsDistillation):
            return LogitsKL(temperature=item.temperature, loss=_single_loss(item.loss, item))
        if isinstance(item, keras_distillation.FeatureDistillation):
            return FeatureLoss(
                item.teacher_layer_name,
                item.student_layer_name,
                loss=_single_loss(item.loss, item),
            )
    if isinstance(item, (str, keras.losses.Loss)) or callable(item):
        # keras.io: the loss compares softened probabilities, scaled by T**2
        return LogitsKL(temperature=temperature, loss=item)
    raise ValueError(
        f"Distiller.compile: cannot use {item!r} as a distillation loss; pass a Keras loss, "
        "a keras.distillation loss, or a tfcompress.distillation loss."
    )


def _single_loss(loss: Any, owner: Any) -> Any:
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError(
            f"Distiller.compile: {type(owner).__name__} with a nested loss structure is for "
            "multi-output models, which the Distiller does not support; pass one loss."
        )
    return loss


def _unique_names(losses: list[DistillationLoss]) -> list[str]:
    names, seen = [], {}
    for loss in losses:
        count = seen.get(loss.name, 0)
        seen[loss.name] = count + 1
        names.append(loss.name if count == 0 else f"{loss.name}_{count}")
    return names


def _serialize_uncompiled(model: keras.Model) -> dict[str, Any]:
    """The model's config without its own compile settings: the Distiller trains it, and a
    recompiled teacher would only bring an unbuilt optimizer that warns on every load."""
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    return config


@keras.saving.register_keras_serializable(package="tfcompress")
class Distiller(keras.Model):
    """Trains `student` to imitate one or more frozen `teacher` models.

    The teachers run with `training=False` and are frozen (`trainable = False`); only the
    student's weights (and the learned feature projections, which are not part of the student)
    are updated. The loss is `alpha * student_loss + (1 - alpha) * distillation_loss`, where
    the distillation term is the weighted sum of the distillation losses over the teachers.
    `evaluate` and `predict` use the student; the history reports `loss`, `student_loss`,
    `distillation_loss` (and each distillation loss by name when there are several) next to the
    compiled metrics. The student may be a `tfc.quantize_model` model or a
    `tfc.prune_low_magnitude` model (pass the pruning callbacks to `Distiller.fit`).

    Args:
        teacher: a trained model, or a list of them.
        student: the model to train; same output shape as the teacher(s).
        teacher_weights: one weight >= 0 per teacher (default: equal weights summing to 1).
        name: model name.

    Example:
        >>> import keras, tfcompress as tfc
        >>> from tfcompress.models import build_digits_cnn
        >>> split = tfc.data.load_digits()
        >>> d = tfc.Distiller(teacher=build_digits_cnn(width=8), student=build_digits_cnn(width=4))
        >>> d.compile(optimizer="adam", metrics=["accuracy"],
        ...     student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ...     distillation_loss_fn=keras.losses.KLDivergence(), alpha=0.1, temperature=3)
        >>> history = d.fit(split.x_train[:64], split.y_train[:64], epochs=1, verbose=0)
        >>> sorted(history.history)
        ['accuracy', 'distillation_loss', 'loss', 'student_loss']
    """

    def __init__(
        self,
        teacher: keras.Model | Sequence[keras.Model],
        student: keras.Model,
        teacher_weights: Sequence[float] | None = None,
        name: str = "distiller",
        **kwargs: Any,
    ) -> None:
        projection_widths = kwargs.pop("projection_widths", None)
        super().__init__(name=name, **kwargs)
        teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        if not teachers:
            raise ValueError("Distiller: `teacher` is an empty list; pass at least one model.")
        student_shape = _output_shape(student, "student")
        for model in teachers:
            teacher_shape = _output_shape(model, "teacher")
            if teacher_shape != student_shape:
                raise ValueError(
                    f"Distiller: the teacher '{model.name}' outputs shape {teacher_shape} but "
                    f"the student '{student.name}' outputs {student_shape}; both must predict "
                    "the same classes (build the student with the teacher's number of outputs)."
                )
            if model is student:
                raise ValueError("Distiller: the teacher and the student are the same model.")
            # frozen: never in the trainable variables, so no optimizer can update them
            model.trainable = False
        self.teachers = teachers
        self.student = student
        self.teacher_weights = self._check_teacher_weights(teacher_weights, len(teachers))
        self.projections: dict[str, keras.layers.Dense] = {}
        for key, (in_width, out_width) in (projection_widths or {}).items():
            self._add_projection(key, int(in_width), int(out_width))
        self._helpers = _Untracked(teacher_features=None, student_features=None)
        self.alpha = DEFAULT_ALPHA
        self.temperature = DEFAULT_TEMPERATURE
        self.anneal_steps: int | None = None
        self.distillation_losses: list[DistillationLoss] = []
        self.student_loss_fn: Any = None
        # teachers, student and projections are built models/layers: nothing is left to build
        self.built = True

    @property
    def teacher(self) -> keras.Model:
        """The first (or only) teacher."""
        return self.teachers[0]

    @staticmethod
    def _check_teacher_weights(weights: Sequence[float] | None, count: int) -> list[float]:
        if weights is None:
            return [1.0 / count] * count
        weights = [float(w) for w in weights]
        if len(weights) != count or any(w < 0 for w in weights):
            raise ValueError(
                f"Distiller: `teacher_weights` must be {count} numbers >= 0 (one per teacher), "
                f"got {weights}."
            )
        return weights

    def _add_projection(self, key: str, in_width: int, out_width: int) -> None:
        projection = keras.layers.Dense(out_width, use_bias=False, name=f"projection_{key}")
        projection.build((None, in_width))
        self.projections[key] = projection

    # ----------------------------------------------------------------------------- compile
    def compile(
        self,
        optimizer: Any = "adam",
        metrics: Any = None,
        student_loss_fn: Any = None,
        distillation_loss_fn: Any = None,
        alpha: float = DEFAULT_ALPHA,
        temperature: float = DEFAULT_TEMPERATURE,
        anneal_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Configure training (the keras.io `Distiller.compile` signature, plus more losses).

        The defaults are `alpha=0.5, temperature=1` with the exact KL divergence on logits
        (`LogitsKL`), not keras.io's `alpha=0.1, temperature=3`: distilling with the defaults
        should do no harm, and keras.io's values left small students below the same student
        trained alone. A softer teacher (`temperature` 2-4) can pay off with a student that has
        capacity to spare and a longer schedule: pass it explicitly. keras.io's arguments,
        passed explicitly, still train exactly like keras.io's Distiller. Distill from a
        teacher trained to convergence that is clearly better than the student trained alone;
        otherwise distillation has nothing to add. The study behind these defaults is
        docs/dev/decisions/2026-11-24-distiller-defaults.md.

        Args:
            optimizer: optimizer for the student.
            metrics: metrics of the student's predictions against the labels.
            student_loss_fn: loss against the labels (default: sparse categorical
                cross-entropy on logits).
            distillation_loss_fn: a Keras loss on softened probabilities (keras.io style, with
                `temperature`, e.g. `keras.losses.KLDivergence()`), a `keras.distillation`
                loss (`LogitsDistillation`, `FeatureDistillation`), a
                `tfcompress.distillation` loss, or a list of these (default:
                `LogitsKL(temperature)`, the KL divergence on logits times `temperature**2`).
            alpha: weight of the student loss in [0, 1]; distillation gets `1 - alpha`
                (default 0.5; keras.io uses 0.1).
            temperature: softmax temperature > 0 for the default loss and keras.io-style loss
                functions (default 1; keras.io uses 3).
            anneal_steps: `None` (default) keeps `alpha` fixed; a number of optimizer steps
                over which the student loss's weight rises linearly from `alpha` to 1 (the
                teacher's weight falls to 0), so the student ends training on the labels alone.
            **kwargs: passed to `keras.Model.compile` (e.g. `jit_compile`).

        Example:
            >>> import tfcompress as tfc
            >>> from tfcompress.models import build_digits_cnn
            >>> d = tfc.Distiller(teacher=build_digits_cnn(width=8), student=build_digits_cnn(width=4))
            >>> d.compile()
            >>> d.alpha, d.temperature, d.distillation_losses[0].temperature
            (0.5, 1.0, 1.0)
        """
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(
                f"Distiller.compile: `alpha` must be in [0, 1] (the weight of the student loss), "
                f"got {alpha!r}."
            )
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or temperature <= 0
        ):
            raise ValueError(
                f"Distiller.compile: `temperature` must be > 0, got {temperature!r}; use 1 for "
                "plain softmax or 2-8 for softened targets."
            )
        if anneal_steps is not None and (
            isinstance(anneal_steps, bool) or not isinstance(anneal_steps, int) or anneal_steps < 1
        ):
            raise ValueError(
                f"Distiller.compile: `anneal_steps` must be None or a number of optimizer steps "
                f">= 1 (e.g. epochs * steps per epoch), got {anneal_steps!r}."
            )
        kwargs.pop("loss", None)
        _check_strategy(
            {"student": self.student}
            | {
                f"teacher {i}" if len(self.teachers) > 1 else "teacher": t
                for i, t in enumerate(self.teachers)
            }
        )
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.anneal_steps = anneal_steps
        if student_loss_fn is None:
            student_loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if isinstance(student_loss_fn, (str, dict)):
            student_loss_fn = keras.losses.get(student_loss_fn)
        self.student_loss_fn = student_loss_fn
        if distillation_loss_fn is None:
            # the exact KL on logits: keras.io's KLDivergence on probabilities, without clipping
            distillation_loss_fn = LogitsKL(temperature=temperature)
        self.distillation_losses = _as_distillation_losses(distillation_loss_fn, temperature)
        self._loss_names = _unique_names(self.distillation_losses)
        self._build_feature_models()
        self._build_trackers()

    def _build_feature_models(self) -> None:
        teacher_layers = sorted(
            {loss.teacher_layer for loss in self.distillation_losses if loss.teacher_layer}
        )
        student_layers = sorted(
            {loss.student_layer for loss in self.distillation_losses if loss.student_layer}
        )
        self._helpers.teacher_features = [
            _feature_model(t, teacher_layers, "teacher") for t in self.teachers
        ]
        self._helpers.student_features = _feature_model(self.student, student_layers, "student")
        for index, loss in enumerate(self.distillation_losses):
            if not loss.projects_features:
                continue
            student_tensor = self._symbolic(self.student, loss.student_layer, "student")
            for t_index, teacher in enumerate(self.teachers):
                teacher_tensor = self._symbolic(teacher, loss.teacher_layer, "teacher")
                self._check_projection(index, t_index, loss, teacher_tensor, student_tensor)

    @staticmethod
    def _symbolic(model: keras.Model, layer_name: str | None, role: str) -> Any:
        return model.outputs[0] if layer_name is None else _layer_output(model, layer_name, role)

    def _check_projection(
        self, index: int, t_index: int, loss: DistillationLoss, teacher: Any, student: Any
    ) -> None:
        if tuple(teacher.shape[1:-1]) != tuple(student.shape[1:-1]):
            raise ValueError(
                f"Distiller: {loss.name}: teacher layer '{loss.teacher_layer}' has shape "
                f"{tuple(teacher.shape[1:])} and student layer '{loss.student_layer}' has "
                f"{tuple(student.shape[1:])}; all dimensions but the last must match. Pick "
                "layers at the same resolution, or use PairwiseDistanceLoss / AngleLoss."
            )
        in_width, out_width = int(student.shape[-1]), int(teacher.shape[-1])
        if in_width == out_width:
            return
        key = f"{index}_{t_index}"
        existing = self.projections.get(key)
        if existing is not None and tuple(existing.kernel.shape) == (in_width, out_width):
            return
        self._add_projection(key, in_width, out_width)

    def _build_trackers(self) -> None:
        self.total_loss_tracker = keras.metrics.Mean(name="loss")
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.loss_trackers = (
            [keras.metrics.Mean(name=n) for n in self._loss_names]
            if len(self.distillation_losses) > 1
            else []
        )

    @property
    def metrics(self) -> list:
        own = [
            getattr(self, name, None)
            for name in ("total_loss_tracker", "student_loss_tracker", "distillation_loss_tracker")
        ]
        own = [m for m in own if m is not None] + list(getattr(self, "loss_trackers", []))
        others = [m for m in super().metrics if m.name != "loss" and m not in own]
        return own + others

    # ----------------------------------------------------------------------------- steps
    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.student(inputs, training=training)

    def _student_forward(self, x: Any, training: bool) -> dict[str, Any]:
        extractor = self._helpers.student_features
        if extractor is None:
            return {_OUTPUT: self.student(x, training=training)}
        return extractor(x, training=training)

    def _teacher_forward(self, x: Any) -> list[dict[str, Any]]:
        results = []
        for teacher, extractor in zip(self.teachers, self._helpers.teacher_features, strict=True):
            features = (
                {_OUTPUT: teacher(x, training=False)}
                if extractor is None
                else extractor(x, training=False)
            )
            results.append({k: ops.stop_gradient(v) for k, v in features.items()})
        return results

    def _distillation_terms(
        self, y: Any, sample_weight: Any, student: dict[str, Any], teachers: list[dict[str, Any]]
    ) -> tuple[Any, Any, list[Any]]:
        """(student loss, distillation loss, each distillation loss) for one replica's batch."""
        y_pred = student[_OUTPUT]
        per_sample = per_sample_loss(self.student_loss_fn, y, y_pred)
        if sample_weight is not None:
            per_sample = per_sample * ops.cast(sample_weight, per_sample.dtype)
        student_loss = ops.mean(per_sample)
        each = []
        for index, loss in enumerate(self.distillation_losses):
            student_tensor = student[loss.student_layer or _OUTPUT]
            value = 0.0
            for t_index, (features, t_weight) in enumerate(
                zip(teachers, self.teacher_weights, strict=True)
            ):
                projected = student_tensor
                projection = self.projections.get(f"{index}_{t_index}")
                if projection is not None and loss.projects_features:
                    projected = projection(student_tensor)
                teacher_tensor = features[loss.teacher_layer or _OUTPUT]
                term = (
                    loss.compute(teacher_tensor, projected, labels=y)
                    if loss.uses_labels
                    else loss.compute(teacher_tensor, projected)
                )
                value = value + t_weight * term
            each.append(loss.weight * value)
        distillation_loss = ops.sum(ops.stack(each)) if len(each) > 1 else each[0]
        return student_loss, distillation_loss, each

    def _track(
        self, student_loss: Any, distillation_loss: Any, each: list, total: Any, y_pred: Any
    ) -> None:
        # weighted by batch size, so a short last batch counts for what it holds
        size = ops.shape(y_pred)[0]
        self.total_loss_tracker.update_state(total, sample_weight=size)
        self.student_loss_tracker.update_state(student_loss, sample_weight=size)
        self.distillation_loss_tracker.update_state(distillation_loss, sample_weight=size)
        for tracker, value in zip(self.loss_trackers, each, strict=False):
            tracker.update_state(value, sample_weight=size)

    def _current_alpha(self) -> Any:
        """`alpha`, or with `anneal_steps` its value at this optimizer step (up to 1)."""
        if self.anneal_steps is None:
            return self.alpha
        progress = ops.minimum(
            ops.cast(self.optimizer.iterations, "float32") / float(self.anneal_steps), 1.0
        )
        return self.alpha + (1.0 - self.alpha) * progress

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        teachers = self._teacher_forward(x)
        with tf.GradientTape() as tape:
            student = self._student_forward(x, training=True)
            student_loss, distillation_loss, each = self._distillation_terms(
                y, sample_weight, student, teachers
            )
            alpha = self._current_alpha()
            total = alpha * student_loss + (1.0 - alpha) * distillation_loss
            if self.student.losses:
                total = total + ops.sum(ops.stack(self.student.losses))
            # gradients are summed over replicas: scale so the update uses the global mean
            scaled = self.optimizer.scale_loss(total / _num_replicas())
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        self._track(student_loss, distillation_loss, each, total, student[_OUTPUT])
        return self.compute_metrics(x, y, student[_OUTPUT], sample_weight=sample_weight)

    def test_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        student = self._student_forward(x, training=False)
        student_loss, distillation_loss, each = self._distillation_terms(
            y, sample_weight, student, self._teacher_forward(x)
        )
        alpha = self._current_alpha()
        total = alpha * student_loss + (1.0 - alpha) * distillation_loss
        self._track(student_loss, distillation_loss, each, total, student[_OUTPUT])
        return self.compute_metrics(x, y, student[_OUTPUT], sample_weight=sample_weight)

    # ----------------------------------------------------------------------------- saving
    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "teacher": [_serialize_uncompiled(t) for t in self.teachers],
            "student": _serialize_uncompiled(self.student),
            "teacher_weights": list(self.teacher_weights),
            "projection_widths": {
                key: [int(p.kernel.shape[0]), int(p.kernel.shape[1])]
                for key, p in self.projections.items()
            },
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Distiller:
        config = dict(config)
        deserialize = keras.saving.deserialize_keras_object
        config["teacher"] = [deserialize(t) for t in config["teacher"]]
        config["student"] = deserialize(config["student"])
        for key in ("trainable", "dtype"):
            config.pop(key, None)
        return cls(**config)

    def get_compile_config(self) -> dict[str, Any]:
        config = super().get_compile_config()
        if not config:
            return config
        serialize = keras.saving.serialize_keras_object
        return {
            "optimizer": config.get("optimizer"),
            "metrics": config.get("metrics"),
            "student_loss_fn": serialize(self.student_loss_fn),
            "distillation_loss_fn": [serialize(loss) for loss in self.distillation_losses],
            "alpha": self.alpha,
            "temperature": self.temperature,
            "anneal_steps": self.anneal_steps,
        }

    def compile_from_config(self, config: dict[str, Any]) -> None:
        deserialize = keras.saving.deserialize_keras_object
        self.compile(
            optimizer=deserialize(config["optimizer"]),
            metrics=deserialize(config["metrics"]),
            student_loss_fn=deserialize(config["student_loss_fn"]),
            distillation_loss_fn=[deserialize(c) for c in config["distillation_loss_fn"]],
            alpha=config["alpha"],
            temperature=config["temperature"],
            anneal_steps=config.get("anneal_steps"),
        )
        if self.built:
            self.optimizer.build(self.trainable_variables)
