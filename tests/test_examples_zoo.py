"""The benchmark model zoo: input formats, student sizes, and tf_keras twins with equal logits."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from tfcompress.data import Split  # noqa: E402
from tfcompress.examples import zoo as zoo_models  # noqa: E402


def _few(split: Split, count: int = 96) -> Split:
    return Split(split.x_train[:count], split.y_train[:count], split.x_test[:32], split.y_test[:32])


@pytest.mark.parametrize("arch", zoo_models.ARCHITECTURES)
def test_load_gives_the_input_shape_the_model_takes(arch):
    split = zoo_models.load(arch)
    model = zoo_models.build(arch, 0)
    assert split.x_train.shape[1:] == split.x_test.shape[1:] == zoo_models.input_shape(arch)
    assert model.output_shape == (None, 10)
    assert (
        split.x_train.dtype == np.float32
        and 0.0 <= split.x_train.min() <= split.x_train.max() <= 1.0
    )


@pytest.mark.parametrize("arch", zoo_models.ARCHITECTURES)
def test_small_student_has_at_most_a_quarter_of_the_parameters(arch):
    big, small = zoo_models.build(arch, 0), zoo_models.build(arch, 0, small=True)
    assert {type(layer) for layer in small.layers} == {type(layer) for layer in big.layers}
    assert small.count_params() <= big.count_params() / 4


def _perturbed(model):
    """Every weight moved off its initial value (BatchNorm variances kept positive)."""
    rng = np.random.default_rng(0)
    for weight in model.weights:
        value = np.asarray(weight) + rng.normal(0.0, 0.3, weight.shape).astype("float32")
        weight.assign(np.abs(value) + 0.1 if "variance" in weight.path else value)
    return model


@pytest.mark.parametrize("small", [False, True])
@pytest.mark.parametrize("arch", zoo_models.ARCHITECTURES)
def test_to_legacy_twin_gives_the_same_logits(arch, small):
    split = zoo_models.load(arch)
    model = _perturbed(zoo_models.build(arch, 1, small=small))
    twin = zoo_models.to_legacy(model, arch, small=small)
    assert type(twin).__module__.startswith("tf_keras")
    expected = model.predict(split.x_test[:64], verbose=0)
    np.testing.assert_allclose(
        twin.predict(split.x_test[:64], verbose=0), expected, rtol=1e-4, atol=1e-4
    )


def test_to_legacy_twin_of_a_trained_model_gives_the_same_logits():
    split = _few(zoo_models.load("dwsep"))
    model = zoo_models.train(zoo_models.build("dwsep", 1), split, epochs=1, seed=1)
    twin = zoo_models.to_legacy(model, "dwsep")
    expected = model.predict(split.x_test, verbose=0)
    np.testing.assert_allclose(twin.predict(split.x_test, verbose=0), expected, atol=1e-5)


def test_build_with_the_same_seed_gives_the_same_weights():
    first, second = zoo_models.build("cnn2d_bn", 3), zoo_models.build("cnn2d_bn", 3)
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unknown_arch_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="Unknown architecture 'vgg'.*mlp"):
        zoo_models.build("vgg", 0)


def test_to_legacy_of_the_wrong_arch_names_the_fix():
    with pytest.raises(ValueError, match="pass the arch and small flag"):
        zoo_models.to_legacy(zoo_models.build("mlp", 0), "mlp", small=True)


@pytest.mark.slow
def test_docstring_examples_run():
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(zoo_models, "zoo_models", extraglobs={"zoo_models": zoo_models}):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
