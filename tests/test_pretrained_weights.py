"""The fixture of pretrained weights holds every declared model, and only those."""

from __future__ import annotations

from tests.fixtures.pretrained import NAMES, WEIGHTS, saved_names


def test_the_fixture_holds_weights_for_exactly_the_declared_models():
    assert saved_names() == sorted(NAMES), (
        f"{WEIGHTS.name} is out of date: run .venv/bin/python tests/fixtures/make_pretrained_weights.py"
    )
