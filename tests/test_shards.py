"""Sharded datasets without Ray: writing (h5ad read backed, vendor folders, in-memory AnnData), the
checks that refuse a bad shard directory by name, scTab's Merlin layout read as it is, and the model
input of a batch of shard rows equal to :func:`ssl_st.pp.model_input` of the same cells."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from ssl_st import io
from ssl_st.genes import Vocabulary
from ssl_st.io.values import ValueType
from ssl_st.pp import model_input
from ssl_st.shards import ShardError, open_source, shard, shard_anndata, verify
from ssl_st.shards.inputs import batch_inputs, dense_rows, plan_inputs, sparse_rows

from .vendor_fixtures import write_cellxgene_h5ad, write_xenium


def panel(n_cells: int = 90, n_genes: int = 12, seed: int = 0) -> ad.AnnData:
    """A standard AnnData (what ssl-st data import writes): counts, coordinates, labels, a reserved name."""
    rng = np.random.default_rng(seed)
    counts = sp.random(n_cells, n_genes, density=0.4, format="csr", random_state=seed, dtype=np.float32)
    counts.data = rng.integers(1, 30, counts.nnz).astype(np.float32)
    var = pd.DataFrame({"gene_ids": [f"ENSG{i:011d}" for i in range(n_genes)]}, index=[f"G{i}" for i in range(n_genes)])
    obs = pd.DataFrame({"cell_type": pd.Categorical(rng.choice(["T", "B", "NK"], n_cells)),
                        "x": rng.random(n_cells),  # an obs column named like a reserved one: stored as obs_x
                        "donor": rng.integers(0, 3, n_cells)}, index=[f"cell{i}" for i in range(n_cells)])
    adata = ad.AnnData(X=counts, obs=obs, var=var, obsm={"spatial": rng.random((n_cells, 2)) * 1000})
    adata.layers["counts"] = adata.X
    return adata


def vocabulary(n: int = 40) -> Vocabulary:
    return Vocabulary(tuple(f"ENSG{i:011d}" for i in range(n)), tuple(f"G{i}" for i in range(n)))


def read_rows(directory: Path) -> sp.csr_matrix:
    source = open_source(directory)
    return sp.vstack([sparse_rows(pq.read_table(f), source.n_genes) for f in source.files]).tocsr()


@pytest.mark.parametrize("dense", [False, True])
def test_backed_h5ad_round_trip(tmp_path, dense):
    adata = panel()
    if dense:  # counts in a dense X: read in row slices too, stored sparse
        adata.X = adata.layers.pop("counts").toarray()
    adata.write_h5ad(tmp_path / "panel.h5ad")
    manifest = shard(tmp_path / "panel.h5ad", tmp_path / "shards", rows_per_shard=37)
    assert [s.rows for s in manifest.shards] == [37, 37, 16] and manifest.n_rows == 90
    assert (manifest.values, manifest.spatial, manifest.source_format) == ("counts", True, "h5ad")
    assert dict(manifest.obs_columns) == {"cell_type": "cell_type", "obs_x": "x", "donor": "donor"}
    source = open_source(tmp_path / "shards")
    assert np.array_equal(read_rows(tmp_path / "shards").toarray(), np.asarray(sp.csr_matrix(adata.X).toarray()))
    obs = source.read_obs()
    assert list(obs.index) == list(adata.obs_names)
    assert list(obs["cell_type"]) == list(adata.obs["cell_type"]) and np.array_equal(obs["x"], adata.obs["x"])
    xy = pa.concat_tables([pq.read_table(f, columns=["x", "y"]) for f in source.files])
    assert np.array_equal(np.c_[xy["x"].to_numpy(), xy["y"].to_numpy()], adata.obsm["spatial"])
    assert source.var().equals(adata.var)


@pytest.mark.slow
def test_backed_h5ad_never_holds_the_whole_matrix(tmp_path):
    """The writer reads row slices: its peak allocation is a fraction of the matrix it shards."""
    rng = np.random.default_rng(1)
    n_cells, n_genes = 20_000, 300
    counts = sp.random(n_cells, n_genes, density=0.5, format="csr", random_state=1, dtype=np.float32)
    counts.data = rng.integers(1, 9, counts.nnz).astype(np.float32)
    matrix_bytes = counts.data.nbytes + counts.indices.nbytes + counts.indptr.nbytes  # ~24 MB
    var = pd.DataFrame(index=[f"G{i}" for i in range(n_genes)])
    ad.AnnData(X=counts, var=var, obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)])).write_h5ad(tmp_path / "big.h5ad")
    del counts
    adata = panel()
    adata.write_h5ad(tmp_path / "small.h5ad")
    shard(tmp_path / "small.h5ad", tmp_path / "warm-up")  # imports allocate too: not what is measured
    tracemalloc.start()
    try:
        shard(tmp_path / "big.h5ad", tmp_path / "shards", rows_per_shard=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < matrix_bytes / 3, f"peak {peak / 2**20:.1f} MiB for a {matrix_bytes / 2**20:.1f} MiB matrix"
    assert verify(tmp_path / "shards").n_rows == n_cells


def test_cellxgene_h5ad_and_xenium_shard_like_their_readers(tmp_path):
    """What the shards hold is what ssl_st.io.read reads: raw.X of a CELLxGENE file, a Xenium folder."""
    expected = write_cellxgene_h5ad(tmp_path / "cxg.h5ad", n_cells=30)
    manifest = shard(expected.path, tmp_path / "cxg", rows_per_shard=8)
    assert manifest.spatial and np.array_equal(read_rows(tmp_path / "cxg").toarray(), expected.counts)
    xenium = write_xenium(tmp_path / "xenium", n_cells=25)
    shard(xenium.path, tmp_path / "xen", rows_per_shard=10)
    reader = io.read(xenium.path)
    assert np.array_equal(read_rows(tmp_path / "xen").toarray(), reader.layers["counts"].toarray())
    assert list(open_source(tmp_path / "xen").read_obs([]).index) == list(reader.obs_names)


@pytest.mark.parametrize("values", [None, ValueType("normalized", 1e4), ValueType("log-normalized")])
def test_batch_inputs_equal_model_input(tmp_path, values):
    """A batch of shard rows becomes exactly model_input's rows for those cells, whatever the values."""
    adata = panel(n_cells=70, n_genes=15)
    if values is not None:  # declared normalised values live in X, typed in uns (ssl_st.io.values)
        adata.X = sp.csr_matrix(adata.layers.pop("counts"))
        if values.kind == "log-normalized":
            adata.X.data = np.log1p(adata.X.data)
        adata.uns["ssl_st"] = values.as_uns()
    shard_anndata(adata, tmp_path / "shards", rows_per_shard=25)
    source = open_source(tmp_path / "shards")
    assert source.values == (values or ValueType())
    vocab = vocabulary()
    plan, coverage = plan_inputs(source.var(), vocab, values=source.values)
    want, want_coverage = model_input(adata, vocab)
    assert coverage == want_coverage
    got = sp.vstack([batch_inputs(plan, b) for f in source.files for b in pq.ParquetFile(f).iter_batches(batch_size=11)])
    np.testing.assert_allclose(got.toarray(), want.toarray(), rtol=1e-6, atol=1e-6)


def _bad(directory: Path, kind: str) -> str:
    """Damage a shard directory one way; return the file the error must name."""
    part = directory / "part-00001.parquet"
    if kind == "missing manifest":
        (directory / "manifest.json").unlink()
        return "manifest.json"
    if kind == "schema mismatch":  # a shard of another layout copied over one of ours
        pq.write_table(pa.table({"row": pa.array([0], pa.int64()), "cell_id": ["c"]}), part)
    elif kind == "truncated shard":
        part.write_bytes(part.read_bytes()[:-200])
    elif kind == "checksum mismatch":  # same size, one byte changed inside a data page
        data = bytearray(part.read_bytes())
        data[len(data) // 3] ^= 0xFF
        part.write_bytes(bytes(data))
    elif kind == "missing shard":
        part.unlink()
    elif kind == "stray shard":
        part = directory / "part-00099.parquet"
        part.write_bytes((directory / "part-00000.parquet").read_bytes())
    return part.name


@pytest.mark.parametrize("kind", ["missing manifest", "schema mismatch", "truncated shard", "checksum mismatch",
                                  "missing shard", "stray shard"])
def test_bad_shards_are_named_before_anything_runs(tmp_path, kind):
    shard_anndata(panel(), tmp_path / "shards", rows_per_shard=30)
    name = _bad(tmp_path / "shards", kind)
    with pytest.raises(ShardError) as err:
        open_source(tmp_path / "shards", checksums=True)
    assert name in err.value.path and err.value.fix, str(err.value)
    if kind != "checksum mismatch":  # plan reads footers and schemas only; the bytes are checked before a run
        with pytest.raises(ShardError):
            open_source(tmp_path / "shards", checksums=False)
    # The embedding checks first: the error comes before any Ray or model work, and no output appears.
    from ssl_st.shards import embed_shards

    with pytest.raises(ShardError):
        embed_shards(tmp_path / "no-model.ckpt", tmp_path / "shards", tmp_path / "emb")
    assert not (tmp_path / "emb").exists()


def test_missing_checkpoint_or_genes_fail_before_ray(tmp_path):
    from ssl_st.shards import ModelRef, embed_shards

    shard_anndata(panel(), tmp_path / "shards")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        embed_shards(tmp_path / "none.ckpt", tmp_path / "shards", tmp_path / "emb")
    (tmp_path / "lone.ckpt").write_bytes(b"")  # a checkpoint with no gene order beside it
    with pytest.raises(FileNotFoundError, match="--genes"):
        embed_shards(ModelRef(str(tmp_path / "lone.ckpt")), tmp_path / "shards", tmp_path / "emb")
    assert not (tmp_path / "emb").exists()


def test_unreadable_or_newer_manifest(tmp_path):
    shard_anndata(panel(), tmp_path / "shards")
    target = tmp_path / "shards" / "manifest.json"
    data = json.loads(target.read_text())
    target.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ShardError, match="upgrade ssl-st"):
        verify(tmp_path / "shards")
    target.write_text("{not json")
    with pytest.raises(ShardError, match="cannot be read"):
        verify(tmp_path / "shards")


# --- scTab's Merlin store ------------------------------------------------------------------------

N_STORE_GENES = 50  # standing for the 19,331
CELL_TYPES = ("B cell", "T cell", "monocyte", "neuron")


def write_merlin_store(root: Path, *, cells: dict[str, tuple[int, ...]] | None = None, seed: int = 0) -> dict:
    """A store in scTab's layout: var.parquet, categorical_lookup/<col>.parquet (index = code, label),
    train/val/test of part.N.parquet with the list column X (log1p of cells scaled to 10,000) and
    int64-coded columns. Returns each split's X and decoded cell types."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    pd.DataFrame({"feature_id": [f"ENSG{i:011d}" for i in range(N_STORE_GENES)],
                  "feature_name": [f"G{i}" for i in range(N_STORE_GENES)]}).to_parquet(root / "var.parquet")
    (root / "categorical_lookup").mkdir()
    pd.DataFrame({"label": list(CELL_TYPES)}).to_parquet(root / "categorical_lookup" / "cell_type.parquet")
    pd.DataFrame({"label": ["d0", "d1"]}, index=[5, 9]).to_parquet(root / "categorical_lookup" / "dataset_id.parquet")
    truth = {}
    for split, parts in (cells or {"train": (30, 20), "val": (10,), "test": (12, 9, 7)}).items():
        (root / split).mkdir()
        xs, types = [], []
        for i, n in enumerate(parts):
            counts = rng.poisson(0.8, (n, N_STORE_GENES)).astype(np.float32)
            library = counts.sum(axis=1, keepdims=True)
            x = np.log1p(counts / np.where(library > 0, library, 1) * 1e4).astype(np.float32)
            codes = rng.integers(0, len(CELL_TYPES), n)
            column = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * N_STORE_GENES), pa.array(x.ravel()))
            pq.write_table(pa.table({"X": column, "cell_type": codes, "dataset_id": rng.choice([5, 9], n),
                                     "donor_id": rng.integers(0, 4, n)}), root / split / f"part.{i}.parquet")
            xs.append(x)
            types += [CELL_TYPES[c] for c in codes]
        truth[split] = (np.vstack(xs), types)
    return truth


def test_merlin_store_reads_as_it_is(tmp_path):
    truth = write_merlin_store(tmp_path / "store", cells={"train": (4,), "test": (12, 9, 7)})
    source = open_source(tmp_path / "store", split="test")
    assert (source.kind, source.n_rows, source.n_genes, len(source.files)) == ("merlin", 28, N_STORE_GENES, 3)
    x, types = truth["test"]
    obs = source.read_obs()
    assert list(obs["cell_type"]) == types and set(obs["dataset_id"]) <= {"d0", "d1"}
    assert pd.api.types.is_integer_dtype(obs["donor_id"])  # no lookup table: the codes stay codes
    assert list(obs.index[:2]) == ["test:0", "test:1"]
    got = np.vstack([dense_rows(pq.read_table(f), source.n_genes) for f in source.files])
    assert np.array_equal(got, x)
    # The model's own genes: X goes in as it is; other genes: mapped and renormalised like any log1p values.
    store_vocab = Vocabulary.from_parquet(tmp_path / "store" / "var.parquet")
    plan, coverage = plan_inputs(source.var(), store_vocab, values=source.values, dense=True)
    assert plan.mapping is None and coverage.vocabulary_fraction == 1.0
    assert np.array_equal(batch_inputs(plan, pq.read_table(source.files[0])).toarray(), x[:12])
    plan, coverage = plan_inputs(source.var(), vocabulary(60), values=source.values, dense=True)
    assert plan.mapping is not None and coverage.mapped_genes == N_STORE_GENES
    np.testing.assert_allclose(batch_inputs(plan, pq.read_table(source.files[0])).toarray()[:, :N_STORE_GENES],
                               x[:12], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["truncated part", "schema mismatch", "short X", "no split", "bad code"])
def test_bad_merlin_parts_are_named(tmp_path, kind):
    write_merlin_store(tmp_path / "store")
    part = tmp_path / "store" / "test" / "part.1.parquet"
    if kind == "truncated part":
        part.write_bytes(part.read_bytes()[:-100])
    elif kind == "schema mismatch":
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["donor_id"]), part)
    elif kind == "short X":  # fixed-size lists whose length is not var.parquet's
        values = pa.array(np.zeros(3 * (N_STORE_GENES - 1), np.float32))
        pq.write_table(pa.table({"X": pa.FixedSizeListArray.from_arrays(values, N_STORE_GENES - 1)}),
                       tmp_path / "store" / "test" / "part.0.parquet")
        part = tmp_path / "store" / "test" / "part.0.parquet"
    elif kind == "no split":
        with pytest.raises(ShardError, match="split"):
            open_source(tmp_path / "store")
        return
    elif kind == "bad code":
        pd.DataFrame({"label": ["only one"]}).to_parquet(tmp_path / "store" / "categorical_lookup" / "cell_type.parquet")
        with pytest.raises(ShardError, match="not in the lookup table") as err:
            open_source(tmp_path / "store", split="test").read_obs(["cell_type"])
        assert "cell_type.parquet" in err.value.path
        return
    with pytest.raises(ShardError) as err:
        open_source(tmp_path / "store", split="test")
    assert err.value.path == str(part), str(err.value)
