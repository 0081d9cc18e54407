"""Messages speak the language the user wrote in: CLI flags on the command line, YAML keys in a grid.

Finding (issue 11): ``ssl-st data import`` said ``pass label_key=``; ``labels: cell_type`` on an h5ad
dataset was taken as a path; a wrong ``label_key`` passed ``ssl-st plan`` and failed at run time;
``ssl-st run`` ended with "failed" and no pointer; a task matching no dataset planned 0 cells; long
training showed no epoch count or ETA.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from grid.cli import app

from .conftest import tiny_config


def _h5ad(path, *, x=None, layers=None, obs_columns=("cell_type",)):
    rng = np.random.default_rng(0)
    n = 30
    x = rng.poisson(2, (n, 4)).astype(np.float32) if x is None else x
    obs = pd.DataFrame({c: ["a", "b", "c"] * (n // 3) for c in obs_columns}, index=[f"c{i}" for i in range(n)])
    adata = ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=["ACTB", "GAPDH", "VIM", "CD3E"]),
                       layers=layers or {}, obsm={"spatial": rng.uniform(0, 9, (n, 2))})
    adata.write_h5ad(path)
    return path


def _import(*args):
    return CliRunner().invoke(app, ["data", "import", *map(str, args)])


@pytest.mark.parametrize(
    ("options", "says", "never"),
    [
        (["--label-key", "celltype"], "--label-key", "label_key"),
        (["--counts-layer", "raw_counts"], "--counts-layer", "counts_layer"),
        (["--spatial-key", "xy"], "--spatial-key", "spatial_key"),
        (["--labels", "cell_type"], "--label-key cell_type", "labels="),
        (["--label-column", "Cluster"], "--labels", "label_column"),
    ],
)
def test_import_errors_name_the_flags(tmp_path, options, says, never):
    source = _h5ad(tmp_path / "s.h5ad")
    out = tmp_path / "out.h5ad"
    result = _import(source, "--out", out, *options)
    assert result.exit_code == 2, result.output
    message = result.stderr.replace("\n", " ")
    assert says in message and never + "=" not in message and str(source) in message, message
    assert not out.exists()


def test_import_of_normalised_values_names_values_and_counts_layer(tmp_path):
    source = _h5ad(tmp_path / "s.h5ad", x=np.full((30, 4), 0.25, np.float32))
    result = _import(source, "--out", tmp_path / "out.h5ad")
    message = result.stderr.replace("\n", " ")
    assert result.exit_code == 2 and "--values normalized" in message and "--counts-layer" in message, message
    assert "normalised values cannot be used" not in message


def test_import_without_labels_needs_no_label_flag(tmp_path):
    source = _h5ad(tmp_path / "s.h5ad", obs_columns=("batch",))
    result = _import(source, "--out", tmp_path / "out.h5ad")
    assert result.exit_code == 0, result.output


def _config_with(tmp_path, dataset: str, *, task: str = "") -> tuple:
    path = tiny_config(tmp_path, extra_datasets=f"  - {dataset}\n")
    if task:
        path.write_text(path.read_text() + task)
    return path, path.read_text().splitlines()


def test_labels_on_an_h5ad_dataset_says_label_key(tmp_path):
    from grid.config import load_config
    from grid.schema import ConfigError

    _h5ad(tmp_path / "s.h5ad")
    path, lines = _config_with(tmp_path, "{name: mine, source: h5ad, path: s.h5ad, labels: cell_type}")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.field == "datasets[3].labels" and "label_key: cell_type" in problem.message, problem
    assert problem.line == lines.index("  - {name: mine, source: h5ad, path: s.h5ad, labels: cell_type}") + 1
    assert "does not exist" not in str(info.value)


def test_plan_checks_the_label_column_of_an_h5ad_dataset(tmp_path):
    source = _h5ad(tmp_path / "s.h5ad", obs_columns=("celltype", "batch"))
    path, lines = _config_with(tmp_path, "{name: mine, source: h5ad, path: s.h5ad, label_key: cell_typ}")
    result = CliRunner().invoke(app, ["plan", str(path), "--results", str(tmp_path / "results")])
    message = result.stderr.replace("\n", " ")
    assert result.exit_code == 2, result.output
    line = lines.index("  - {name: mine, source: h5ad, path: s.h5ad, label_key: cell_typ}") + 1
    assert f"{path}:{line}:" in message and "datasets[3].label_key" in message
    assert str(source) in message and "'cell_typ'" in message and "celltype" in message and "batch" in message
    fixed = path.read_text().replace("label_key: cell_typ", "label_key: celltype")
    path.write_text(fixed)
    assert CliRunner().invoke(app, ["plan", str(path), "--results", str(tmp_path / "results")]).exit_code == 0


def test_a_task_that_matches_no_dataset_is_an_error_naming_it(tmp_path):
    from grid.config import load_config
    from grid.schema import ConfigError

    path = tmp_path / "experiments.yaml"
    path.write_text("name: lonely\nseeds: [1]\nreference: atlas\ndatasets:\n  - {name: atlas, flavour: atlas, n_cells: 100}\n"
                    "models: []\ntasks:\n  - name: only-pca\n    modes: [pca]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.field == "tasks[0]" and "task 'only-pca' matches no dataset" in problem.message, problem
    assert problem.line == 8


def test_a_task_that_plans_no_cells_is_an_error_naming_it(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(tiny_config(tmp_path).read_text()
                    + "  - name: tune-nothing\n    modes: [fine-tune]\n    models: [random-init]\n")
    result = CliRunner().invoke(app, ["plan", str(path), "--results", str(tmp_path / "results")])
    assert result.exit_code == 2 and "task 'tune-nothing' plans no cells" in result.stderr.replace("\n", " "), result.output


def test_the_run_summary_points_to_status_when_cells_failed():
    from grid.cli.experiments import finished_line

    assert "ssl-st status" in finished_line(12.0, done=3, failed=2)
    assert "ssl-st status" not in finished_line(12.0, done=5, failed=0)


def test_epoch_progress_prints_a_line_every_tenth_off_a_terminal():
    import io

    from rich.console import Console

    from grid.cli.common import epoch_progress

    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=False)
    with epoch_progress("stagate", total=40, console=console) as advance:
        for epoch in range(1, 41):
            advance(epoch, loss=1.0 / epoch)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 10, lines
    assert lines[0].startswith("stagate: epoch 4/40") and "eta" in lines[0] and "loss 0.25" in lines[0]
    assert lines[-1].startswith("stagate: epoch 40/40")


@pytest.mark.slow  # 1 s of STAGATE, 8 s of importing torch and torch-geometric when run alone
def test_cluster_training_shows_epochs_of_total(tmp_path):
    from ssl_st import datasets

    path = tmp_path / "section.h5ad"
    datasets.write_h5ad_atomic(datasets.generate("merscope", seed=5, n_cells=200), path)
    result = CliRunner().invoke(app, ["cluster", str(path), "--method", "stagate", "--n-domains", "4", "--epochs", "20",
                                      "--out", str(tmp_path / "out.h5ad")])
    assert result.exit_code == 0, result.output
    assert "stagate: epoch 2/20" in result.stderr and "stagate: epoch 20/20" in result.stderr
