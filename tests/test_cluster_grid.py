"""Spatial-clustering and tune-clustering tasks in the grid: expansion, validation, a real run."""

from __future__ import annotations

import json

import pytest

from grid.config import load_config
from grid.plan import expand
from grid.schema import ConfigError
from grid.store import ResultStore

from .conftest import run_cli_here, tiny_config

CLUSTERING_TASKS = """\
  - name: domains
    kind: spatial-clustering
    datasets: [merscope]
    methods: [stagate, gmm]
    inputs: [expression, random-mask]
    n_domains: 6
    clustering: {epochs: 40}
  - name: tuned
    kind: tune-clustering
    datasets: [merscope]
    methods: [gmm]
    seeds: [1]
    n_domains: 6
    objectives: [label-free, oracle]
    tuning:
      num_samples: 1  # a search of several trials, and its resume, is tests/test_cluster_tune.py's
      space:
        pca_components: {low: 4, high: 24, integer: true}
"""


def clustering_config(tmp_path, tasks: str = CLUSTERING_TASKS, name: str = "experiments.yaml"):
    path = tiny_config(tmp_path, name=name)
    path.write_text(path.read_text() + tasks)
    return path


def test_clustering_cells_are_method_x_input_x_seed(tmp_path):
    plan = expand(load_config(clustering_config(tmp_path)))
    domains = [c for c in plan.cells if c.task == "domains"]
    assert len(domains) == 2 * 2 * 2  # methods x inputs x seeds
    assert {(c.mode, c.model) for c in domains} == {
        ("stagate", None), ("stagate", "random-mask"), ("gmm", None), ("gmm", "random-mask")
    }
    assert all(c.stage == "spatial-clustering" for c in domains)
    # an SSL input needs the trained model; expression needs only the section
    assert all((c.trained_model is None) == (c.model is None) for c in domains)
    tuned = [c for c in plan.cells if c.task == "tuned"]
    assert sorted({c.mode for c in tuned}) == ["gmm/label-free", "gmm/oracle"]
    assert all(c.stage == "tune-clustering" for c in tuned)


def test_adding_clustering_tasks_keeps_the_cell_type_ids(tmp_path):
    before = {c.label(): c.cell_id for c in expand(load_config(tiny_config(tmp_path, name="a.yaml"))).cells}
    after = {c.label(): c.cell_id for c in expand(load_config(clustering_config(tmp_path, name="b.yaml"))).cells}
    assert {k: after[k] for k in before} == before


def test_a_clustering_setting_renews_only_its_cells(tmp_path):
    a = {c.label(): c.cell_id for c in expand(load_config(clustering_config(tmp_path, name="a.yaml"))).cells}
    more = CLUSTERING_TASKS.replace("{epochs: 40}", "{epochs: 41}")
    b = {c.label(): c.cell_id for c in expand(load_config(clustering_config(tmp_path, more, name="b.yaml"))).cells}
    changed = {label for label in a if a[label] != b[label]}
    # epochs is a setting of STAGATE alone: the mixture's cells of the same task keep their ids
    assert changed == {label for label in a if label.startswith("domains/") and "/stagate/" in label}


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        (CLUSTERING_TASKS.replace("[expression, random-mask]", "[expression, random-mask2]"), "did you mean 'random-mask'"),
        (CLUSTERING_TASKS.replace("methods: [stagate, gmm]", "methods: [stagat]"), "stagate"),
        (CLUSTERING_TASKS.replace("    n_domains: 6\n    clustering", "    clustering"), "needs n_domains"),
        (CLUSTERING_TASKS.split("    tuning:")[0], "needs 'tuning'"),
        (CLUSTERING_TASKS.replace("pca_components: {low", "colour: {low"), "cannot tune 'colour'"),
        (CLUSTERING_TASKS.replace("objectives: [label-free, oracle]", "objectives: [cheating]"), "label-free"),
        (CLUSTERING_TASKS.replace("{epochs: 40}", "{graph: radius}"), "radius"),
    ],
)
def test_bad_clustering_tasks_are_rejected_with_their_place(tmp_path, tasks, message):
    with pytest.raises(ConfigError) as info:
        load_config(clustering_config(tmp_path, tasks))
    assert message in str(info.value)
    assert "experiments.yaml:" in str(info.value)


@pytest.mark.ray
def test_clustering_and_tuning_run_in_the_grid(tmp_path, ray_address):
    config = clustering_config(tmp_path)
    # the cell-type task cut to its PCA cells on merscope (2 cells, not 12, and no xenium or random-init
    # to build): what this test checks are the clustering tasks, beside a cell-type task
    config.write_text(config.read_text().replace("modes: [zero-shot, pca]", "modes: [pca]\n    datasets: [merscope]", 1))
    results = tmp_path / "results"
    # `ssl-st run` in this process, on workers earlier tests started: the run in a fresh interpreter,
    # a job of its own with the shipped code, Tune inside its tasks, is tests/test_object_store.py's
    done = run_cli_here("run", config, "--results", results, "--address", ray_address)
    assert done.returncode == 0, done.stdout + done.stderr
    table = ResultStore(results).table().to_pandas()
    assert (table["status"] == "done").all()
    assert set(table["task"]) == {"cell-type", "domains", "tuned"}
    clustered = table[table["task"] == "domains"]
    assert clustered["cell_id"].nunique() == 2 * 2 * 2  # methods x inputs x seeds
    assert set(clustered[clustered["kind"] == "metric"]["metric"]) == {
        "ari", "nmi", "homogeneity", "completeness", "chaos", "pas", "asw"
    }
    stagate_rm = clustered[(clustered["mode"] == "stagate") & (clustered["model"] == "random-mask")]
    info = dict(zip(stagate_rm["metric"], stagate_rm["value"]))
    assert info["n_features"] == 16  # the tiny encoder's embedding replaced the 300 genes
    assert info["epochs"] == 40 and info["mean_degree"] >= 6
    tuned = table[table["task"] == "tuned"]
    oracle = tuned[(tuned["mode"] == "gmm/oracle") & (tuned["metric"] == "oracle")]
    assert (oracle["value"] == 1).all() and len(oracle) == 1
    assert (tuned[(tuned["mode"] == "gmm/label-free") & (tuned["metric"] == "oracle")]["value"] == 0).all()
    assert tuned[tuned["metric"] == "tuned_pca_components"]["value"].between(4, 24).all()
    assert json.loads(tuned["config"].iloc[0])["cell"]["objective"] in ("label-free", "oracle")
    # the two searches ran at once in one Ray job, each on its own objective: the oracle's score is
    # the ARI of its best settings (rerun and recorded), the label-free score is not
    for mode, same in (("gmm/oracle", True), ("gmm/label-free", False)):
        for _, cell in tuned[tuned["mode"] == mode].groupby("cell_id"):
            values = dict(zip(cell["metric"], cell["value"]))
            assert (values["tune_score"] == pytest.approx(values["ari"])) is same, (mode, values)
    # the report's table shows the clustering tasks too
    assert "domains" in done.stdout and "ari" in done.stdout
    # every domain map was kept beside its rows, and scores what they say
    from sklearn.metrics import adjusted_rand_score

    from grid import details

    for cell_id, cell in table[table["task"].isin(["domains", "tuned"])].groupby("cell_id"):
        kept = ResultStore(results).details(cell_id, details.DOMAINS)
        assert kept is not None and len(kept) == 500 and kept[["x", "y"]].notna().all().all()
        ari = cell[cell["metric"] == "ari"]["value"].item()
        assert adjusted_rand_score(kept["truth"], kept["domain"]) == pytest.approx(ari)

    # a tuning cell lost before it was recorded (a killed run) resumes from its Tune experiment:
    # the finished trials are reused, not rerun
    tuned_ids = set(tuned["cell_id"])
    before = tuned[tuned["metric"].isin(["tuned_pca_components", "tune_score"])].sort_values(["cell_id", "metric"])
    for cell_id in tuned_ids:
        assert any((results / "work" / cell_id).glob("*/result.json"))  # Tune's trials live with the cell
        ResultStore(results).path(cell_id).unlink()
    again = run_cli_here("run", config, "--results", results, "--address", ray_address)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"running {len(tuned_ids)} of" in again.stderr
    table = ResultStore(results).table().to_pandas()
    redone = table[table["cell_id"].isin(tuned_ids)]
    assert (redone[redone["metric"] == "tune_resumed"]["value"] == 1).all()
    assert len(redone[redone["metric"] == "tune_resumed"]) == len(tuned_ids)
    after = redone[redone["metric"].isin(["tuned_pca_components", "tune_score"])].sort_values(["cell_id", "metric"])
    assert after["value"].tolist() == before["value"].tolist()
