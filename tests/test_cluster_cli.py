"""``ssl-st cluster``: one section in, obs['domain'] out, metrics printed; bad input exits 2."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from ssl_st import datasets

from .conftest import run_cli_here


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "section.h5ad"
    adata = datasets.generate("merscope", seed=5, n_cells=500)
    adata.obsm["X_fake"] = np.random.default_rng(0).normal(size=(adata.n_obs, 8)).astype(np.float32)
    datasets.write_h5ad_atomic(adata, path)
    return path


@pytest.mark.parametrize("method", ["gmm", "cellcharter", "stagate"])
def test_cluster_writes_domains_and_prints_metrics(section, tmp_path, method):
    out = tmp_path / "out.h5ad"
    epochs = ["--epochs", "15"] if method == "stagate" else []  # a flag a method does not have is an error
    result = run_cli_here("cluster", str(section), "--method", method, "--n-domains", "6", "--labels", "layer",
                     *epochs, "--out", str(out), check=True)
    for metric in ("ari", "nmi", "homogeneity", "completeness", "chaos", "pas", "asw"):
        assert metric in result.stdout
    adata = ad.read_h5ad(out)
    assert adata.obs["domain"].nunique() == 6
    assert list(adata.obs["layer"].cat.categories) == ["L1", "L2/3", "L4", "L5", "L6", "WM"]  # truth kept
    if method != "gmm":
        assert f"X_{method}" in adata.obsm and "spatial_connectivities" in adata.obsp
        assert adata.uns["spatial_neighbors"]["mean_degree"] > 2


def test_an_obsm_embedding_replaces_the_genes(section, tmp_path):
    out = tmp_path / "out.h5ad"
    run_cli_here("cluster", str(section), "--method", "leiden", "--n-domains", "4", "--input", "X_fake", "--out", str(out), check=True)
    adata = ad.read_h5ad(out)
    assert adata.uns["domain"]["info"]["n_features"] == 8
    assert adata.uns["domain"]["params"]["use_rep"] == "X_fake"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "stagatte", "--n-domains", "6"], "unknown spatial-domain method 'stagatte'; did you mean 'stagate'"),
        (["--method", "gmm"], "needs n_domains"),
        (["--method", "gmm", "--n-domains", "6", "--labels", "domain"], "pass another --key"),
        (["--method", "gmm", "--n-domains", "6", "--labels", "tissue"], "obs has no column 'tissue'"),
        (["--method", "gmm", "--n-domains", "6", "--input", "X_random_mask"], "obsm['X_random_mask'] not found"),
        (["--method", "stagate", "--n-domains", "6", "--graph", "radius"], "needs radius"),
        (["--method", "gmm", "--n-domains", "6", "--epochs", "15"], "gmm has no setting 'epochs'"),
    ],
)
def test_bad_input_names_the_problem_and_writes_nothing(section, tmp_path, args, message):
    # in-process (the same typer app as the console script): no interpreter start per case
    from typer.testing import CliRunner

    from grid.cli import app

    out = tmp_path / "out.h5ad"
    result = CliRunner().invoke(app, ["cluster", str(section), *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.stderr.replace("\n", " ")
    assert not out.exists()


def test_a_section_without_coordinates_is_refused(tmp_path):
    adata = datasets.generate("merscope", seed=5, n_cells=200)
    del adata.obsm["spatial"]
    path = tmp_path / "flat.h5ad"
    adata.write_h5ad(path)
    result = run_cli_here("cluster", str(path), "--method", "stagate", "--n-domains", "6", "--out", str(tmp_path / "o.h5ad"))
    assert result.returncode == 2 and "obsm['spatial'] is missing" in result.stderr
