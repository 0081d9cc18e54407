"""The issue's scientific claim at reduced size: on a layered demo section, the spatial models find
the layers clearly better than a Gaussian mixture on expression alone (measured margins: STAGATE
+0.18 to +0.23 ARI, GraphST +0.12 to +0.17, on 1,500-cell sections; asserted with slack)."""

from __future__ import annotations

import pytest

from cluster import DomainConfig, find_domains, score_domains
from ssl_st import datasets


@pytest.fixture(scope="module")
def section():
    return datasets.generate("merscope", seed=1, n_cells=1500)


def ari(section, method: str, **settings) -> float:
    find_domains(section, DomainConfig.from_name(method, n_domains=6, **settings), seed=0)
    return score_domains(section, labels="layer")["ari"]


@pytest.mark.slow
def test_spatial_models_beat_a_mixture_on_expression(section):
    baseline = ari(section, method="gmm")
    assert 0.1 < baseline < 0.4  # the layers are not separable cell by cell
    assert ari(section, method="stagate", epochs=80) > baseline + 0.12
    assert ari(section, method="graphst", epochs=300, k=6) > baseline + 0.08
