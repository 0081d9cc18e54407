"""A method added through the registries alone runs in a grid: one file, one decorated class each.

:mod:`tests.toy_methods` defines a toy SSL objective and a toy spatial-domain method; nothing in the
packages names them. Here a config uses both, and the grid pretrains, embeds and clusters with them
on the shared Ray instance. The module is pickled by value, so the Ray workers never import it:
they run the toy classes through the instances the cells carry, never by a registry lookup.
"""

from __future__ import annotations

import pytest
import ray.cloudpickle

from grid.config import load_config
from grid.plan import expand
from grid.ray_exec import connect, execute
from grid.schema import ConfigError
from grid.store import ResultStore

from . import toy_methods
from .conftest import TINY_CONFIG

TOY = TINY_CONFIG.format(epochs=2, extra_datasets="").replace(
    "  - name: random-init\n", "  - name: toy\n    method: toy-denoise\n    encoder: {units: [64, 32, 16]}\n"
    "    pretrain: {epochs: 2, noise: 0.3}\n  - name: random-init\n",
) + """\
  - name: domains
    kind: spatial-clustering
    datasets: [merscope]
    seeds: [1]
    methods: [toy-neighbour-mean, gmm]
    inputs: [expression, toy]
    n_domains: 4
    per_method:
      toy-neighbour-mean: {rounds: 3, k: 6}
"""


class Quiet:
    def start(self, total: int, artifacts: int) -> None: ...
    def advance(self, cell, status: str, duration_s: float) -> None: ...
    def note(self, message: str) -> None: ...


def test_a_config_names_the_toy_methods_and_their_own_settings(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(TOY)
    plan = expand(load_config(path))
    toy_model = plan.config.model("toy")
    assert type(toy_model.training) is toy_methods.ToyDenoise and toy_model.training.noise == 0.3
    smoothing = [c for c in plan.cells if c.mode == "toy-neighbour-mean"]
    assert len(smoothing) == 2  # expression and the toy model's embedding, one seed
    assert {c.spec.domains.settings.rounds for c in smoothing} == {3}
    assert {c.spec.domains.use_rep for c in smoothing} == {"X", "X_toy"}

    path.write_text(TOY.replace("rounds: 3", "round: 3"))
    try:
        load_config(path)
    except ConfigError as err:
        assert "did you mean 'rounds'" in str(err)
    else:
        raise AssertionError("a misspelt setting of the toy method was accepted")


@pytest.mark.ray
def test_the_toy_methods_run_in_a_grid(tmp_path, ray_address):
    ray.cloudpickle.register_pickle_by_value(toy_methods)
    path = tmp_path / "experiments.yaml"
    path.write_text(TOY)
    plan = expand(load_config(path))
    connect(ray_address)
    store = ResultStore(tmp_path / "results")
    summary = execute(plan, plan.cells, tmp_path / "results", store, Quiet())
    table = store.table().to_pandas()
    failed = table[table["status"] == "failed"]
    assert summary.failed == 0, failed["error"].tolist()
    scores = table[(table["metric"] == "macro_f1") & (table["model"] == "toy")]
    assert len(scores) == 4 and scores["value"].between(0, 1).all()  # zero-shot of the toy model: 2 sections x 2 seeds
    domains = table[(table["mode"] == "toy-neighbour-mean") & (table["metric"] == "ari")]
    assert len(domains) == 2 and domains["value"].notna().all()
    rounds = table[(table["mode"] == "toy-neighbour-mean") & (table["metric"] == "rounds")]
    assert set(rounds["value"]) == {3.0}  # the toy's own record reached the store
