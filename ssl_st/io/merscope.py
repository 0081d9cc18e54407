"""Read a Vizgen MERSCOPE output folder into a standard AnnData.

Layout (Vizgen, "MERSCOPE Instrument User Guide", output files; also the Vizgen Data Release Program):

- ``cell_by_gene.csv``: one row per cell. The first column is the cell id (headed ``cell`` in recent
  software, unnamed in older exports), then one column of integer counts per gene (symbols only, no
  Ensembl ids), plus ``Blank-0``, ``Blank-1``, ... columns: barcodes that encode no gene, counted as a
  false-positive rate and dropped here.
- ``cell_metadata.csv``: indexed by the same cell id (first column unnamed, ``EntityID`` in VPT
  output), with ``fov``, ``volume``, ``center_x``, ``center_y`` (micrometres, mosaic coordinates),
  ``min_x``, ``max_x``, ``min_y``, ``max_y``.

Portal downloads prefix the names (``..._cell_by_gene_S1R1.csv``); a single match of
``*cell_by_gene*.csv`` / ``*cell_metadata*.csv`` is accepted. Cell ids are 30-40 digit integers that
overflow int64, so they are read as strings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .checks import DataError, check_spatial, finish_import, read_csv, summarise_names, wrong_format_hint

COUNTS = "cell_by_gene.csv"
METADATA = "cell_metadata.csv"
BLANK_PREFIX = "blank-"


def _find(folder: Path, name: str) -> Path:
    exact = folder / name
    if exact.is_file():
        return exact
    stem = name.removesuffix(".csv")
    matches = sorted(p for p in folder.glob(f"*{stem}*.csv*") if p.is_file())
    if len(matches) == 1:
        return matches[0]
    found = sorted(p.name for p in folder.iterdir())[:10]
    problem = (f"matches several files {[m.name for m in matches]}" if matches
               else f"is missing; the folder holds {found}")
    raise DataError(folder, name, problem,
                    f"a MERSCOPE output folder has {COUNTS} and {METADATA}; keep exactly one of each."
                    + wrong_format_hint(folder, "merscope"))


def _read_indexed(file: Path, what: str) -> pd.DataFrame:
    """A CSV whose first column is the cell id, kept as an exact string."""
    header = read_csv(file, what, nrows=0)
    if header.shape[1] == 0:
        raise DataError(file, "header", "is empty", what)
    first = header.columns[0]
    table = read_csv(file, what, dtype={first: str}, index_col=0)
    table.index = pd.Index(table.index.astype(str), name=None)
    return table


def read_merscope(path: str | Path, *, labels: str | Path | None = None, label_column: str | None = None) -> AnnData:
    """A MERSCOPE output folder as a standard AnnData (see :mod:`ssl_st.io`).

    ``labels``: optional CSV mapping cell id to a label (``label_column`` or a usual name such as
    ``cell_type``/``Cluster``), written to ``obs['cell_type']``; cells missing from it get NaN.
    """
    folder = Path(path)
    if not folder.is_dir():
        problem = "is a file, not a MERSCOPE output folder" if folder.exists() else "does not exist"
        raise DataError(folder, "path", problem,
                        f"pass the folder holding {COUNTS} and {METADATA}." + wrong_format_hint(folder, "merscope"))
    counts_file, meta_file = _find(folder, COUNTS), _find(folder, METADATA)
    table = _read_indexed(counts_file, f"{COUNTS} has a cell id column, then one count column per gene")
    meta = _read_indexed(meta_file, f"{METADATA} has the cell id, fov, volume, center_x, center_y, ...")

    # an empty table has object columns: leave it to validate(), which reports '0 cells'
    non_numeric = [c for c in table.columns if len(table) and not pd.api.types.is_numeric_dtype(table[c])]
    if non_numeric:
        example = table[non_numeric[0]].iloc[0]
        raise DataError(counts_file, f"column {non_numeric[0]!r}", f"is not numeric (e.g. {example!r})",
                        "every column after the cell id must hold counts; is this the cell-by-gene table?")
    blank = np.array([str(c).lower().startswith(BLANK_PREFIX) for c in table.columns], dtype=bool)
    blank_names = [str(c) for c in table.columns[blank]]
    blank_total = float(np.nansum(table.loc[:, blank].to_numpy(np.float64)))
    genes = table.loc[:, ~blank]
    counts = sp.csr_matrix(genes.to_numpy(np.float32))

    missing = [c for c in ("center_x", "center_y") if c not in meta.columns]
    if missing:
        raise DataError(meta_file, f"column {missing[0]!r}", f"is missing (columns: {list(meta.columns)[:10]})",
                        "MERSCOPE's cell metadata must have center_x and center_y (is this a MERSCOPE output folder?)")
    if meta.index.has_duplicates:
        raise DataError(meta_file, "cell id column", f"repeats ids, e.g. {meta.index[meta.index.duplicated()][0]!r}",
                        "each cell must have one row in the metadata")
    cells = table.index
    without = ~cells.isin(meta.index)
    if without.any():
        raise DataError(meta_file, "cell id column", f"has no row for {int(without.sum())} cells of {counts_file.name} "
                        f"(e.g. {cells[without][0]!r})",
                        f"{counts_file.name} and {meta_file.name} must come from the same region/run; copy both again")
    extra_cells = int((~meta.index.isin(cells)).sum())
    meta = meta.loc[cells]
    xy = check_spatial(meta[["center_x", "center_y"]], meta_file, "columns center_x/center_y", len(meta), cells)

    symbols = [str(c) for c in genes.columns]
    # categorical: an all-NaN object column cannot be written to h5ad (anndata stores strings as categories)
    var = pd.DataFrame({"gene_symbols": pd.Categorical(symbols), "gene_ids": pd.Categorical([np.nan] * len(symbols))},
                       index=pd.Index(symbols))
    obs = meta.drop(columns=["center_x", "center_y"])
    adata = AnnData(X=counts, obs=obs, var=var, obsm={"spatial": xy})
    adata.layers["counts"] = adata.X
    info: dict[str, object] = {
        "format": "merscope", "source": str(folder), "counts_file": counts_file.name, "metadata_file": meta_file.name,
        "dropped_blanks": len(blank_names), "dropped_blank_counts": int(round(blank_total)),
        "dropped_features": summarise_names(blank_names), "cells_without_counts": extra_cells,
    }
    files = dict.fromkeys(("counts", "genes", "cells"), str(counts_file)) | {"spatial": str(meta_file)}
    return finish_import(adata, folder, info, files, labels, label_column)
