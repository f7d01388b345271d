"""Recipes are validated before any training; every error names the YAML line and what is allowed."""

from __future__ import annotations

import pytest

from tfcompress.recipe import RecipeError, load_recipe

VALID = """\
steps:
  - prune: {final_sparsity: 0.5, epochs: 2}
  - qat: {epochs: 1}
  - convert: {mode: int8}
"""


def test_valid_recipe_gets_every_default_and_round_trips_through_yaml():
    recipe = load_recipe(VALID)
    assert [step.name for step in recipe.steps] == ["prune", "qat", "convert"]
    assert recipe.steps[0].options["initial_sparsity"] == 0.0
    assert recipe.training["batch_size"] == 64
    assert load_recipe(recipe.to_yaml()).to_dict() == recipe.to_dict()


def test_missing_convert_is_added_last_with_its_defaults():
    recipe = load_recipe({"steps": ["qat"]})
    assert recipe.to_dict()["steps"][-1] == {
        "convert": {
            "mode": "int8",
            "num_samples": 200,
            "sparsity": False,
            "target": "phone",
            "max_flash": None,
            "max_arena": None,
            "micro_compress": False,
        }
    }


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("steps:\n  - qat: {}\n  - prunee: {epochs: 1}\n", 3, ["'prunee'", "prune, cluster"]),
        ("steps:\n  - prune:\n      epochs: two\n", 3, ["'epochs'", "integer >= 1", "'two'"]),
        ("steps:\n  - prune:\n      final_sparsity: 1.5\n", 3, ["[0.0, 1.0)"]),
        (
            "steps:\n  - qat:\n      epochs: 1\n      epoch: 1\n",
            4,
            ["'epoch'", "epochs, learning_rate"],
        ),
        ("steps:\n  - convert: {mode: int4}\n", 2, ["'mode'", "float32, dynamic"]),
        ("steps:\n  - convert: {}\n  - qat: {}\n", 2, ["last step"]),
        ("steps:\n  - qat: {}\n  - prune: {}\n", 3, ["after 'qat'"]),
        ("steps:\n  - qat: {}\ntraning: {}\n", 3, ["'traning'", "steps, training"]),
        ("steps:\n  - qat: {}\ntraining:\n  batch_size: true\n", 4, ["'batch_size'"]),
    ],
)
def test_recipe_error_names_the_line_and_the_allowed_values(tmp_path, text, line, words):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    message = str(error.value)
    assert f"{path} line {line}:" in message
    for word in words:
        assert word in message


def test_dict_recipe_error_names_the_step():
    with pytest.raises(RecipeError, match="unknown option 'clusters' of 'cluster'"):
        load_recipe({"steps": [{"cluster": {"clusters": 8}}]})


def test_invalid_yaml_and_missing_file_are_reported():
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe("steps: [qat\n")
    with pytest.raises(FileNotFoundError, match="docs/guide/recipes.md"):
        load_recipe("no_such_recipe.yaml")


def test_training_after_cluster_is_refused():
    with pytest.raises(RecipeError, match="'distill' comes after 'cluster'"):
        load_recipe({"steps": ["cluster", "distill"]})


def test_example_recipe_is_valid_and_the_guide_lists_every_option():
    from pathlib import Path

    from tfcompress.recipe.schema import STEPS, TRAINING

    docs = Path(__file__).resolve().parents[2] / "docs"
    recipe = load_recipe(docs / "example_recipe.yaml")
    assert [step.name for step in recipe.steps] == ["prune", "qat", "convert"]
    guide = (docs / "guide" / "recipes.md").read_text()
    for name, options in [*STEPS.items(), ("training", TRAINING)]:
        assert f"`{name}`" in guide
        for option in options:
            assert f"`{option}`" in guide, (name, option)


def test_task_takes_a_metric_and_loss_per_output_and_names_the_line_of_a_wrong_one():
    recipe = load_recipe("steps: [qat]\ntask:\n  metric: {digit: accuracy, size: mae}\n")
    assert recipe.task == {"metric": {"digit": "accuracy", "size": "mae"}, "loss": "auto"}
    assert load_recipe(recipe.to_yaml()).to_dict() == recipe.to_dict()
    with pytest.raises(RecipeError, match=r"line 3: 'task' option 'metric' must be one of auto"):
        load_recipe("steps: [qat]\ntask:\n  metric: {size: rmse}\n")
