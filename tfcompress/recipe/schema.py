"""Recipe files: parse, validate strictly (naming the YAML line) and fill in the defaults.

This module imports neither TensorFlow nor Keras, so a bad recipe is refused in a fraction of a
second, before any model is loaded or trained.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MODES = ("float32", "dynamic", "float16", "int8", "int16x8", "edgetpu")
TARGETS = ("phone", "micro")
MICRO_MODES = ("int8", "int16x8", "float32")  # what TFLM's kernels run
CLUSTER_INITS = ("kmeans++", "linear", "density")
STEP_ORDER_HELP = (
    "prune and cluster come before qat (QAT is the last training that moves weights), "
    "only qat may follow cluster, and convert is the last step"
)


@dataclass(frozen=True)
class Option:
    """One option of a step: its default and the check its value must pass."""

    default: Any
    check: Callable[[Any], bool]
    allowed: str  # what the error message says is allowed


def _number(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Option:
    def check(value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        return above and below

    left, right = "(" if low_open else "[", ")" if high_open else "]"
    return Option(None, check, f"a number in {left}{low}, {high}{right}")


def _with_default(option: Option, default: Any) -> Option:
    return Option(default, option.check, option.allowed)


def _integer(low: int) -> Option:
    return Option(
        None,
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low,
        f"an integer >= {low}",
    )


def _bytes_or_none() -> Option:
    return Option(
        None,
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "a number of bytes >= 1, or null for no budget",
    )


def _choice(values: tuple[str, ...]) -> Option:
    return Option(None, lambda v: v in values, "one of " + ", ".join(values))


_BOOL = Option(False, lambda v: isinstance(v, bool), "true or false")
_LEARNING_RATE = _with_default(_number(0.0, 1.0, low_open=True), 1e-3)
_EPOCHS = _integer(1)

STEPS: dict[str, dict[str, Option]] = {
    "prune": {
        "final_sparsity": _with_default(_number(0.0, 1.0, high_open=True), 0.5),
        "initial_sparsity": _with_default(_number(0.0, 1.0, high_open=True), 0.0),
        "epochs": _with_default(_EPOCHS, 2),
        "frequency": _with_default(_integer(1), 10),
        "learning_rate": _LEARNING_RATE,
    },
    "cluster": {
        "number_of_clusters": _with_default(_integer(2), 16),
        "init": _with_default(_choice(CLUSTER_INITS), "kmeans++"),
        "epochs": _with_default(_EPOCHS, 1),
        "learning_rate": _LEARNING_RATE,
    },
    "qat": {
        "epochs": _with_default(_EPOCHS, 1),
        "learning_rate": _LEARNING_RATE,
    },
    "distill": {
        "epochs": _with_default(_EPOCHS, 2),
        "alpha": _with_default(_number(0.0, 1.0), 0.5),
        "temperature": _with_default(_number(0.0, 100.0, low_open=True), 1.0),
        "learning_rate": _LEARNING_RATE,
    },
    "convert": {
        "mode": _with_default(_choice(MODES), "int8"),
        "num_samples": _with_default(_integer(1), 200),
        "sparsity": _BOOL,
        "target": _with_default(_choice(TARGETS), "phone"),
        "max_flash": _bytes_or_none(),
        "max_arena": _bytes_or_none(),
        "micro_compress": _BOOL,
    },
}

TRAINING: dict[str, Option] = {
    "batch_size": _with_default(_integer(1), 64),
    "holdout": _with_default(_number(0.0, 1.0, low_open=True, high_open=True), 0.2),
    "from_logits": Option("auto", lambda v: v in ("auto", True, False), "auto, true or false"),
    "seed": _with_default(_integer(0), 0),
}

TOP_LEVEL = ("steps", "training", "task")

METRICS = ("auto", "accuracy", "mae", "mse")
# what the model learns and how each output is scored; "auto" reads the model's compile config,
# then the labels (whole-number class ids or one-hot rows: accuracy, per pixel for a dense map;
# real values: mae)
TASK: dict[str, Option] = {
    "metric": Option(
        "auto",
        lambda v: (
            v in METRICS or (isinstance(v, Mapping) and v and all(m in METRICS for m in v.values()))
        ),
        f"one of {', '.join(METRICS)}, or a mapping of output name to one of them",
    ),
    "loss": Option(
        "auto",
        lambda v: (
            (isinstance(v, str) and bool(v))
            or (isinstance(v, Mapping) and v and all(isinstance(m, str) for m in v.values()))
        ),
        "auto, a Keras loss name (mse, sparse_categorical_crossentropy, ...), or a mapping of "
        "output name to one",
    ),
}


class RecipeError(ValueError):
    """A recipe that cannot be run; the message names the YAML line and what is allowed."""


@dataclass
class Step:
    """One step of a validated recipe, with every option filled in."""

    name: str
    options: dict[str, Any]
    line: int | None = None


@dataclass
class Recipe:
    """A validated recipe: the steps in order (convert last) and the training settings.

    Example:
        >>> recipe = parse_recipe({"steps": [{"prune": {"final_sparsity": 0.5}}]})
        >>> [step.name for step in recipe.steps]
        ['prune', 'convert']
        >>> recipe.steps[-1].options["mode"]
        'int8'
    """

    steps: list[Step]
    training: dict[str, Any] = field(default_factory=dict)
    origin: str = "the recipe"
    task: dict[str, Any] = field(default_factory=lambda: {"metric": "auto", "loss": "auto"})

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data, every default written out (what `recipe.yaml` holds)."""
        return {
            "steps": [{step.name: dict(step.options)} for step in self.steps],
            "training": dict(self.training),
            "task": {key: _plain(value) for key, value in self.task.items()},
        }

    def to_yaml(self) -> str:
        """The exact recipe used, as YAML that `parse_recipe` reads back to the same recipe."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    @property
    def convert(self) -> Step:
        return self.steps[-1]


class _Lines:
    """Line numbers (1-based) of the nodes of a YAML document, looked up by key path."""

    def __init__(self, node: yaml.Node | None, origin: str) -> None:
        self.node = node
        self.origin = origin

    def at(self, *path: str | int) -> str:
        node = self.node
        for key in path:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == key), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
                node = node.value[key] if key < len(node.value) else None
            else:
                node = None
            if node is None:
                break
        if node is None or self.node is None:
            return self.origin
        return f"{self.origin} line {node.start_mark.line + 1}"

    def key_at(self, *path: str | int) -> str:
        """Where a mapping key (not its value) is written: the line of an unknown option."""
        parent = self.node
        for key in path[:-1]:
            if isinstance(parent, yaml.MappingNode):
                parent = next((v for k, v in parent.value if k.value == key), None)
            elif isinstance(parent, yaml.SequenceNode) and isinstance(key, int):
                parent = parent.value[key] if key < len(parent.value) else None
            if parent is None:
                return self.at(*path)
        if isinstance(parent, yaml.MappingNode):
            for k, _ in parent.value:
                if k.value == path[-1]:
                    return f"{self.origin} line {k.start_mark.line + 1}"
        return self.at(*path)


def load_recipe(source: str | os.PathLike | Mapping[str, Any] | Recipe) -> Recipe:
    """A validated `Recipe` from a YAML file, a YAML string, a dict or a `Recipe`.

    Args:
        source: a path to a `.yaml`/`.yml` file, YAML text (it contains a newline or `:`), a
            dict with the same structure, or an already validated `Recipe`.

    Raises:
        RecipeError: an unknown step or option, a value of the wrong type, or steps in an order
            that cannot work; the message names the line and the allowed values.

    Example:
        >>> recipe = load_recipe("steps:\\n  - qat: {epochs: 1}\\n  - convert: {mode: int8}\\n")
        >>> recipe.to_dict()["steps"][0]
        {'qat': {'epochs': 1, 'learning_rate': 0.001}}
    """
    if isinstance(source, Recipe):
        return source
    if isinstance(source, Mapping):
        return parse_recipe(source)
    text, origin = _recipe_text(source)
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        raise RecipeError(f"{origin} is not valid YAML: {error}") from error
    return parse_recipe(data, _Lines(node, origin))


def _recipe_text(source: str | os.PathLike) -> tuple[str, str]:
    if isinstance(source, str) and ("\n" in source or ":" in source.split(os.sep)[-1]):
        return source, "the recipe"
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(
            f"Recipe file '{path}' does not exist: pass a .yaml file (see docs/guide/recipes.md)."
        )
    return path.read_text(), str(path)


def parse_recipe(data: Any, lines: _Lines | None = None) -> Recipe:
    """Validate recipe data (as `yaml.safe_load` returns it) and fill in every default.

    Example:
        >>> parse_recipe({"steps": [{"cluster": {"number_of_clusters": 8}}]}).steps[0].options
        {'number_of_clusters': 8, 'init': 'kmeans++', 'epochs': 1, 'learning_rate': 0.001}
    """
    lines = lines or _Lines(None, "the recipe")
    if not isinstance(data, Mapping):
        raise RecipeError(
            f"{lines.at()}: a recipe is a mapping with the keys {', '.join(TOP_LEVEL)}, "
            f"got {_kind(data)}. Example: steps: [{{prune: {{final_sparsity: 0.5}}}}, "
            "{qat: {epochs: 1}}, {convert: {mode: int8}}]"
        )
    for key in data:
        if key not in TOP_LEVEL:
            raise RecipeError(
                f"{lines.key_at(key)}: unknown key {key!r}; allowed keys: {', '.join(TOP_LEVEL)}."
            )
    if "steps" not in data:
        raise RecipeError(f"{lines.at()}: the recipe has no 'steps' list.")
    raw_steps = data["steps"]
    if not isinstance(raw_steps, list) or not raw_steps:
        raise RecipeError(
            f"{lines.at('steps')}: 'steps' must be a non-empty list of steps "
            f"({', '.join(STEPS)}), got {_kind(raw_steps)}."
        )
    steps = [_parse_step(raw, index, lines) for index, raw in enumerate(raw_steps)]
    _check_order(steps, lines)
    if steps[-1].name != "convert":
        steps.append(Step("convert", _fill({}, STEPS["convert"], "convert", lines, ())))
    raw_training = data.get("training") or {}
    if not isinstance(raw_training, Mapping):
        raise RecipeError(
            f"{lines.at('training')}: 'training' must be a mapping of "
            f"{', '.join(TRAINING)}, got {_kind(raw_training)}."
        )
    training = _fill(raw_training, TRAINING, "training", lines, ("training",))
    raw_task = data.get("task") or {}
    if not isinstance(raw_task, Mapping):
        raise RecipeError(
            f"{lines.at('task')}: 'task' must be a mapping of {', '.join(TASK)}, got "
            f"{_kind(raw_task)}. Example: task: {{metric: {{digit: accuracy, size: mae}}}}"
        )
    task = _fill(raw_task, TASK, "task", lines, ("task",))
    return Recipe(steps=steps, training=training, origin=lines.origin, task=task)


def _parse_step(raw: Any, index: int, lines: _Lines) -> Step:
    where = lines.at("steps", index)
    if isinstance(raw, str):  # "- qat" with every default
        raw = {raw: None}
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise RecipeError(
            f"{where}: step {index + 1} must be one step name with its options, like "
            f"'- prune: {{final_sparsity: 0.5}}'; got {_kind(raw)}. Allowed steps: "
            f"{', '.join(STEPS)}."
        )
    ((name, options),) = raw.items()
    if name not in STEPS:
        raise RecipeError(
            f"{lines.key_at('steps', index, name)}: unknown step {name!r}; allowed steps: "
            f"{', '.join(STEPS)}."
        )
    options = {} if options is None else options
    if not isinstance(options, Mapping):
        raise RecipeError(
            f"{lines.at('steps', index, name)}: the options of step '{name}' must be a mapping "
            f"of {', '.join(STEPS[name])}, got {_kind(options)}."
        )
    filled = _fill(options, STEPS[name], name, lines, ("steps", index, name))
    if name == "convert":
        _check_target(filled, lines, ("steps", index, name))
    if name == "prune" and filled["initial_sparsity"] > filled["final_sparsity"]:
        raise RecipeError(
            f"{lines.at('steps', index, name, 'initial_sparsity')}: prune initial_sparsity "
            f"{filled['initial_sparsity']} is above final_sparsity {filled['final_sparsity']}; "
            "pruning only removes weights, so initial_sparsity must be <= final_sparsity."
        )
    return Step(name, filled, line=_line_number(lines, "steps", index))


def _check_target(options: dict[str, Any], lines: _Lines, path: tuple) -> None:
    """Budgets and look-up tables only with target micro, and a mode TFLM runs."""
    if options["target"] != "micro":
        if options["micro_compress"]:
            raise RecipeError(
                f"{lines.at(*path, 'micro_compress')}: 'convert' option 'micro_compress' writes "
                "look-up tables that only TensorFlow Lite Micro decodes; add 'target: micro' to "
                "the convert step (or remove micro_compress)."
            )
        for budget in ("max_flash", "max_arena"):
            if options[budget] is not None:
                raise RecipeError(
                    f"{lines.at(*path, budget)}: 'convert' option {budget!r} is a budget measured "
                    "on TensorFlow Lite Micro; add 'target: micro' to the convert step (or remove "
                    f"{budget})."
                )
    elif options["mode"] not in MICRO_MODES:
        raise RecipeError(
            f"{lines.at(*path, 'mode')}: 'convert' with target micro takes mode "
            f"{', '.join(MICRO_MODES)}; got {options['mode']!r}."
        )
    elif options["micro_compress"] and options["mode"] == "float32":
        raise RecipeError(
            f"{lines.at(*path, 'micro_compress')}: 'convert' option 'micro_compress' needs an "
            "integer file (mode int8 or int16x8); got mode 'float32'."
        )


def _fill(
    given: Mapping[str, Any],
    schema: dict[str, Option],
    owner: str,
    lines: _Lines,
    path: tuple,
) -> dict[str, Any]:
    for key in given:
        if key not in schema:
            raise RecipeError(
                f"{lines.key_at(*path, key)}: unknown option {key!r} of '{owner}'; allowed "
                f"options: {', '.join(schema)}."
            )
    filled = {}
    for key, option in schema.items():
        value = given.get(key, option.default)
        if key in given and not option.check(value):
            raise RecipeError(
                f"{lines.at(*path, key)}: '{owner}' option {key!r} must be {option.allowed}; "
                f"got {value!r} ({_kind(value)})."
            )
        filled[key] = copy.deepcopy(value)
    return filled


def _check_order(steps: list[Step], lines: _Lines) -> None:
    names = [step.name for step in steps]
    for index, step in enumerate(steps):
        where = lines.at("steps", index)
        if step.name == "convert" and index != len(steps) - 1:
            raise RecipeError(
                f"{where}: 'convert' is step {index + 1} of {len(steps)}; it must be the last step "
                f"({STEP_ORDER_HELP})."
            )
        if step.name in ("prune", "cluster") and "qat" in names[:index]:
            raise RecipeError(
                f"{where}: '{step.name}' comes after 'qat'; {STEP_ORDER_HELP}. Move it before qat."
            )
        if step.name in ("prune", "cluster", "distill") and "cluster" in names[:index]:
            raise RecipeError(
                f"{where}: '{step.name}' comes after 'cluster'; training every weight again "
                "would undo the shared values, so after cluster only qat (which keeps them) and "
                f"convert may follow. Move '{step.name}' before cluster."
            )
        if step.name == "qat" and "qat" in names[:index]:
            raise RecipeError(
                f"{where}: a second 'qat' step; a model is made quantization-aware once."
            )


def _line_number(lines: _Lines, *path: str | int) -> int | None:
    text = lines.at(*path)
    return int(text.rsplit(" ", 1)[-1]) if " line " in text else None


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
