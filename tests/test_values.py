"""Declared value types: counts, normalised or log-normalised expression, one way in for each.

Finding (issue 11): a grid refused normalised values while ``ssl-st cluster`` normalised and logged
them again, and median normalisation made the result depend on the user's arbitrary scale (GMM ARI
0.40 -> 0.06 on one real section for the same values x 1 ... x 10,000). Here every reader and command
takes a declared type, builds log-normalised values from it, and refuses undeclared non-integers.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from ssl_st import datasets
from ssl_st.io import DataError, ValueType, read_h5ad
from ssl_st.pp import log_normalized, normalize_log1p

SCALES = (1.0, 100.0, 10_000.0)


def _section(n_cells: int = 300) -> ad.AnnData:
    section = datasets.generate("merscope", seed=1, n_cells=n_cells)
    return section[:, ~section.var_names.str.startswith("Blank-")].copy()


def _normalised(section: ad.AnnData, scale: float) -> ad.AnnData:
    """The section as a user might bring it: each cell scaled to ``scale`` (no integer left), X only."""
    counts = sp.csr_matrix(section.layers["counts"], dtype=np.float64)
    library = np.asarray(counts.sum(axis=1)).ravel()
    out = ad.AnnData(X=sp.csr_matrix(sp.diags(scale / library) @ counts, dtype=np.float32),
                     obs=section.obs.copy(), var=section.var.copy(), obsm={"spatial": section.obsm["spatial"]})
    return out


@pytest.fixture(scope="module")
def section() -> ad.AnnData:
    return _section()


def test_every_declared_type_becomes_the_same_log_normalised_values():
    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(2.0, (40, 30)).astype(np.float32) + np.eye(40, 30, dtype=np.float32))
    library = np.asarray(counts.sum(axis=1)).ravel()
    expected = normalize_log1p(counts, 1e4).toarray()
    assert np.allclose(log_normalized(counts, ValueType(), 1e4).toarray(), expected)
    for scale in SCALES:  # any per-cell scale, any global scale: the same values at the same target
        normalised = sp.csr_matrix(sp.diags(scale / library) @ counts)
        assert np.allclose(log_normalized(normalised, ValueType("normalized"), 1e4).toarray(), expected, atol=1e-5)
        logged = sp.csr_matrix(np.log1p(normalised.toarray()))
        assert np.allclose(log_normalized(logged, ValueType("log-normalized"), 1e4).toarray(), expected, atol=1e-4)
    # "median" means the median library size of counts; of normalised values it would be the user's
    # arbitrary scale, so they go to the declared target sum, else 10,000
    for scale in SCALES:
        normalised = sp.csr_matrix(sp.diags(scale / library) @ counts)
        assert np.allclose(log_normalized(normalised, ValueType("normalized"), "median").toarray(), expected, atol=1e-5)
    declared = ValueType("log-normalized", target_sum=1e6)
    logged = sp.csr_matrix(np.log1p(sp.diags(1e6 / library) @ counts.toarray()))
    assert np.allclose(log_normalized(logged, declared, "median").toarray(), normalize_log1p(counts, 1e6).toarray(), atol=1e-4)


def test_a_normalised_section_clusters_the_same_at_any_scale(section, tmp_path):
    from cluster import DomainConfig, find_domains

    found = []
    for scale in SCALES:
        path = tmp_path / f"x{int(scale)}.h5ad"
        _normalised(section, scale).write_h5ad(path)
        adata = read_h5ad(path, label_key="layer", values="normalized", require_spatial=True)
        assert adata.uns["ssl_st"]["values"] == "normalized" and "counts" not in adata.layers
        found.append(find_domains(adata, DomainConfig.from_name("gmm", n_domains=6), seed=0).labels)
    truth = section.obs["layer"].to_numpy()
    aris = [adjusted_rand_score(truth, labels) for labels in found]
    assert all(adjusted_rand_score(found[0], labels) > 0.99 for labels in found[1:]), aris
    assert max(aris) - min(aris) < 0.01, aris


def test_undeclared_non_integers_are_refused_by_the_grid_with_the_yaml_key(section, tmp_path):
    from grid.config import DatasetSpec
    from grid.stages import load_dataset

    path = tmp_path / "normalised.h5ad"
    _normalised(section, 1e4).write_h5ad(path)
    with pytest.raises(DataError) as caught:
        load_dataset(DatasetSpec(name="mine", source="h5ad", path=str(path)))
    message = str(caught.value)
    assert str(path) in message and "non-integer" in message
    assert "values: normalized" in message and "values=" not in message and "--values" not in message
    declared = load_dataset(DatasetSpec(name="mine", source="h5ad", path=str(path), values="normalized", target_sum=1e4))
    assert declared.uns["ssl_st"]["values"] == "normalized" and declared.uns["ssl_st"]["target_sum"] == 1e4


def test_the_cluster_command_refuses_undeclared_values_and_takes_declared_ones(section, tmp_path):
    from typer.testing import CliRunner

    from grid.cli import app

    path = tmp_path / "normalised.h5ad"
    _normalised(section, 100.0).write_h5ad(path)
    out = tmp_path / "out.h5ad"
    args = ["cluster", str(path), "--method", "kmeans", "--n-domains", "6", "--out", str(out)]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "--values normalized" in refused.stderr, refused.output
    assert "values=" not in refused.stderr and not out.exists()
    done = CliRunner().invoke(app, [*args, "--values", "normalized"])
    assert done.exit_code == 0, done.output
    assert ad.read_h5ad(out).uns["ssl_st"]["values"] == "normalized"


def test_log_normalised_values_must_look_like_log1p(section, tmp_path):
    path = tmp_path / "normalised.h5ad"
    _normalised(section, 1e4).write_h5ad(path)  # normalised, not logged: values up to thousands
    with pytest.raises(DataError, match=r"values=.normalized."):
        read_h5ad(path, label_key=None, values="log-normalized")
    scaled = _normalised(section, 1e4)
    scaled.X = sp.csr_matrix(scaled.X.toarray() - 1.0)  # centred, as sc.pp.scale leaves it
    scaled.write_h5ad(path)
    with pytest.raises(DataError, match="negative"):
        read_h5ad(path, label_key=None, values="normalized")


def test_the_import_records_what_was_declared_and_later_commands_honour_it(section, tmp_path):
    from typer.testing import CliRunner

    from grid.cli import app

    source = tmp_path / "lognorm.h5ad"
    logged = _normalised(section, 1e4)
    logged.X = sp.csr_matrix(np.log1p(logged.X.toarray()))
    logged.write_h5ad(source)
    imported = tmp_path / "imported.h5ad"
    done = CliRunner().invoke(app, ["data", "import", str(source), "--out", str(imported), "--values", "log-normalized",
                                    "--target-sum", "10000", "--label-key", "layer"])
    assert done.exit_code == 0, done.output
    adata = ad.read_h5ad(imported)
    assert dict(adata.uns["ssl_st"]) == {"values": "log-normalized", "target_sum": 1e4}
    assert read_h5ad(imported, label_key="layer").uns["ssl_st"]["values"] == "log-normalized"  # no flag needed again
    with pytest.raises(DataError, match="records values: log-normalized"):
        read_h5ad(imported, label_key=None, values="normalized")


@pytest.mark.parametrize(
    ("dataset", "field", "message"),
    [
        ("{name: x, flavour: merscope, values: normalized}", "values", "demo data holds counts"),
        ("{name: x, flavour: merscope, target_sum: 10000}", "target_sum", "values: normalized"),
        ("{name: x, source: h5ad, path: x.h5ad, values: counts, target_sum: 10000}", "target_sum", "counts have no target sum"),
    ],
)
def test_the_value_type_is_checked_where_it_is_written(tmp_path, dataset, field, message):
    from grid.config import load_config
    from grid.schema import ConfigError

    from .conftest import tiny_config

    (tmp_path / "x.h5ad").write_bytes(b"")
    path = tiny_config(tmp_path, extra_datasets=f"  - {dataset}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.field == f"datasets[3].{field}" and message in problem.message, problem
    assert problem.line == path.read_text().splitlines().index(f"  - {dataset}") + 1


def test_an_imputed_dataset_needs_counts_in_its_base(tmp_path):
    from grid.config import load_config
    from grid.schema import ConfigError

    from .conftest import tiny_config

    (tmp_path / "x.h5ad").write_bytes(b"")
    extra = ("  - {name: mine, source: h5ad, path: x.h5ad, values: log-normalized}\n"
             "  - {name: imp, source: imputed, base: mine, impute: {method: spage}}\n")
    with pytest.raises(ConfigError, match="imputation needs counts"):
        load_config(tiny_config(tmp_path, extra_datasets=extra))


def test_the_value_type_travels_to_the_cells_and_leaves_existing_ids_alone(tmp_path):
    from grid.config import load_config
    from grid.plan import expand

    from .conftest import tiny_config

    (tmp_path / "x.h5ad").write_bytes(b"")
    plain = expand(load_config(tiny_config(tmp_path, name="a.yaml")))
    extra = "  - {name: mine, source: h5ad, path: x.h5ad, values: normalized}\n"
    declared = expand(load_config(tiny_config(tmp_path, name="b.yaml", extra_datasets=extra)))
    ids = {c.label(): c.cell_id for c in declared.cells}
    assert all(ids[c.label()] == c.cell_id for c in plain.cells)  # an added key renews nothing else
    mine = next(c for c in declared.cells if c.dataset == "mine")
    assert mine.content["dataset"]["values"] == "normalized"
    assert declared.artifacts[mine.data].source.values == "normalized"
    assert "values" not in next(c for c in declared.cells if c.dataset == "merscope").content["dataset"]


@pytest.mark.slow  # imports torch: 4-8 s alone, well under 1 s of training
def test_pretrain_and_embed_read_declared_values_like_counts(section, tmp_path):
    from typer.testing import CliRunner

    from grid.cli import app

    counts, normalised = tmp_path / "counts.h5ad", tmp_path / "normalised.h5ad"
    datasets.write_h5ad_atomic(section, counts)
    _normalised(section, 37.0).write_h5ad(normalised)
    cli = CliRunner()
    trained = cli.invoke(app, ["pretrain", str(normalised), "--method", "random-mask", "--out", str(tmp_path / "m.ckpt"),
                               "--units", "16,8", "--epochs", "2", "--values", "normalized"])
    assert trained.exit_code == 0, trained.output
    assert "pretraining random-mask: epoch 2/2 (100%)" in trained.stderr and "eta" in trained.stderr
    refused = cli.invoke(app, ["embed", str(tmp_path / "m.ckpt"), str(normalised), "--out", str(tmp_path / "e.h5ad")])
    assert refused.exit_code == 2 and "--values normalized" in refused.stderr
    embedded = {}
    for name, path, flags in (("counts", counts, []), ("normalised", normalised, ["--values", "normalized"])):
        out = tmp_path / f"{name}-embedded.h5ad"
        done = cli.invoke(app, ["embed", str(tmp_path / "m.ckpt"), str(path), "--out", str(out), "--key", "X_m", *flags])
        assert done.exit_code == 0, done.output
        embedded[name] = ad.read_h5ad(out).obsm["X_m"]
    # the same cells at another scale, declared: the model sees the same log1p(CP10k) input
    np.testing.assert_allclose(embedded["normalised"], embedded["counts"], atol=1e-4)
