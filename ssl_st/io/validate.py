"""Checks that an imported dataset is one standard AnnData, and the errors that say how to fix it.

The standard every reader returns (and :func:`validate` checks):

- raw counts in ``layers['counts']`` and ``X``: finite, non-negative, integer-valued;
- ``obsm['spatial']``: float64, n x 2, finite (micrometres for Xenium and MERSCOPE);
- unique cell ids (``obs_names``) and unique gene names (``var_names``, after dropping controls);
- the label column, when one is asked for, present in ``obs`` and not empty.

Every problem raises :class:`DataError`, whose message names the file, the field and the fix:
a user who pointed ssl-st at the wrong folder should learn what to do from one line, not from a
``KeyError`` traceback ten frames deep in pandas.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
# What a labels CSV may call its two columns (10x's supplementary annotations use Barcode, Cluster).
LABEL_ID_COLUMNS = ("Barcode", "barcode", "cell_id", "cell", "EntityID", "cell_ID")
LABEL_VALUE_COLUMNS = ("Cluster", "cluster", "cell_type", "celltype", "label", "group", "annotation")


class DataError(ValueError):
    """An input file cannot become a standard AnnData. ``file``, ``field`` and ``fix`` are kept apart."""

    def __init__(self, file: str | Path, field: str, problem: str, fix: str) -> None:
        self.file, self.field, self.problem, self.fix = str(file), field, problem, fix
        super().__init__(f"{file}: {field} {problem}; {fix}")

    def __reduce__(self):  # keep the four parts when pickled (Ray ships exceptions between workers)
        return (type(self), (self.file, self.field, self.problem, self.fix))


def guess_format(path: str | Path) -> str | None:
    """``"xenium"``, ``"merscope"`` or ``"h5ad"`` from what the path holds, else None."""
    path = Path(path)
    if path.is_file():
        return "h5ad" if path.suffix == ".h5ad" else None
    if not path.is_dir():
        return None
    names = {p.name for p in path.iterdir()}
    if names & {"cell_feature_matrix.h5", "cell_feature_matrix", "experiment.xenium", "cells.csv.gz", "cells.parquet"}:
        return "xenium"
    if any("cell_by_gene" in n for n in names):
        return "merscope"
    return None


def wrong_format_hint(path: str | Path, expected: str) -> str:
    """A sentence naming the reader that fits ``path`` better, or '' when nothing else fits."""
    found = guess_format(path)
    if found is None or found == expected:
        return ""
    readers = {"xenium": "read_xenium", "merscope": "read_merscope", "h5ad": "read_h5ad"}
    return f" It looks like {found} data instead: use {readers[found]}(...) or read(..., format='{found}')."


def summarise_names(names: Sequence[str], limit: int = 50) -> str:
    """Comma-joined names, cut after ``limit`` so uns stays small for 5,000-codeword panels."""
    names = [str(n) for n in names]
    head = ",".join(names[:limit])
    return head if len(names) <= limit else f"{head},... (+{len(names) - limit} more)"


def read_csv(file: Path, what: str, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` whose parse failures (bad gzip, binary junk, empty file) become DataErrors."""
    try:
        return pd.read_csv(file, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as err:
        raise DataError(file, "contents", f"could not be parsed as CSV ({type(err).__name__}: {err})",
                        f"{what}; the file may be truncated or not a (gzipped) CSV; copy it again") from err


def read_labels(file: str | Path, cell_ids: pd.Index, label_column: str | None = None) -> tuple[pd.Series, int]:
    """Labels from a CSV mapping cell id -> label, aligned to ``cell_ids`` (NaN where unlabelled).

    Returns the labels and the number of cells without one. Ids are compared as strings, because
    10x annotation files number cells 1..N while newer Xenium barcodes look like ``aaabbbcc-1``.
    """
    file = Path(file)
    if not file.is_file():
        raise DataError(file, "labels file", "does not exist",
                        "pass labels= the path of a CSV with a cell id and a label column")
    table = read_csv(file, "a labels CSV maps cell ids to labels (columns Barcode, Cluster)", dtype=str)
    id_col = next((c for c in LABEL_ID_COLUMNS if c in table.columns), None)
    value_col = label_column or next((c for c in LABEL_VALUE_COLUMNS if c in table.columns), None)
    if table.shape[1] == 2:  # a two-column mapping: the column that is not the id holds the labels
        id_col = id_col or table.columns[0]
        value_col = value_col or next(c for c in table.columns if c != id_col)
    if id_col is None or value_col is None or value_col not in table.columns:
        raise DataError(file, "columns", f"are {list(table.columns)}; no cell id column ({'/'.join(LABEL_ID_COLUMNS)}) "
                        f"and label column ({label_column or '/'.join(LABEL_VALUE_COLUMNS)}) found",
                        "rename them (10x's annotation CSVs use Barcode, Cluster) or pass label_column=")
    mapping = table.drop_duplicates(id_col).set_index(id_col)[value_col]
    labels = mapping.reindex(pd.Index(cell_ids.astype(str)))
    if labels.isna().all():
        raise DataError(file, f"column '{id_col}'", f"shares no cell id with the data (e.g. "
                        f"{list(mapping.index[:3])} vs {list(cell_ids[:3])})",
                        "use the labels file of this very run/section")
    labels = pd.Series(pd.Categorical(labels.to_numpy(object)), index=cell_ids)
    return labels, int(labels.isna().sum())


def check_counts(matrix: sp.spmatrix | np.ndarray, file: str | Path, field: str,
                 cells: Sequence[str] | None = None, genes: Sequence[str] | None = None) -> None:
    """Raise unless ``matrix`` holds raw counts: finite, non-negative integers.

    With ``cells``/``genes`` the message points at the first bad entry, e.g. column 'GAD1' of a CSV.
    """
    matrix = matrix.tocsr() if sp.issparse(matrix) else np.asarray(matrix)
    values = matrix.data if sp.issparse(matrix) else matrix.ravel()

    def first(bad: np.ndarray) -> str:  # "(first: cell 'c7', gene 'GAD1')" for the first True in bad
        if cells is None or genes is None or matrix.ndim != 2:
            return ""
        k = int(np.argmax(bad))
        row, col = ((int(np.searchsorted(matrix.indptr, k, side="right")) - 1, int(matrix.indices[k]))
                    if sp.issparse(matrix) else divmod(k, matrix.shape[1]))
        return f" (first: cell {str(cells[row])!r}, gene {str(genes[col])!r})"

    if values.dtype.kind not in "biuf":
        raise DataError(file, field, f"has dtype {values.dtype}, not numbers", "raw counts must be a numeric matrix")
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            raise DataError(file, field, f"holds {int(bad.sum())} NaN/infinite values{first(bad)}",
                            "raw counts cannot be missing; re-export the matrix or fill the gaps with 0 on purpose")
    if values.size and values.min() < 0:
        raise DataError(file, field, f"holds negative values (min {values.min():g}){first(values < 0)}",
                        "raw counts are >= 0; this looks like scaled/centred data: point ssl-st at the raw counts")
    if values.dtype.kind == "f" and values.size:
        frac = values != np.round(values)
        if frac.any():
            example = float(values[np.argmax(frac)])
            raise DataError(file, field, f"holds non-integer values (e.g. {example:g}){first(frac)}: not raw counts",
                            "the models normalise counts themselves: pass the raw counts, e.g. "
                            "read_h5ad(..., counts_layer='<layer with counts>') or the file's .raw")


def check_spatial(xy: object, file: str | Path, field: str, n_obs: int,
                  cells: Sequence[str] | None = None) -> np.ndarray:
    """Coordinates as a float64 n x 2 array, or a DataError saying what is wrong with them."""
    try:
        array = np.asarray(xy.to_numpy() if isinstance(xy, pd.DataFrame) else xy, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(file, field, f"is not numeric ({err})", "coordinates must be numbers (x, y)") from err
    if array.ndim != 2 or array.shape != (n_obs, 2):
        raise DataError(file, field, f"has shape {array.shape}, expected ({n_obs}, 2)",
                        "store one (x, y) row per cell: drop z or extra columns, "
                        "or pass spatial_key= naming the 2-D array")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        where = f" (first: cell {str(cells[int(np.argmax(bad))])!r})" if cells is not None else ""
        raise DataError(file, field, f"holds NaN/infinite values for {int(bad.sum())} cell(s){where}",
                        "every cell needs finite x, y coordinates; remove those cells or re-export the cells table")
    return array


def _duplicates(index: pd.Index) -> list[str]:
    return [str(v) for v in index[index.duplicated()].unique()[:5]]


def validate(adata: AnnData, *, source: str, label_key: str | None = "cell_type", require_spatial: bool = True,
             files: Mapping[str, str] | None = None) -> None:
    """Raise :class:`DataError` unless ``adata`` is a standard import (see the module docstring).

    ``files`` names, per aspect (``counts``, ``genes``, ``cells``, ``spatial``, ``labels``), the file
    a problem came from, so a message points at ``cells.csv.gz`` rather than at the whole folder.
    """
    where = {key: str(value) for key, value in (files or {}).items()}
    def file(aspect: str) -> str:
        return where.get(aspect, source)

    if adata.n_obs == 0:
        raise DataError(file("cells"), "cells", "are absent: the dataset is empty (0 cells)",
                        "check the export finished and that no filter removed every cell")
    if adata.n_vars == 0:
        raise DataError(file("genes"), "genes", "are absent: 0 genes remain (after dropping controls/blanks)",
                        "the file holds no gene-expression features; check it is the cell-by-gene matrix")
    field = "layers['counts']" if "counts" in adata.layers else "X"
    check_counts(adata.layers["counts"] if "counts" in adata.layers else adata.X, file("counts"), field,
                 adata.obs_names, adata.var_names)
    if adata.var_names.has_duplicates:
        raise DataError(file("genes"), "gene names (var_names)", f"are duplicated: {_duplicates(adata.var_names)}",
                        "each gene must appear once; make the names unique or remove the repeated features")
    if adata.obs_names.has_duplicates:
        raise DataError(file("cells"), "cell ids (obs_names)", f"are duplicated: {_duplicates(adata.obs_names)}",
                        "each cell id must appear once; was the file concatenated twice or are sections mixed?")
    if "spatial" in adata.obsm:
        check_spatial(adata.obsm["spatial"], file("spatial"), "obsm['spatial']", adata.n_obs, adata.obs_names)
    elif require_spatial:
        raise DataError(file("spatial"), "obsm['spatial']", "is missing: no cell coordinates",
                        "spatial tasks need (x, y) per cell; read the section with its coordinates (spatial_key=)")
    if label_key is not None:
        if label_key not in adata.obs.columns:
            raise DataError(file("labels"), f"obs['{label_key}']", f"is absent; obs has {list(adata.obs.columns)}",
                            "pass label_key= naming the label column, or label_key=None for unlabelled data")
        if adata.obs[label_key].isna().all():
            raise DataError(file("labels"), f"obs['{label_key}']", "holds no labels (all missing)",
                            "use the column that holds the cell types, or label_key=None")


def finish_import(
    adata: AnnData,
    folder: Path,
    info: dict[str, object],
    files: dict[str, str],
    labels: str | Path | None,
    label_column: str | None,
) -> AnnData:
    """The common end of the folder readers: attach labels, record the import, validate."""
    if labels is not None:
        adata.obs["cell_type"], info["unlabeled_cells"] = read_labels(labels, adata.obs_names, label_column)
        files["labels"] = str(labels)
    adata.uns["ssl_st_import"] = info
    validate(adata, source=str(folder), label_key="cell_type" if labels is not None else None, files=files)
    return adata
