"""Read a 10x Genomics Xenium output folder (Xenium Onboard Analysis, "XOA") into a standard AnnData.

Layout (10x, "Xenium output file formats", cf.10xgenomics.com/supp/xenium/xenium_documentation.html):

- ``cell_feature_matrix.h5``: the 10x feature-barcode HDF5 (as Cell Ranger >= 3 writes it). Group
  ``matrix`` holds ``data``, ``indices``, ``indptr`` and ``shape`` = [n_features, n_barcodes] of a
  CSC matrix (one column per barcode), ``barcodes`` and ``features/{id,name,feature_type,genome}``
  as byte strings. Or the same matrix as MEX: ``cell_feature_matrix/{matrix.mtx.gz, features.tsv.gz,
  barcodes.tsv.gz}`` (features x barcodes; features columns id, name, feature_type; no header).
- ``feature_type``: ``Gene Expression`` plus controls: ``Negative Control Probe``, ``Negative Control
  Codeword``, ``Unassigned Codeword`` (called ``Blank Codeword`` before XOA 1.3), ``Deprecated
  Codeword``, ``Genomic Control``. Only ``Gene Expression`` is kept; the rest are counted by kind.
- ``cells.csv.gz`` / ``cells.parquet``: one row per cell: ``cell_id``, ``x_centroid``, ``y_centroid``
  (micrometres), ``transcript_counts``, ``control_probe_counts``, ..., ``cell_area``, ``nucleus_area``.
  Old XOA versions number cells 1..N; newer ones use ids like ``aaabbbcc-1``; some parquet exports store
  ``cell_id`` as bytes. Cells are matched to the matrix barcodes by id, as strings.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp
from anndata import AnnData

from .checks import (
    ENSEMBL,
    DataError,
    check_spatial,
    finish_import,
    read_csv,
    summarise_names,
    wrong_format_hint,
)

GENE_EXPRESSION = "Gene Expression"
H5 = "cell_feature_matrix.h5"
MEX = "cell_feature_matrix"
MEX_FILES = ("matrix.mtx.gz", "features.tsv.gz", "barcodes.tsv.gz")
CELL_TABLES = ("cells.parquet", "cells.csv.gz", "cells.csv")  # parquet first: faster, same content
H5_DATASETS = ("data", "indices", "indptr", "shape", "barcodes",
               "features/id", "features/name", "features/feature_type")

# counts (barcodes x features), barcodes, feature ids, feature names, feature types
Matrix = tuple[sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _text(values: np.ndarray) -> np.ndarray:
    """10x stores strings as fixed-width bytes; decode them to str."""
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)


def _read_h5(file: Path) -> Matrix:
    try:
        with h5py.File(file, "r") as handle:
            if "matrix" not in handle:
                is_anndata = {"X", "obs", "var"} <= set(handle)
                hint = " It holds an AnnData (X, obs, var): read it with {format=h5ad}." if is_anndata else ""
                raise DataError(file, "group 'matrix'", f"is missing (top level has {sorted(handle)})",
                                f"a 10x feature-barcode HDF5 keeps its counts under /matrix.{hint}")
            group = handle["matrix"]
            missing = [name for name in H5_DATASETS if name not in group]
            if missing:
                raise DataError(file, f"datasets {['matrix/' + m for m in missing]}", "are missing",
                                "the file is not a complete 10x feature-barcode matrix; copy it again")
            d = {name: group[name][()] for name in H5_DATASETS}
    except OSError as err:  # h5py's way of saying truncated, corrupt or not HDF5 at all
        raise DataError(file, "HDF5 file", f"could not be read ({err})",
                        "it is truncated or corrupt (interrupted download or copy?): fetch it again and compare its "
                        "size with the source, or use the MEX folder cell_feature_matrix/ instead") from err
    n_features, n_barcodes = (int(v) for v in d["shape"])
    sizes = len(d["indptr"]) - 1, len(d["barcodes"]), len(d["features/id"])
    if sizes != (n_barcodes, n_barcodes, n_features):
        raise DataError(file, "matrix/shape", f"is {[n_features, n_barcodes]} but the file holds {len(d['barcodes'])} "
                        f"barcodes, {len(d['features/id'])} features, {len(d['indptr'])} indptr entries",
                        "the file is inconsistent (corrupt); copy it again")
    # CSC over barcodes of a features x barcodes matrix is CSR of the barcodes x features matrix.
    counts = sp.csr_matrix((d["data"], d["indices"], d["indptr"]), shape=(n_barcodes, n_features))
    features = (_text(d[f"features/{key}"]) for key in ("id", "name", "feature_type"))
    return counts, _text(d["barcodes"]), *features


def _read_mex(folder: Path) -> Matrix:
    missing = [name for name in MEX_FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(folder, f"files {missing}", "are missing",
                        f"a MEX matrix folder holds {', '.join(MEX_FILES)}; copy the complete folder")
    features = read_csv(folder / "features.tsv.gz", "features.tsv.gz lists id, name, feature_type",
                        sep="\t", header=None, dtype=str)
    if features.shape[1] < 3:
        raise DataError(folder / "features.tsv.gz", "columns", f"number {features.shape[1]}, expected 3",
                        "use the features.tsv.gz written by Xenium (three tab-separated columns, no header)")
    barcodes = read_csv(folder / "barcodes.tsv.gz", "barcodes.tsv.gz lists one barcode per line",
                        header=None, dtype=str)
    try:
        with gzip.open(folder / "matrix.mtx.gz", "rb") as handle:
            matrix = sp.csr_matrix(scipy.io.mmread(handle).T)  # features x barcodes on disk
    except (OSError, EOFError, ValueError) as err:
        raise DataError(folder / "matrix.mtx.gz", "contents", f"could not be read as Matrix Market ({err})",
                        "the file is truncated or corrupt; copy it again") from err
    if matrix.shape != (len(barcodes), len(features)):
        raise DataError(folder / "matrix.mtx.gz", "shape", f"is {matrix.shape[::-1]} (features x barcodes) but "
                        f"there are {len(features)} features and {len(barcodes)} barcodes",
                        "the three files come from different runs; copy the folder again")
    return matrix, barcodes[0].to_numpy(object), *(features[i].to_numpy(object) for i in range(3))


def _read_cells(folder: Path) -> tuple[Path, pd.DataFrame]:
    file = next((folder / name for name in CELL_TABLES if (folder / name).is_file()), None)
    if file is None:
        raise DataError(folder, "cells table", f"is missing: none of {list(CELL_TABLES)} found",
                        "a Xenium output folder has cells.csv.gz (and cells.parquet) with each cell's centroid")
    if file.suffix == ".parquet":
        try:
            table = pd.read_parquet(file)
        except Exception as err:  # pyarrow raises its own ArrowInvalid/OSError family
            raise DataError(file, "contents", f"could not be read as parquet ({err})",
                            "the file is truncated or corrupt; copy it again or use cells.csv.gz") from err
    else:
        table = read_csv(file, "Xenium's cells table has cell_id, x_centroid, y_centroid, ...")
    missing = [c for c in ("cell_id", "x_centroid", "y_centroid") if c not in table.columns]
    if missing:
        raise DataError(file, f"column {missing[0]!r}", f"is missing (columns: {list(table.columns)[:8]})",
                        "Xenium's cells table must have cell_id, x_centroid and y_centroid "
                        "(is this a Xenium output folder?)")
    table["cell_id"] = _text(table["cell_id"].to_numpy())
    repeated = table["cell_id"][table["cell_id"].duplicated()]
    if len(repeated):
        raise DataError(file, "column 'cell_id'", f"repeats ids, e.g. {repeated.iloc[0]!r}",
                        "each cell must have one row; the table may have been concatenated twice")
    return file, table.set_index("cell_id")


def read_xenium(path: str | Path, *, labels: str | Path | None = None, label_column: str | None = None) -> AnnData:
    """A Xenium output folder as a standard AnnData (see :mod:`ssl_st.io`).

    ``labels``: optional CSV mapping cell id (``Barcode``/``cell_id``) to a label (``Cluster``, or
    ``label_column``), written to ``obs['cell_type']``; cells missing from it get NaN.
    """
    folder = Path(path)
    if not folder.is_dir():
        problem = "is a file, not a Xenium output folder" if folder.exists() else "does not exist"
        raise DataError(folder, "path", problem,
                        "pass the folder holding cell_feature_matrix.h5 and cells.csv.gz."
                        + wrong_format_hint(folder, "xenium"))
    if (folder / H5).is_file():
        matrix_file, (counts, barcodes, ids, names, types) = folder / H5, _read_h5(folder / H5)
    elif (folder / MEX).is_dir():
        matrix_file, (counts, barcodes, ids, names, types) = folder / MEX, _read_mex(folder / MEX)
    else:
        found = sorted(p.name for p in folder.iterdir())[:10]
        raise DataError(folder, f"{H5} (or {MEX}/)", f"is missing; the folder holds {found}",
                        "a Xenium output folder has cell_feature_matrix.h5 or cell_feature_matrix/ and cells.csv.gz."
                        + wrong_format_hint(folder, "xenium"))
    cells_file, cells = _read_cells(folder)

    keep = types == GENE_EXPRESSION
    dropped_counts = np.asarray(counts[:, ~keep].sum(axis=0)).ravel()
    by_kind = pd.Series(types[~keep]).value_counts()
    gene_counts = counts[:, keep].astype(np.float32)

    barcodes = pd.Index(barcodes.astype(str))
    without = ~barcodes.isin(cells.index)
    if without.any():
        raise DataError(cells_file, "column 'cell_id'", f"has no row for {int(without.sum())} of the matrix's "
                        f"barcodes (e.g. {barcodes[without][0]!r})",
                        f"{matrix_file.name} and {cells_file.name} must come from the same Xenium run; "
                        "copy both again")
    extra_cells = int((~cells.index.isin(barcodes)).sum())  # segmented cells the matrix left out
    cells = cells.loc[barcodes]
    xy = check_spatial(cells[["x_centroid", "y_centroid"]], cells_file, "columns x_centroid/y_centroid",
                       len(cells), barcodes)

    names, ids = names.astype(str), ids.astype(str)[keep]
    symbols = names[keep]
    var = pd.DataFrame({
        # categorical, as anndata writes string columns anyway (an all-NaN object column cannot be written)
        "gene_symbols": pd.Categorical(symbols),
        # custom (non-catalogue) probes may carry no Ensembl id
        "gene_ids": pd.Categorical([i if ENSEMBL.match(i) else np.nan for i in ids]),
    }, index=pd.Index([s if s else i for s, i in zip(symbols, ids)], name=None))
    obs = cells.drop(columns=["x_centroid", "y_centroid"])
    obs.index = pd.Index(barcodes, name=None)
    adata = AnnData(X=gene_counts, obs=obs, var=var, obsm={"spatial": xy})
    adata.layers["counts"] = adata.X
    info: dict[str, object] = {
        "format": "xenium", "source": str(folder),
        "matrix_file": matrix_file.name, "cells_file": cells_file.name,
        "dropped_controls": int((~keep).sum()), "dropped_control_counts": int(dropped_counts.sum()),
        "dropped_features": summarise_names(names[~keep]),
        "cells_without_counts": extra_cells,
    }
    for kind, n in by_kind.items():
        info["dropped_" + kind.lower().replace(" ", "_")] = int(n)
    files = dict.fromkeys(("counts", "genes", "cells"), str(matrix_file)) | {"spatial": str(cells_file)}
    return finish_import(adata, folder, info, files, labels, label_column)
