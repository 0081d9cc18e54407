"""The scientific claims at reduced size, on a layered simulated section (1,500 cells, six layers
that are mixtures of cell types): a Gaussian mixture on expression alone cannot find the layers
(ARI 0.24), a plain neighbourhood average can (0.83), and the spatial models at their defaults keep
up with it (STAGATE 0.81, GraphST 0.74-0.82 at seed 0); the three-section, three-seed table is
``bench/neighbourhood_scale.py``'s."""

from __future__ import annotations

import pytest

from cluster import DomainConfig, find_domains, score_domains
from ssl_st import datasets
from ssl_st.threads import limited_threads


@pytest.fixture(autouse=True, scope="module")
def _both_cores():
    # Full-batch training in this process while the shared Ray idles: torch may use both cores
    # (conftest pins one thread for the tests that run beside Ray workers).
    with limited_threads(2):
        yield


@pytest.fixture(scope="module")
def section():
    return datasets.generate("merscope", seed=1, n_cells=1500)


def ari(section, method: str, **settings) -> float:
    find_domains(section, DomainConfig.from_name(method, n_domains=6, **settings), seed=0)
    return score_domains(section, labels="layer")["ari"]


@pytest.mark.slow
def test_at_their_defaults_the_models_keep_up_with_a_neighbourhood_average(section):
    """Issue 11, finding 8: at upstream's Visium graphs (STAGATE 6-NN for 1,000 epochs, GraphST
    3-NN on its "10X" path) single-cell sections lost to a plain neighbourhood average by 0.3-0.4
    ARI (seed 0 here: average 0.83, STAGATE 0.43, GraphST 0.41). At the defaults sized to a
    25-cell neighbourhood they come within the head's seed noise of it (measured 0.81 and 0.74-0.82)
    -- level with the trivial reference, not above it: see README, "The neighbourhood scale"."""
    baseline = ari(section, method="gmm")
    assert 0.1 < baseline < 0.4  # the layers are not separable cell by cell
    reference = ari(section, method="neighbour-average")
    assert reference > baseline + 0.4
    for method in ("stagate", "graphst"):
        assert ari(section, method=method) > reference - 0.12, method
