"""The shipped built-in models against their cards: the card is the rendering of its measured
card.json, the weights are the file the card hashes, at most 15 MB, and re-scoring the card's
first row from ../shared gives the card's figures (so a card cannot drift from its weights)."""

from __future__ import annotations

import pytest

from emorec.zoo.card import render_card
from emorec.zoo.recipes import recipe_of
from emorec.zoo.registry import BUILTIN_NAMES, builtin_model

MAX_BYTES = 15_000_000
# Re-scoring on another CPU may flip a few images whose two best classes tie to float precision.
TOLERANCE = 0.003


@pytest.fixture(params=BUILTIN_NAMES)
def shipped(request):
    model = builtin_model(request.param)
    model.check()  # the weights are the file the card describes
    return model


def test_card_is_the_rendering_of_its_measurements(shipped):
    card = shipped.card()
    assert shipped.card_path.read_text() == render_card(card, recipe_of(shipped.name))
    assert shipped.checkpoint.stat().st_size <= MAX_BYTES
    assert card["labels"] and set(card["check"]["per_class_f1"]) == set(card["labels"])


def test_rescoring_from_shared_gives_the_card_figures(shipped, emotion6, fer2013):
    import torch

    from emorec.zoo.scoring import score, scoring_samples

    torch.set_num_threads(1)
    shared = emotion6.parent.parent  # the fixtures skip without ../shared
    card, recipe = shipped.card(), recipe_of(shipped.name)
    samples = scoring_samples(recipe.check, shared, shipped.folder, recipe.dataset_root)
    metrics = score(shipped.folder, samples)
    assert metrics["unreadable"] == 0
    assert metrics["num_samples"] == card["check"]["images"]
    assert metrics["accuracy"] == pytest.approx(card["check"]["accuracy"], abs=TOLERANCE)
    assert metrics["macro_f1"] == pytest.approx(card["check"]["macro_f1"], abs=TOLERANCE)
