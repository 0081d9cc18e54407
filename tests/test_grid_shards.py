"""Sharded datasets as grid datasets (``source: shards`` and ``source: merlin``): zero-shot cells
stream the shards through Ray Data into an embedding every seed shares, and score exactly what the
same cells score as an h5ad file; a model pretrains on a Merlin split; bad shards stop ``plan`` and
``run`` before anything runs, naming the shard; modes that need the data in memory are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grid.config import load_config
from grid.plan import expand
from grid.store import ResultStore
from ssl_st import datasets
from ssl_st.shards import shard

from .conftest import run_cli, run_cli_here
from .test_shards import write_merlin_store

CONFIG = """
name: sharded
seeds: [1, 2]
reference: atlas
datasets:
  - {{name: atlas, flavour: atlas, n_cells: 400}}
  - {{name: section, source: h5ad, path: {h5ad}}}
  - {{name: section-shards, source: shards, path: {shards}}}
models:
  - {{name: random-init, method: random-init, encoder: {{units: [32, 16]}}}}
tasks:
  - name: cell-type
    datasets: [section, section-shards]
    modes: [zero-shot]
"""


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    """A 300-cell MERSCOPE-like section as an h5ad file and as shards of 100 rows written from it."""
    root = tmp_path_factory.mktemp("section")
    adata = datasets.generate("merscope", seed=4, n_cells=300)
    adata.write_h5ad(root / "section.h5ad")
    shard(root / "section.h5ad", root / "section.shards", rows_per_shard=100)
    return root


def _config(tmp_path, section, text=CONFIG, **extra):
    path = tmp_path / "experiments.yaml"
    path.write_text(text.format(h5ad=section / "section.h5ad", shards=section / "section.shards", **extra))
    return path


@pytest.mark.ray
@pytest.mark.slow
def section_rows(obs, section) -> list[int]:
    """Row numbers of ``obs`` names in the section's h5ad."""
    import anndata as ad

    names = list(ad.read_h5ad(section / "section.h5ad", backed="r").obs_names)
    return [names.index(o) for o in obs]


def test_zero_shot_on_shards_scores_what_the_h5ad_scores(tmp_path, section, ray_address):
    config = _config(tmp_path, section)
    results = tmp_path / "results"
    run_cli_here("run", str(config), "--results", str(results), "--address", ray_address, check=True)
    plan = expand(load_config(config))
    table = ResultStore(results).table().to_pandas()
    assert set(table["cell_id"]) == {c.cell_id for c in plan.cells} and (table["status"] == "done").all()
    f1 = table[table["metric"] == "macro_f1"].pivot_table(index=["model", "seed"], columns="dataset", values="value")
    assert len(f1) == 2
    np.testing.assert_allclose(f1["section-shards"], f1["section"], atol=1e-9)
    # the streamed cells keep what the in-memory ones keep: the same predictions (cells named by row
    # number, labels as text) and the same embedding sample
    from grid import details

    store = ResultStore(results)
    for (_, seed), cells in table.drop_duplicates("cell_id").groupby(["model", "seed"]):
        by_dataset = dict(zip(cells["dataset"], cells["cell_id"]))
        streamed = store.details(by_dataset["section-shards"], details.PREDICTIONS)
        in_memory = store.details(by_dataset["section"], details.PREDICTIONS)
        assert streamed["obs"].tolist() == [str(i) for i in section_rows(in_memory["obs"], section)]
        assert streamed[["true", "predicted"]].equals(in_memory[["true", "predicted"]])
        np.testing.assert_allclose(details.embedding_matrix(store.details(by_dataset["section-shards"], details.EMBEDDING)),
                                   details.embedding_matrix(store.details(by_dataset["section"], details.EMBEDDING)),
                                   atol=1e-5)
    info = table[(table["dataset"] == "section-shards") & (table["kind"] == "info")]
    assert set(info[info["metric"] == "n_cells"]["value"]) == {300.0}
    assert {"n_test", "genes_mapped", "vocabulary_coverage"} <= set(info["metric"])
    # one embedding, shared by both seeds, sealed by a manifest; the shards were not copied
    embeddings = sorted((results / "artifacts" / "embeddings").iterdir())
    assert [p.name.rsplit("-", 1)[0] for p in embeddings] == ["random-init-section-shards"]
    assert all((p / "manifest.json").is_file() and (p / "embedding" / "manifest.json").is_file() for p in embeddings)
    record = next(p for p in (results / "artifacts" / "data").glob("section-shards-*.json")
                  if not p.name.endswith(".manifest.json"))
    assert json.loads(record.read_text())["n_rows"] == 300
    assert not list((results / "artifacts" / "data").glob("section-shards-*.h5ad"))
    shown = run_cli_here("plan", str(config), "--results", str(results), check=True)
    assert "embed {cpus: 1} per worker x 1" in shown.stdout


MERLIN = """
name: merlin
seeds: [0]
reference: store-train
datasets:
  - {{name: store-train, source: merlin, path: {store}, split: train}}
  - {{name: store-test, source: merlin, path: {store}, split: test}}
models:
  - {{name: random-mask, method: random-mask, encoder: {{units: [16, 8]}}, pretrain: {{epochs: 1, batch_size: 16}},
     workers: 2}}
tasks:
  - {{name: cell-type, datasets: [store-test], modes: [zero-shot], k: 3}}
"""


@pytest.mark.ray
@pytest.mark.slow
def test_a_merlin_store_is_a_reference_to_pretrain_on_with_two_workers_and_a_dataset_to_evaluate(tmp_path, ray_address):
    from ssl_st.models import SSLModel

    write_merlin_store(tmp_path / "store", cells={"train": (60, 40), "test": (30, 25)})
    config = tmp_path / "merlin.yaml"
    config.write_text(MERLIN.format(store=tmp_path / "store"))
    results = tmp_path / "results"
    run_cli_here("run", str(config), "--results", str(results), "--address", ray_address, check=True)
    table = ResultStore(results).table().to_pandas()
    assert (table["status"] == "done").all()
    values = dict(zip(table["metric"], table["value"]))
    assert values["n_cells"] == 55 and values["genes_mapped"] == 50 and 0 <= values["macro_f1"] <= 1
    model = next((results / "artifacts" / "models").iterdir())
    assert json.loads((model / "manifest.json").read_text())["files"]["model.ckpt"]["size"] > 0
    training = SSLModel.load(model / "model.ckpt").training
    assert training["workers"] == 2 and training["epochs_run"] == 1  # one streamed epoch: the wiring, not the schedule
    assert training["stream"]  # the Merlin split streamed into the workers (ssl_st.shards.stream)
    assert not list(model.parent.glob(".*.train"))  # Ray Train's checkpoints went with the run


def test_bad_shards_stop_plan_and_run_naming_the_shard(tmp_path, section):
    import shutil

    copy = tmp_path / "section.shards"
    shutil.copytree(section / "section.shards", copy)
    victim = sorted(copy.glob("*.parquet"))[1]
    victim.write_bytes(victim.read_bytes()[:-100])
    config = tmp_path / "experiments.yaml"
    config.write_text(CONFIG.format(h5ad=section / "section.h5ad", shards=copy))
    for command in ("plan", "run"):
        result = run_cli(command, str(config), "--results", str(tmp_path / "results"))
        assert result.returncode == 2, result.stderr
        assert victim.name in result.stderr and "datasets[2].path" in result.stderr
    assert not (tmp_path / "results" / "cells").exists()


@pytest.mark.parametrize(("edit", "message"), [
    ("    modes: [zero-shot, fine-tune]\n", "mode fine-tune holds the whole dataset in memory, but 'section-shards' is shards"),
    ("    modes: [zero-shot]\n    normalize: median\n", "normalize: median needs every cell's depth"),
])
def test_modes_that_hold_the_dataset_in_memory_are_refused_at_load(tmp_path, section, edit, message):
    config = _config(tmp_path, section, CONFIG.replace("    modes: [zero-shot]\n", edit))
    result = run_cli_here("plan", str(config))
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_a_merlin_dataset_names_its_split(tmp_path):
    write_merlin_store(tmp_path / "store", cells={"train": (5,)})
    config = tmp_path / "merlin.yaml"
    config.write_text(MERLIN.format(store=tmp_path / "store").replace(", split: test", ""))
    result = run_cli_here("plan", str(config))
    assert result.returncode == 2 and "datasets[1].split" in result.stderr and "name one with split" in result.stderr
