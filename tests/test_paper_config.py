"""``experiments/paper.yaml``: the reusability study's matrix, valid offline, its files named as the pull
commands name them (``{pull: NAME}``, :mod:`grid.pulled`).

Nothing here downloads: the cache is an empty temporary folder and the hub endpoint a closed port, so
a command that tried the network would fail, not wait.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from grid.config import load_config
from grid.plan import artifact_summary, download_problems, expand, plan_problems, resource_summary
from grid.pulled import Pulled
from grid.schema import ConfigError

from .conftest import REPO, run_cli, run_cli_here

PAPER = REPO / "experiments" / "paper.yaml"
SEEDS = (42, 476, 761, 3407, 9824)
MODELS = {"random-mask", "gp-mask", "barlow-twins"}
# Per dataset and seed, the study's eight methods: zero-shot and fine-tune with each of the three
# checkpoints, supervised and PCA.
CELL_TYPE = {
    "cell-type-spatial": ["merscope", "xenium", "slideseq-human", "slideseq-mouse"],
    "cell-type-imputed": ["xenium-tangram", "xenium-spage", "xenium-uniport"],
    "cell-type-single-cell": ["gex-neocortex", "hit-ca4-dgc"],
    "cell-type-great-apes": ["great-apes"],
}
# MERSCOPE domain maps: STAGATE and GraphST on genes, RM and BT embeddings; CellCharter on RM and BT.
DOMAINS = {"spatial-domains": 2 * 3, "spatial-domains-cellcharter": 1 * 2}
EXPECTED_CELLS = len(SEEDS) * (8 * sum(map(len, CELL_TYPE.values())) + sum(DOMAINS.values()))  # 5 x (80 + 8) = 440


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty cache and an unreachable hub, for this process and the commands it starts."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SSL_ST_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    return cache


def test_the_paper_config_expands_to_the_study_matrix(offline):
    config = load_config(PAPER)
    plan = expand(config)
    assert EXPECTED_CELLS == 440
    assert len(plan.cells) == EXPECTED_CELLS
    assert len({c.cell_id for c in plan.cells}) == EXPECTED_CELLS
    assert config.seeds == SEEDS
    assert Counter(c.seed for c in plan.cells) == {seed: EXPECTED_CELLS // len(SEEDS) for seed in SEEDS}

    per_task = Counter(c.task for c in plan.cells)
    assert per_task == {**{t: 8 * len(d) * len(SEEDS) for t, d in CELL_TYPE.items()},
                        **{t: n * len(SEEDS) for t, n in DOMAINS.items()}}
    for task, datasets in CELL_TYPE.items():
        cells = [c for c in plan.cells if c.task == task]
        assert sorted({c.dataset for c in cells}) == sorted(datasets)
        modes = Counter((c.mode, c.model) for c in cells if c.seed == 42 and c.dataset == datasets[0])
        assert modes == {**{("zero-shot", m): 1 for m in MODELS}, **{("fine-tune", m): 1 for m in MODELS},
                         ("supervised", None): 1, ("pca", None): 1}
    clustering = [c for c in plan.cells if c.task in DOMAINS]
    assert {c.dataset for c in clustering} == {"merscope"}
    assert {(c.mode, c.model) for c in clustering} == {
        (m, i) for m in ("stagate", "graphst") for i in (None, "random-mask", "barlow-twins")
    } | {("cellcharter", "random-mask"), ("cellcharter", "barlow-twins")}

    # Every file is one the pull commands know; nothing is a path into somebody's cache.
    mouse = config.dataset("slideseq-mouse")
    assert mouse.resolved_species == "mouse" and mouse.orthologs == Pulled("ensembl-homologs")
    assert {m.name: m.checkpoint for m in config.models} == {
        "random-mask": Pulled("RandomMask"), "gp-mask": Pulled("GPMask"), "barlow-twins": Pulled("BarlowTwins")}
    assert all(isinstance(d.path, Pulled) for d in config.datasets)
    ape = next(c for c in plan.cells if c.dataset == "great-apes")
    assert ape.spec.config.split == (0.60, 0.20, 0.20)
    domains = next(c for c in clustering if c.mode == "stagate").spec.domains
    assert domains.n_domains == 10 and domains.library_key == "slice_id" and domains.settings.radius == 150

    assert "fine-tune {cpus: 4, gpus: 1, memory_gb: 48} x 200" in resource_summary(plan)


def test_plan_validates_it_offline_and_lists_what_to_fetch(offline, tmp_path):
    result = run_cli_here("plan", str(PAPER), "--results", str(tmp_path / "results"))
    assert result.returncode == 0, result.stderr
    assert f"paper: {EXPECTED_CELLS} cells" in result.stdout
    assert "artifacts: 0/13 built" in result.stdout
    assert "to fetch: 15 downloaded file(s)" in result.stdout
    fetch = next(line for line in result.stdout.splitlines() if line.startswith("to fetch"))
    data, models = fetch.split("before `ssl-st run` here: ")[1].split("; ")
    assert data.split()[:3] == ["ssl-st", "data", "pull"] and set(data.split()[3:]) == {
        "merscope-human-neocortex", "xenium-human-breast", "slideseq-human-kidney", "slideseq-mouse-kidney",
        "ensembl-homologs", "xenium-human-breast-tangram", "xenium-human-breast-spage", "xenium-human-breast-uniport",
        "gex-human-neocortex", "hit-ca4-dgc", "human-great-apes"}
    assert models == "ssl-st models pull RandomMask var GPMask BarlowTwins"
    assert not offline.exists()  # nothing was downloaded, not even a lock file


def test_plan_of_the_paper_imports_no_data_stack(offline, tmp_path):
    report = (
        "import json, sys\nfrom grid.cli import app\ntry:\n    app(sys.argv[1:], prog_name='ssl-st')\n"
        "except SystemExit:\n    pass\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", report, "plan", str(PAPER), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "SSL_ST_CACHE": str(offline)})
    loaded = set(json.loads(done.stderr.strip().splitlines()[-1]))
    assert not loaded & {"torch", "ray", "sklearn", "anndata", "pandas", "h5py"}, sorted(loaded)


def test_download_problems_point_at_the_field_and_the_command(offline, tmp_path):
    plan = expand(load_config(PAPER))
    problems = download_problems(plan, PAPER, tmp_path / "results")
    first = problems[0]
    lines = PAPER.read_text().splitlines()
    assert first.field == "datasets[0].path" and "{pull: merscope-human-neocortex}" in lines[first.line - 1]
    assert "run `ssl-st data pull merscope-human-neocortex`" in first.message
    assert {p.field for p in problems} >= {"datasets[3].orthologs", "models[0].checkpoint", "models[2].genes"}


def test_ids_do_not_depend_on_the_download_or_the_cache(offline, tmp_path, monkeypatch):
    before = {c.label(): c.cell_id for c in expand(load_config(PAPER)).cells}
    elsewhere = tmp_path / "other-cache"
    monkeypatch.setenv("SSL_ST_CACHE", str(elsewhere))
    config = load_config(PAPER)
    for spec in (*config.datasets, *config.models):
        for value in (getattr(spec, key, None) for key in ("path", "orthologs", "checkpoint", "genes")):
            if isinstance(value, Pulled):
                value.local_path().parent.mkdir(parents=True, exist_ok=True)
                value.local_path().touch()  # "downloaded"
    plan = expand(config)
    assert {c.label(): c.cell_id for c in plan.cells} == before
    assert "to fetch" not in artifact_summary(list(plan.artifacts.values()), tmp_path / "results")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


HEAD = "name: t\nseeds: [1]\nreference: atlas\ndatasets:\n  - {name: atlas, flavour: atlas, n_cells: 100}\n"


def test_pulled_names_are_checked_where_they_are_written(offline, tmp_path):
    config = _write(tmp_path / "a.yaml", HEAD + (
        "  - {name: m, source: h5ad, path: {pull: merscope-human-neocortx}}\n"
        "  - {name: x, path: {pull: xenium-human-breast}}\n"
        "  - {name: k, source: h5ad, path: {pull: RandomMask}}\n"
        "models:\n  - {name: rm, method: checkpoint, checkpoint: {pull: var}}\n"
        "tasks:\n  - {name: c, modes: [pca], datasets: [m]}\n"
    ))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    found = {p.field: (p.line, p.message) for p in info.value.problems}
    assert found["datasets[1].path.pull"][0] == 6
    assert "did you mean 'merscope-human-neocortex'" in found["datasets[1].path.pull"][1]
    assert "set source: h5ad" in found["datasets[2].path"][1]
    assert "RandomMask.ckpt, not an h5ad file" in found["datasets[3].path"][1]
    assert "var.parquet, not a checkpoint" in found["models[0].checkpoint"][1]


def test_a_pulled_file_is_read_from_the_cache_once_downloaded(offline, tmp_path):
    from ssl_st.datasets import generate, write_h5ad_atomic

    from grid.stages import load_dataset

    config_file = _write(tmp_path / "b.yaml", HEAD + (
        "  - {name: x, source: h5ad, path: {pull: xenium-human-breast}, domain_key: tissue}\n"
        "models: []\ntasks:\n  - {name: d, kind: spatial-clustering, methods: [gmm], n_domains: 3, datasets: [x]}\n"
    ))
    config = load_config(config_file)
    spec = config.dataset("x")
    with pytest.raises(FileNotFoundError, match="run `ssl-st data pull xenium-human-breast` here"):
        load_dataset(spec)
    assert plan_problems(expand(config), config_file) == []  # not downloaded: listed to fetch, not checked

    write_h5ad_atomic(generate("xenium", n_cells=60), spec.path.local_path())
    assert load_dataset(spec).n_obs == 60
    problems = plan_problems(expand(config), config_file)  # downloaded: its obs columns are checked
    assert [p.field for p in problems] == ["datasets[1].domain_key"] and "no obs column 'tissue'" in problems[0].message


def test_run_without_the_downloads_exits_2_before_anything_runs(tmp_path, offline):
    """On an embedded Ray every build runs here: files not pulled are named with the command that
    fetches them, at their config lines, and nothing starts."""
    env_address = os.environ.pop("RAY_ADDRESS", None)
    try:
        result = run_cli("run", str(REPO / "experiments" / "paper.yaml"), "--results", str(tmp_path / "results"))
    finally:
        if env_address is not None:
            os.environ["RAY_ADDRESS"] = env_address
    assert result.returncode == 2, result.stdout + result.stderr
    assert "ssl-st data pull merscope-human-neocortex" in result.stderr and "nothing was run" in result.stderr
    assert "paper.yaml:" in result.stderr
    assert not (tmp_path / "results" / "cells").exists()
