"""Any dataset ``ssl-st data import`` reads -> a directory of Parquet shards (layout: :mod:`.format`).

An h5ad file is read **backed**: the expression matrix is read one row slice at a time straight from
HDF5 (``anndata.io.sparse_dataset`` for CSR, h5py slicing for dense), so it never has to fit in
memory; obs (one row of metadata per cell) and var are read whole. Xenium and MERSCOPE outputs go
through their readers (:func:`ssl_st.io.read`), which build the AnnData in memory anyway, and are then
cut into shards like any in-memory AnnData (:func:`shard_anndata`).

The stored expression is what :func:`ssl_st.pp.model_input` would read from the same AnnData (counts
from ``layers['counts']``, else ``X``; declared normalised values from ``X``), with its value type in
the manifest, so an embedding computed from the shards equals one computed from the AnnData.

Everything is written into a hidden sibling directory and renamed into place at the end, manifest
last: a reader sees the previous directory or the complete new one, never a half-written one.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from .. import __version__
from ..io.values import COUNTS, ValueType
from ..files import replace_dir, staging_dir
from .format import (
    PART_PREFIX,
    RESERVED_COLUMNS,
    VAR_NAME,
    Manifest,
    ShardFile,
    arrow_columns,
    describe_file,
    write_manifest,
)

if TYPE_CHECKING:
    from anndata import AnnData

# 32,768 cells of a 300-gene panel (~90 detected genes each) are ~25 MB of Arrow memory: large enough
# that per-file overheads vanish, small enough that a read task holds one cheaply and that the encoder
# starts on the first shard while the next is read (a shard is the unit a read task reads).
DEFAULT_ROWS_PER_SHARD = 32_768
DENSE_SLICE_VALUES = 2**25  # a dense matrix is read 128 MB (float32) at a time and kept as CSR
SPATIAL_KEYS = ("spatial", "X_spatial")  # where h5ad files keep coordinates (as ssl_st.io.h5ad reads them)
# Options of ssl_st.io.read_h5ad that a backed read supports; the others (gene_symbols, gene_ids, ...)
# rewrite var, which only the full reader does: import the file first, then shard its output.
BACKED_OPTIONS = ("counts_layer", "spatial_key", "values", "target_sum", "label_key")


def _obs_frame(obs: pd.DataFrame) -> tuple[pd.DataFrame, tuple[tuple[str, str], ...]]:
    """obs as Arrow-friendly columns: categoricals and mixed objects as strings (missing stays missing),
    reserved names prefixed with ``obs_``. Returns the frame and (shard column, obs column) pairs."""
    columns: dict[str, pd.Series] = {}
    names: list[tuple[str, str]] = []
    for name in obs.columns:
        column = obs[name]
        if isinstance(column.dtype, pd.CategoricalDtype) or column.dtype == object:
            column = column.astype(object).where(column.notna(), None).map(lambda v: v if v is None else str(v))
        stored = f"obs_{name}" if str(name) in RESERVED_COLUMNS else str(name)
        columns[stored] = column.reset_index(drop=True)
        names.append((stored, str(name)))
    return pd.DataFrame(columns, index=pd.RangeIndex(len(obs))), tuple(names)


def _list_column(indptr: np.ndarray, values: np.ndarray, type_: pa.DataType) -> pa.ListArray:
    offsets = pa.array(np.asarray(indptr - indptr[0], dtype=np.int32))  # int32: < 2^31 values per shard
    return pa.ListArray.from_arrays(offsets, pa.array(values, type=type_))


@dataclass(frozen=True)
class Chunk:
    """A row slice of a dataset, in the dataset's gene order."""

    start: int  # the first cell's row in the dataset
    matrix: sp.csr_matrix  # cells x dataset genes
    cell_ids: Sequence[str]
    xy: np.ndarray | None = None  # (n, 2) coordinates


class ShardWriter:
    """Writes chunks as part files into a staging directory; :meth:`finish` puts var.parquet and the
    manifest beside them and renames the directory into place. Use as a context manager: an error
    removes the staging directory and leaves any previous ``out`` untouched."""

    def __init__(self, out: str | Path, *, var: pd.DataFrame, obs: pd.DataFrame | None, values: ValueType = COUNTS,
                 spatial: bool = False, source: str = "", source_format: str = "") -> None:
        self.out = Path(out)
        self.var, self.values, self.spatial = var, values, spatial
        self.source, self.source_format = source, source_format
        self.obs, self.obs_columns = _obs_frame(obs if obs is not None else pd.DataFrame())
        self.obs_schema = pa.Schema.from_pandas(self.obs, preserve_index=False)
        self.staged = staging_dir(self.out)
        self.shards: list[ShardFile] = []
        self.schema: pa.Schema | None = None
        self.rows = 0

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.staged.exists():  # finish() was not reached: leave nothing half-written behind
            shutil.rmtree(self.staged, ignore_errors=True)

    def add(self, chunk: Chunk) -> None:
        """Write ``chunk`` as the next part file (its rows must follow the previous chunk's)."""
        if chunk.start != self.rows:
            raise ValueError(f"chunk starts at row {chunk.start}, expected {self.rows}")
        matrix = sp.csr_matrix(chunk.matrix, dtype=np.float32)
        n = matrix.shape[0]
        if matrix.shape[1] != len(self.var):
            raise ValueError(f"chunk has {matrix.shape[1]} genes, var has {len(self.var)}")
        columns: dict[str, pa.Array] = {
            "row": pa.array(np.arange(self.rows, self.rows + n, dtype=np.int64)),
            "cell_id": pa.array([str(c) for c in chunk.cell_ids], type=pa.string()),
            "indices": _list_column(matrix.indptr, matrix.indices.astype(np.int32), pa.int32()),
            "counts": _list_column(matrix.indptr, matrix.data.astype(np.float32), pa.float32()),
        }
        if self.spatial:
            xy = np.asarray(chunk.xy, dtype=np.float64)
            columns["x"], columns["y"] = pa.array(xy[:, 0]), pa.array(xy[:, 1])
        table = pa.table(columns)
        obs = pa.Table.from_pandas(self.obs.iloc[self.rows : self.rows + n], schema=self.obs_schema, preserve_index=False)
        for name in obs.column_names:
            table = table.append_column(name, obs.column(name))
        table = table.replace_schema_metadata(None)  # no pandas metadata: every shard has one schema
        path = self.staged / f"{PART_PREFIX}{len(self.shards):05d}.parquet"
        pq.write_table(table, path)
        if self.schema is None:  # as Parquet gives it back (list items come back named "element")
            self.schema = pq.read_schema(path)
        self.shards.append(describe_file(path))
        self.rows += n

    def finish(self) -> Manifest:
        var_path = self.staged / VAR_NAME
        self.var.to_parquet(var_path)  # index kept: ssl_st.genes reads symbols from it
        manifest = Manifest(
            kind="cells",
            n_rows=self.rows,
            columns=arrow_columns(self.schema) if self.schema is not None else (),
            shards=tuple(self.shards),
            source=self.source,
            source_format=self.source_format,
            values=self.values.kind,
            target_sum=self.values.target_sum,
            n_genes=len(self.var),
            var=describe_file(var_path),
            obs_columns=self.obs_columns,
            spatial=self.spatial,
            ssl_st_version=__version__,
        )
        write_manifest(self.staged, manifest)
        replace_dir(self.staged, self.out)
        return manifest


def _check_rows(rows_per_shard: int) -> None:
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be at least 1 (got {rows_per_shard})")


def shard_anndata(adata: AnnData, out: str | Path, *, rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
                  source: str = "", source_format: str = "anndata") -> Manifest:
    """Write an in-memory standard AnnData (what :func:`ssl_st.io.read` returns) as shards."""
    from ..pp import expression_matrix

    _check_rows(rows_per_shard)
    matrix, values = expression_matrix(adata)
    xy = np.asarray(adata.obsm["spatial"], dtype=np.float64) if "spatial" in adata.obsm else None
    ids = adata.obs_names.astype(str)
    with ShardWriter(out, var=adata.var, obs=adata.obs, values=values, spatial=xy is not None, source=source,
                     source_format=source_format) as writer:
        for start in range(0, max(adata.n_obs, 1), rows_per_shard):
            stop = min(start + rows_per_shard, adata.n_obs)
            if stop > start:
                writer.add(Chunk(start, matrix[start:stop], ids[start:stop], None if xy is None else xy[start:stop]))
        return writer.finish()


def _expression_element(handle: Any, file: Path, counts_layer: str | None, values: ValueType) -> tuple[Any, str, bool]:
    """The HDF5 element holding the expression, its field name, and whether its genes are raw.var's
    (the same choice as :mod:`ssl_st.io.h5ad`: counts_layer, else layers['counts'], raw.X, X)."""
    from ..io import DataError

    layers = handle.get("layers", {})
    has_raw = "raw" in handle and "X" in handle["raw"]
    if counts_layer is not None:
        if counts_layer in ("raw", "raw.X") and has_raw:
            return handle["raw"]["X"], "raw.X", True
        if counts_layer == "X":
            return handle["X"], "X", False
        if counts_layer not in layers:
            raise DataError(file, f"layers['{counts_layer}']", f"does not exist; layers are {list(layers)}",
                            "name one of them with {counts_layer} ('raw' for .raw.X, 'X' for X)")
        return layers[counts_layer], f"layers['{counts_layer}']", False
    if values.is_counts and "counts" in layers:
        return layers["counts"], "layers['counts']", False
    if values.is_counts and has_raw:
        return handle["raw"]["X"], "raw.X", True
    return handle["X"], "X", False


def _row_reader(element: Any, file: Path, field: str) -> Any:
    """``rows(start, stop) -> csr_matrix`` over a backed matrix, reading only those rows."""
    import h5py
    from anndata.io import sparse_dataset

    from ..io import DataError

    if isinstance(element, h5py.Dataset):  # dense: a shard of 32,768 cells x 30,000 genes would be 4 GB
        step = max(1, DENSE_SLICE_VALUES // max(element.shape[1], 1))

        def dense_rows(start: int, stop: int) -> sp.csr_matrix:
            parts = [sp.csr_matrix(element[i : min(i + step, stop)], dtype=np.float32) for i in range(start, stop, step)]
            return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, element.shape[1]), dtype=np.float32)

        return dense_rows
    encoding = element.attrs.get("encoding-type", "")
    if encoding != "csr_matrix":
        raise DataError(file, field, f"is stored as {encoding or 'an unknown encoding'}; a row slice of it reads the "
                        "whole matrix", "re-save it row-major (adata.X = adata.X.tocsr(); adata.write_h5ad(...)), or "
                        "import the file first with `ssl-st data import`")
    backed = sparse_dataset(element)
    return lambda start, stop: sp.csr_matrix(backed[start:stop], dtype=np.float32)


def _raw_var(handle: Any, var: pd.DataFrame) -> pd.DataFrame:
    """raw.var completed with var's columns (CELLxGENE's raw.var may lack feature_name), as io.h5ad does."""
    from anndata.io import read_elem

    raw_var = read_elem(handle["raw"]["var"])
    for column in var.columns:
        if column not in raw_var.columns:
            raw_var[column] = var[column].reindex(raw_var.index)
    return raw_var


def shard_h5ad(path: str | Path, out: str | Path, *, rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
               counts_layer: str | None = None, spatial_key: str | None = None, values: str | None = None,
               target_sum: float | None = None, label_key: str | None = None) -> Manifest:
    """Shard an h5ad file read backed: its expression one ``rows_per_shard`` slice at a time.

    Options mean what they mean to :func:`ssl_st.io.read_h5ad`; the expression is checked slice by
    slice (:func:`ssl_st.io.checks.check_values`: integer counts unless other values are declared).
    """
    import h5py
    from anndata.io import read_elem

    from ..io.checks import DataError, check_spatial, check_values, declared_type, resolve_values

    _check_rows(rows_per_shard)
    file = Path(path)
    if not file.is_file():
        raise DataError(file, "h5ad file", "does not exist" if not file.exists() else "is not a file",
                        "check the path (an .h5ad file)")
    try:
        handle = h5py.File(file, "r")
    except OSError as err:
        raise DataError(file, "HDF5 file", f"could not be opened ({err})",
                        "it is truncated, corrupt or not an HDF5/h5ad file") from err
    with handle:
        missing = {"X", "obs", "var"} - set(handle)
        if missing:
            raise DataError(file, "groups X/obs/var", f"are missing (top level has {sorted(handle)})",
                            "this is not an AnnData file")
        uns = handle.get("uns", {})
        recorded = ValueType.recorded({"ssl_st": read_elem(uns["ssl_st"])}) if "ssl_st" in uns else None
        kind = resolve_values(declared_type(values, target_sum, file), recorded, file)
        element, field, raw = _expression_element(handle, file, counts_layer, kind)
        obs = read_elem(handle["obs"])
        var = read_elem(handle["var"])
        if raw:
            var = _raw_var(handle, var)
        if label_key is not None and label_key not in obs.columns:
            raise DataError(file, f"obs['{label_key}']", f"does not exist; obs has {list(obs.columns)}",
                            "name the label column with {label_key}")
        obsm = handle.get("obsm", {})
        if spatial_key is not None and spatial_key not in obsm:
            raise DataError(file, f"obsm['{spatial_key}']", f"does not exist; obsm has {list(obsm)}",
                            "name the coordinates with {spatial_key}, or leave it out for data without coordinates")
        key = spatial_key or next((k for k in SPATIAL_KEYS if k in obsm), None)
        coords = obsm[key] if key is not None else None
        rows = _row_reader(element, file, field)
        n_obs, ids = len(obs), obs.index.astype(str)
        with ShardWriter(out, var=var, obs=obs, values=kind, spatial=coords is not None, source=str(file),
                         source_format="h5ad") as writer:
            for start in range(0, n_obs, rows_per_shard):
                stop = min(start + rows_per_shard, n_obs)
                matrix = rows(start, stop)
                check_values(matrix, kind, file, field, ids[start:stop], var.index)
                xy = None
                if coords is not None:
                    block = coords[start:stop] if hasattr(coords, "shape") else read_elem(coords).iloc[start:stop]
                    xy = check_spatial(block, file, f"obsm['{key}']", stop - start, ids[start:stop])
                writer.add(Chunk(start, matrix, ids[start:stop], xy))
            return writer.finish()


def shard(path: str | Path, out: str | Path, *, format: str | None = None,  # noqa: A002 - the user-facing word
          rows_per_shard: int = DEFAULT_ROWS_PER_SHARD, **options: Any) -> Manifest:
    """Shard anything ``ssl-st data import`` reads: an h5ad file (backed, :func:`shard_h5ad`), or a
    Xenium / MERSCOPE folder (through its reader, then :func:`shard_anndata`). ``options`` are the
    reader's (None: its default)."""
    from .. import io

    options = {k: v for k, v in options.items() if v is not None}
    name = format or io.guess_format(path)
    if name == "h5ad":
        unsupported = sorted(set(options) - set(BACKED_OPTIONS))
        if unsupported:
            raise io.DataError(path, f"{{{unsupported[0]}}}", "does not apply when an h5ad file is sharded backed",
                               "import the file first (`ssl-st data import`, which applies it) and shard the result")
        return shard_h5ad(path, out, rows_per_shard=rows_per_shard, **options)
    adata = io.read(path, format=name, **options)
    return shard_anndata(adata, out, rows_per_shard=rows_per_shard, source=str(path), source_format=name or "")
