"""Read any h5ad (CELLxGENE, Slide-seqV2, a lab's own export) into a standard AnnData.

CELLxGENE's schema (github.com/chanzuckerberg/single-cell-curation, schema/5.x): ``var`` is indexed by
Ensembl id (``feature_id`` semantics) with the symbol in ``var['feature_name']``; ``X`` is normalised
and the raw counts live in ``.raw.X``; labels in ``obs['cell_type']``; spatial assays carry
coordinates in ``obsm['spatial']`` (older/other portals: ``obsm['X_spatial']``). Scanpy-style files
instead keep counts in ``layers['counts']`` and symbols in the index (``var['gene_ids']`` for ids).

Counts are taken from, in order: ``counts_layer``, ``layers['counts']``, ``.raw.X``, then ``X`` only if
it holds non-negative integers: the reusability study normalised some already-normalised matrices twice
(its §5.1), and refusing undeclared non-integer "counts" is how that cannot happen here. Normalised or
log-normalised values are read when declared (``values=``, :mod:`.values`), from ``counts_layer`` (a
layer, ``raw`` or ``X``; the name is historical: it says where the expression is) or else ``X``; they
land in ``X`` only (``layers['counts']`` is for counts), with the type in ``uns['ssl_st']``.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .checks import (
    DECLARE,
    ENSEMBL,
    DataError,
    check_spatial,
    check_values,
    declared_type,
    record_values,
    resolve_values,
    validate,
    wrong_format_hint,
)
from .values import ValueType

SPATIAL_KEYS = ("spatial", "X_spatial")
SYMBOL_COLUMNS = ("feature_name", "gene_symbols", "gene_name", "gene_symbol", "symbol")
ID_COLUMNS = ("feature_id", "gene_ids", "gene_id", "ensembl_id")


def _open(file: Path) -> AnnData:
    if not file.exists():
        raise DataError(file, "h5ad file", "does not exist", "check the path (an .h5ad file)")
    if file.is_dir():
        raise DataError(file, "h5ad file", "is a folder, not a file",
                        "pass the .h5ad file itself." + wrong_format_hint(file, "h5ad"))
    try:
        with h5py.File(file, "r") as handle:
            top = set(handle)
    except OSError as err:
        raise DataError(file, "HDF5 file", f"could not be opened ({err})",
                        "it is truncated, corrupt or not an HDF5/h5ad file: fetch it again and compare its size "
                        "with the source") from err
    if "X" not in top or "obs" not in top or "var" not in top:
        hint = (" It is a 10x feature-barcode matrix: read its Xenium folder with {format=xenium}."
                if "matrix" in top else "")
        raise DataError(file, "groups X/obs/var", f"are missing (top level has {sorted(top)})",
                        f"this is not an AnnData file.{hint}")
    try:
        return ad.read_h5ad(file)
    except Exception as err:  # anndata wraps h5py errors in its own types; all mean "broken file"
        raise DataError(file, "contents", f"could not be read by anndata ({type(err).__name__}: {err})",
                        "the file is damaged or written by an incompatible tool; re-export it with anndata") from err


ELSEWHERE = "; {counts_layer} names another layer ('raw' for .raw.X)"


def _counts(adata: AnnData, file: Path, counts_layer: str | None, values: ValueType) -> tuple[object, pd.DataFrame, str]:
    """The expression matrix, the var table describing its columns, and where it came from."""
    if counts_layer is not None:
        if counts_layer in ("raw", "raw.X") and adata.raw is not None:
            return adata.raw.X, _raw_var(adata), "raw.X"
        if counts_layer == "X":
            return adata.X, adata.var, "X"
        if counts_layer not in adata.layers:
            raise DataError(file, f"layers['{counts_layer}']", f"does not exist; layers are {list(adata.layers)}"
                            f"{' and .raw' if adata.raw is not None else ''}",
                            "name one of them with {counts_layer} ('raw' for .raw.X, 'X' for X)")
        return adata.layers[counts_layer], adata.var, f"layers['{counts_layer}']"
    if not values.is_counts:  # declared normalised values: X, unless counts_layer says otherwise
        return adata.X, adata.var, "X"
    if "counts" in adata.layers:
        return adata.layers["counts"], adata.var, "layers['counts']"
    if adata.raw is not None:
        return adata.raw.X, _raw_var(adata), "raw.X"
    try:
        check_values(adata.X, values, file, "X")
    except DataError as err:
        raise DataError(file, "X", f"{err.problem}, and there is no layers['counts'] or .raw",
                        f"{DECLARE}; {{counts_layer}} names another layer (layers: {list(adata.layers)})") from err
    return adata.X, adata.var, "X"


def _raw_var(adata: AnnData) -> pd.DataFrame:
    """``.raw.var``, completed with columns of ``var`` (CELLxGENE's raw.var may lack feature_name)."""
    raw_var = adata.raw.var.copy()
    for column in adata.var.columns:
        if column not in raw_var.columns:
            raw_var[column] = adata.var[column].reindex(raw_var.index)
    return raw_var


def _column(var: pd.DataFrame, file: Path, explicit: str | None, usual: tuple[str, ...], what: str) -> pd.Series | None:
    if explicit is not None:
        if explicit not in var.columns:
            raise DataError(file, f"var['{explicit}']", f"does not exist; var has {list(var.columns)}",
                            f"name the column that holds them with {{{what}}}")
        return var[explicit]
    name = next((c for c in usual if c in var.columns), None)
    return None if name is None else var[name]


def _genes(var: pd.DataFrame, file: Path, gene_symbols: str | None, gene_ids: str | None) -> pd.DataFrame:
    """var with ``gene_symbols``/``gene_ids`` columns and the symbol (else the id) as index."""
    def known(values: object) -> np.ndarray:  # str where set, None where missing/empty (positional: no alignment)
        return np.array([None if pd.isna(v) or str(v) == "" else str(v) for v in values], dtype=object)

    index = var.index.astype(str).to_numpy(object)
    index_is_id = np.array([bool(ENSEMBL.match(v)) for v in index], dtype=bool)
    column = _column(var, file, gene_symbols, SYMBOL_COLUMNS, "gene_symbols")
    symbols = np.where(index_is_id, None, index) if column is None else known(column)
    column = _column(var, file, gene_ids, ID_COLUMNS, "gene_ids")
    ids = np.where(index_is_id, index, None) if column is None else known(column)
    ids = np.array([v if v is not None and ENSEMBL.match(v) else None for v in ids], dtype=object)
    out = var.copy()
    # categorical with NaN for unknown: an all-missing object column cannot be written back to h5ad
    out["gene_symbols"] = pd.Categorical([np.nan if v is None else v for v in symbols])
    out["gene_ids"] = pd.Categorical([np.nan if v is None else v for v in ids])
    names = [s if s is not None else (i if i is not None else x) for s, i, x in zip(symbols, ids, index)]
    out.index = pd.Index(names, dtype=object, name=None)
    return out


def read_h5ad(path: str | Path, *, label_key: str | None = "cell_type", spatial_key: str | None = None,
              counts_layer: str | None = None, gene_symbols: str | None = None, gene_ids: str | None = None,
              require_spatial: bool = False, values: str | None = None, target_sum: float | None = None) -> AnnData:
    """An h5ad as a standard AnnData (see :mod:`ssl_st.io`).

    ``label_key``: the obs column with labels (None for unlabelled data). ``spatial_key``: the obsm key
    with coordinates (default: ``spatial`` then ``X_spatial``; none found is allowed for single-cell
    data unless ``require_spatial``). ``counts_layer``: where the expression is (a layer name, ``raw``
    or ``X``). ``gene_symbols``/``gene_ids``: var columns holding symbols / Ensembl ids. ``values``:
    ``counts`` (default), ``normalized`` or ``log-normalized`` (:mod:`.values`), with ``target_sum``,
    the sum each cell was scaled to, if known; undeclared, the type the file records, else counts.
    """
    file = Path(path)
    source = _open(file)
    kind = resolve_values(declared_type(values, target_sum, file), ValueType.recorded(source.uns), file)
    counts, var, counts_field = _counts(source, file, counts_layer, kind)
    check_values(counts, kind, file, counts_field, source.obs_names, var.index, elsewhere=ELSEWHERE)
    var = _genes(var, file, gene_symbols, gene_ids)

    obsm = {key: value for key, value in source.obsm.items()}
    if spatial_key is not None and spatial_key not in obsm:
        raise DataError(file, f"obsm['{spatial_key}']", f"does not exist; obsm has {list(obsm)}",
                        "name the coordinates with {spatial_key}, or leave it out for data without coordinates")
    key = spatial_key or next((k for k in SPATIAL_KEYS if k in obsm), None)
    if key is not None:
        obsm["spatial"] = check_spatial(obsm[key], file, f"obsm['{key}']", source.n_obs, source.obs_names)
    elif require_spatial:
        raise DataError(file, "obsm['spatial']", f"is missing (obsm has {list(obsm)})",
                        "name the (x, y) coordinates of each cell with {spatial_key}")

    matrix = sp.csr_matrix(counts, dtype=np.float32)
    obs = source.obs.copy()
    obs.index = obs.index.astype(str)
    adata = AnnData(X=matrix, obs=obs, var=var, obsm=obsm, uns=dict(source.uns))
    if kind.is_counts:  # normalised values stay out of the counts layer that counts-only code reads
        adata.layers["counts"] = adata.X
    record_values(adata, kind)
    adata.uns["ssl_st_import"] = {
        "format": "h5ad", "source": str(file), "counts_from": counts_field, "spatial_from": key or "",
        "label_key": label_key or "", "dropped_controls": 0, "dropped_features": "",
    }
    files = dict.fromkeys(("counts", "genes", "cells", "spatial", "labels"), str(file))
    validate(adata, source=str(file), label_key=label_key, require_spatial=require_spatial, files=files)
    return adata
