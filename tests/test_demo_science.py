"""The demo's claims, at reduced size: pretraining helps zero-shot, and Slide-seq is the hardest section.

Margins are a fraction of the gaps measured at this size (RM beats random weights by 0.18-0.26 macro-F1;
Slide-seq trails the panels by >0.1: 0.12 for RM, 0.26 for PCA), so they hold across seeds without
being brittle.
"""

from __future__ import annotations

import pytest

from ssl_st import datasets
from ssl_st.genes import Vocabulary
from ssl_st.models import Architecture, RandomMaskConfig, SSLModel
from ssl_st.pp import model_input
from ssl_st.tasks import CellTypeConfig, pca_baseline, zero_shot

PANELS = ("merscope", "xenium")
SEEDS = (1, 2)


@pytest.fixture(scope="module")
def scores():
    atlas = datasets.generate("atlas", n_cells=3000)
    vocabulary = Vocabulary.from_var(atlas.var)
    inputs, _ = model_input(atlas, vocabulary)
    arch = Architecture(units=(128, 64, 32))
    pretrained = RandomMaskConfig(epochs=8, batch_size=128).train(inputs, vocabulary, arch, seed=0, device="cpu")
    random = SSLModel.random_init(vocabulary, arch, seed=0)
    config = CellTypeConfig(pca_components=32)
    out = {}
    for flavour in (*PANELS, "slideseq"):
        section = datasets.generate(flavour, n_cells=2000, seed=1)
        for seed in SEEDS:
            out[flavour, "random-mask", seed] = zero_shot(section, pretrained, config, seed, device="cpu").metrics["macro_f1"]
            out[flavour, "random-init", seed] = zero_shot(section, random, config, seed, device="cpu").metrics["macro_f1"]
            out[flavour, "pca", seed] = pca_baseline(section, vocabulary, config, seed).metrics["macro_f1"]
    return out


@pytest.mark.parametrize("flavour", [*PANELS, "slideseq"])
def test_pretrained_random_mask_beats_random_weights(scores, flavour):
    for seed in SEEDS:
        assert scores[flavour, "random-mask", seed] > scores[flavour, "random-init", seed] + 0.08


@pytest.mark.parametrize("mode", ["random-mask", "pca"])
def test_slideseq_is_harder_than_the_panels(scores, mode):
    for seed in SEEDS:
        panels = min(scores[p, mode, seed] for p in PANELS)
        assert scores["slideseq", mode, seed] < panels - 0.05
