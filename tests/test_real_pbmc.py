"""Real data, as a user brings it: scanpy's ``pbmc68k_reduced`` through import, a grid and a query.

The file ships with scanpy (``scanpy/datasets/10x_pbmc68k_reduced.h5ad``: 700 PBMCs x 765 genes, read
here with anndata, without importing scanpy). Its ``X`` is scaled (negative values) and its ``.raw.X``
is ``log1p`` of each cell scaled to 10,000 over the whole transcriptome, then cut to 765 genes, so
neither holds counts. Integer counts are rebuilt as ``expm1(raw.X) * obs['n_counts'] / 10,000``:
the smallest non-zero value of every cell becomes 1 and every entry lies within 0.08 of an integer
(measured), so rounding recovers the counts the file was made from.

The same cells go into the grid twice: as rebuilt counts, and as the file's own log-normalised
``.raw.X`` declared ``values: log-normalized``. Both reach the models as log1p(CP10k) over the
vocabulary, so their scores agree; an undeclared import of ``.raw.X`` is refused naming ``--values``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from grid.cli import app

from .conftest import run_cli_here

# the file was written by an old anndata, which says so on every read
pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore:.*(written with a very old version|without encoding metadata)")]

CONFIG = """\
name: pbmc
seeds: [0]
reference: pbmc
datasets:
  - {name: pbmc, source: h5ad, path: pbmc-counts.h5ad, label_key: bulk_labels}
  - {name: pbmc-lognorm, source: h5ad, path: pbmc-lognorm.h5ad, label_key: bulk_labels,
     values: log-normalized, target_sum: 10000}
models:
  - name: random-mask
    method: random-mask
    encoder: {units: [64, 16]}
    pretrain: {epochs: 3, batch_size: 128}
tasks:
  - name: cell-type
    datasets: [pbmc, pbmc-lognorm]
    modes: [pca, zero-shot]
    pca_components: 16
"""


def pbmc68k_reduced() -> Path:
    # scanpy is a dev dependency: without it this test must fail, not skip unseen
    spec = importlib.util.find_spec("scanpy")
    assert spec is not None and spec.origin is not None, "scanpy is not installed (pip install -e '.[dev]')"
    return Path(spec.origin).parent / "datasets" / "10x_pbmc68k_reduced.h5ad"


def with_counts(source: Path, path: Path) -> Path:
    """The file with its counts rebuilt into ``layers['counts']`` (see the module docstring)."""
    adata = ad.read_h5ad(source)
    scaled = np.expm1(adata.raw.X.toarray().astype(np.float64)) * adata.obs["n_counts"].to_numpy()[:, None] / 1e4
    assert np.abs(scaled - np.round(scaled)).max() < 0.1  # counts, up to the file's float precision
    counts = ad.AnnData(X=sp.csr_matrix(np.round(scaled), dtype=np.float32), obs=adata.obs[["bulk_labels"]],
                        var=adata.raw.var)
    counts.layers["counts"] = counts.X
    counts.write_h5ad(path)
    return path


def test_pbmc68k_through_import_a_grid_and_a_query(tmp_path, ray_address):
    source = pbmc68k_reduced()
    cli = CliRunner()
    refused = cli.invoke(app, ["data", "import", str(source), "--out", str(tmp_path / "x.h5ad"), "--label-key", "bulk_labels"])
    assert refused.exit_code == 2 and "--values log-normalized" in refused.stderr.replace("\n", " "), refused.output

    built = with_counts(source, tmp_path / "built.h5ad")
    for args in (
        [built, "--out", tmp_path / "pbmc-counts.h5ad"],
        [source, "--out", tmp_path / "pbmc-lognorm.h5ad", "--counts-layer", "raw", "--values", "log-normalized",
         "--target-sum", "10000"],
    ):
        done = cli.invoke(app, ["data", "import", *map(str, args), "--label-key", "bulk_labels"])
        assert done.exit_code == 0, done.output
        assert "700 cells x 765 genes" in done.stdout

    config = tmp_path / "experiments.yaml"
    config.write_text(CONFIG)
    results = tmp_path / "results"
    run = run_cli_here("run", config, "--results", results, "--address", ray_address)  # as the commands above
    assert run.returncode == 0, run.stderr
    query = cli.invoke(app, ["query", "SELECT dataset, mode, value FROM results WHERE metric = 'macro_f1' "
                                      "ORDER BY dataset, mode", "--results", str(results), "--format", "json"])
    assert query.exit_code == 0, query.output
    rows = {(r["dataset"], r["mode"]): r["value"] for r in json.loads(query.stdout)}
    assert set(rows) == {(d, m) for d in ("pbmc", "pbmc-lognorm") for m in ("pca", "zero-shot")}
    assert rows[("pbmc", "pca")] > 0.4  # 10 immune types; PCA + kNN separates the major ones
    for mode in ("pca", "zero-shot"):  # counts and log-normalised values are the same cells, the same input
        assert abs(rows[("pbmc", mode)] - rows[("pbmc-lognorm", mode)]) < 0.03, rows
