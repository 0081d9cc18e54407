"""`ssl-st data import` and `ssl-st data pull`, as a user runs them."""

from __future__ import annotations

import anndata as ad
import numpy as np

from ssl_st.datasets import write_h5ad_atomic
from ssl_st.datasets import generate
from ssl_st.datasets.registry import REPO, STUDY_DATASETS

from . import published_fixtures as pf
from .conftest import run_cli_here
from .vendor_fixtures import write_xenium


def test_import_a_xenium_folder(tmp_path):
    expected = write_xenium(tmp_path / "run")
    out = tmp_path / "xenium.h5ad"
    result = run_cli_here("data", "import", str(tmp_path / "run"), "--format", "xenium", "--out", str(out), check=True)
    assert "dropped" in result.stdout
    adata = ad.read_h5ad(out)
    assert adata.obsm["spatial"].shape == (adata.n_obs, 2)
    assert adata.layers["counts"].sum() == adata.X.sum() > 0
    assert adata.uns["ssl_st_import"]["format"] == "xenium"
    assert expected is not None


def test_import_refuses_a_mislabelled_folder_and_writes_nothing(tmp_path):
    write_xenium(tmp_path / "run")
    out = tmp_path / "out.h5ad"
    result = run_cli_here("data", "import", str(tmp_path / "run"), "--format", "merscope", "--out", str(out))
    assert result.returncode == 2
    assert "cell_by_gene" in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.h5ad*"))


def test_pull_a_study_dataset_from_a_local_hub(tmp_path):
    name = "xenium-human-breast"
    served = tmp_path / "hub" / REPO / STUDY_DATASETS[name].path_in_repo
    served.parent.mkdir(parents=True)
    write_h5ad_atomic(generate("xenium", n_cells=50), served)
    with pf.serve_directory(tmp_path / "hub") as url:
        result = run_cli_here("data", "pull", name, "--endpoint", str(url), "--cache", str(tmp_path / "cache"), check=True)
    local = tmp_path / "cache" / "hub" / REPO.replace("/", "--") / served.name
    assert str(local) in result.stdout
    assert np.array_equal(ad.read_h5ad(local).X.toarray(), ad.read_h5ad(served).X.toarray())
    unknown = run_cli_here("data", "pull", "merfish", "--cache", str(tmp_path / "cache"))
    assert unknown.returncode == 2 and "merscope-human-neocortex" in unknown.stderr


def test_a_file_outside_the_hub_is_fetched_from_its_own_url(tmp_path):
    from ssl_st import hub

    served = tmp_path / "srv" / "owner" / "repo" / "orthologs.csv"
    served.parent.mkdir(parents=True)
    served.write_text("Mouse_Ensembl_ID,Human_Ensembl_ID\nENSMUSG00000000001,ENSG00000000001\n")
    with pf.serve_directory(tmp_path / "srv") as url:
        f = hub.PublishedFile("orthologs", "owner/repo", "orthologs.csv", url=f"{url}/owner/repo/resolve/main/orthologs.csv")
        assert hub.resolve_url(f, endpoint="http://unused.invalid") == f.url
        path = hub.pull([f], cache_dir=tmp_path / "cache")["orthologs"]
    assert path.read_text() == served.read_text()
    assert hub.read_lock(tmp_path / "cache")["orthologs"]["sha256"] == hub.sha256_file(path)
