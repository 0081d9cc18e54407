"""Checks that an imported dataset is one standard AnnData, and the errors that say how to fix it.

The standard every reader returns (and :func:`validate` checks):

- expression of a declared type (:mod:`.values`, recorded in ``uns['ssl_st']``): raw counts in
  ``layers['counts']`` and ``X``, finite, non-negative, integer-valued; or normalised or
  log-normalised values in ``X``, finite and non-negative;
- ``obsm['spatial']``: float64, n x 2, finite (micrometres for Xenium and MERSCOPE);
- unique cell ids (``obs_names``) and unique gene names (``var_names``, after dropping controls);
- the label column, when one is asked for, present in ``obs`` and not empty.

Every problem raises :class:`DataError`, whose message names the file, the field and the fix:
a user who pointed ssl-st at the wrong folder should learn what to do from one line, not from a
``KeyError`` traceback ten frames deep in pandas. A fix names options as ``{label_key}`` or
``{values=normalized}``, spelled for whoever reads it (:data:`OPTIONS`): ``label_key=`` in Python,
``--label-key`` on the command line, ``label_key:`` in experiments.yaml (:meth:`DataError.spelled`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .values import COUNTS, ValueType

ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
# What a labels CSV may call its two columns (10x's supplementary annotations use Barcode, Cluster).
LABEL_ID_COLUMNS = ("Barcode", "barcode", "cell_id", "cell", "EntityID", "cell_ID")
LABEL_VALUE_COLUMNS = ("Cluster", "cluster", "cell_type", "celltype", "label", "group", "annotation")


Audience = Literal["python", "cli", "yaml"]
# An option as each audience writes it: the Python keyword, the command-line flag, the experiments.yaml key.
OPTIONS: dict[str, tuple[str, str]] = {
    "format": ("--format", "source"),
    "values": ("--values", "values"),
    "target_sum": ("--target-sum", "target_sum"),
    "counts_layer": ("--counts-layer", "counts_layer"),
    "label_key": ("--label-key", "label_key"),
    "labels": ("--labels", "labels"),
    "label_column": ("--label-column", "label_column"),
    "spatial_key": ("--spatial-key", "spatial_key"),
    "gene_symbols": ("--gene-symbols", "gene_symbols"),
    "gene_ids": ("--gene-ids", "gene_ids"),
}
_OPTION = re.compile(r"\{(\w+)(?:=([^{}]*))?\}")


def spell(text: str, audience: Audience = "python") -> str:
    """``text`` with each ``{option}`` / ``{option=value}`` written as ``audience`` writes it."""
    def one(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        if name not in OPTIONS:
            return match.group(0)
        flag, key = OPTIONS[name]
        if audience == "cli":
            return flag if value is None else f"{flag} {value}"
        if audience == "yaml":
            return f"{key}:" if value is None else f"{key}: {value}"
        if value is None:
            return f"{name}="
        plain = value == "None" or value.replace(".", "", 1).isdigit()
        return f"{name}={value if plain else repr(value)}"

    return _OPTION.sub(one, text)


class DataError(ValueError):
    """An input file cannot become a standard AnnData. ``file``, ``field``, ``problem`` and ``fix`` are
    kept apart, spelled for ``audience`` (the templates stay, so :meth:`spelled` can respell them)."""

    def __init__(self, file: str | Path, field: str, problem: str, fix: str, audience: Audience = "python") -> None:
        self._templates = (field, problem, fix)
        self.audience = audience
        self.file = str(file)
        self.field, self.problem, self.fix = (spell(part, audience) for part in self._templates)
        super().__init__(f"{file}: {self.field} {self.problem}; {self.fix}")

    def spelled(self, audience: Audience) -> DataError:
        """The same error with its options as ``audience`` writes them (``cli``: ``--label-key``)."""
        return DataError(self.file, *self._templates, audience=audience)

    def __reduce__(self):  # keep the parts when pickled (Ray ships exceptions between workers)
        return (type(self), (self.file, *self._templates, self.audience))


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
    return f" It looks like {found} data instead: read it with {{format={found}}}."


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
                        "{labels} takes the path of a CSV with a cell id and a label column")
    table = read_csv(file, "a labels CSV maps cell ids to labels (columns Barcode, Cluster)", dtype=str)
    id_col = next((c for c in LABEL_ID_COLUMNS if c in table.columns), None)
    value_col = label_column or next((c for c in LABEL_VALUE_COLUMNS if c in table.columns), None)
    if table.shape[1] == 2:  # a two-column mapping: the column that is not the id holds the labels
        id_col = id_col or table.columns[0]
        value_col = value_col or next(c for c in table.columns if c != id_col)
    if id_col is None or value_col is None or value_col not in table.columns:
        raise DataError(file, "columns", f"are {list(table.columns)}; no cell id column ({'/'.join(LABEL_ID_COLUMNS)}) "
                        f"and label column ({label_column or '/'.join(LABEL_VALUE_COLUMNS)}) found",
                        "rename them (10x's annotation CSVs use Barcode, Cluster) or name the label column with {label_column}")
    mapping = table.drop_duplicates(id_col).set_index(id_col)[value_col]
    labels = mapping.reindex(pd.Index(cell_ids.astype(str)))
    if labels.isna().all():
        raise DataError(file, f"column '{id_col}'", f"shares no cell id with the data (e.g. "
                        f"{list(mapping.index[:3])} vs {list(cell_ids[:3])})",
                        "use the labels file of this very run/section")
    labels = pd.Series(pd.Categorical(labels.to_numpy(object)), index=cell_ids)
    return labels, int(labels.isna().sum())


# What an undeclared non-integer matrix may be, and how to say so (a reader adds where counts may be).
DECLARE = ("declare what they are with {values=normalized} or {values=log-normalized} "
           "(and {target_sum} if the sum each cell was scaled to is known)")
LOG1P_MAX = 25.0  # log1p of 7e10: no log-normalised value comes near it, normalised ones often do


def check_values(matrix: sp.spmatrix | np.ndarray, values: ValueType, file: str | Path, field: str,
                 cells: Sequence[str] | None = None, genes: Sequence[str] | None = None, *,
                 elsewhere: str = "") -> None:
    """Raise unless ``matrix`` holds what ``values`` declares: finite and non-negative numbers; integers
    for counts (the one check every reader and command makes, so undeclared normalised values are refused
    everywhere alike); log1p-sized numbers for log-normalised values.

    With ``cells``/``genes`` the message points at the first bad entry, e.g. column 'GAD1' of a CSV.
    ``elsewhere`` completes the fix where the reader could look elsewhere, e.g. "; {counts_layer} names another layer".
    """
    matrix = matrix.tocsr() if sp.issparse(matrix) else np.asarray(matrix)
    data = matrix.data if sp.issparse(matrix) else matrix.ravel()

    def first(bad: np.ndarray) -> str:  # "(first: cell 'c7', gene 'GAD1')" for the first True in bad
        if cells is None or genes is None or matrix.ndim != 2:
            return ""
        k = int(np.argmax(bad))
        row, col = ((int(np.searchsorted(matrix.indptr, k, side="right")) - 1, int(matrix.indices[k]))
                    if sp.issparse(matrix) else divmod(k, matrix.shape[1]))
        return f" (first: cell {str(cells[row])!r}, gene {str(genes[col])!r})"

    what = "raw counts" if values.is_counts else f"{values.kind} values"
    if data.dtype.kind not in "biuf":
        raise DataError(file, field, f"has dtype {data.dtype}, not numbers", f"{what} must be a numeric matrix")
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        if bad.any():
            raise DataError(file, field, f"holds {int(bad.sum())} NaN/infinite values{first(bad)}",
                            f"{what} cannot be missing; re-export the matrix or fill the gaps with 0 on purpose")
    if data.size and data.min() < 0:
        raise DataError(file, field, f"holds negative values (min {data.min():g}){first(data < 0)}",
                        "expression is >= 0; this looks like scaled/centred data (sc.pp.scale): use the raw counts, "
                        "or the normalised values from before the scaling" + elsewhere)
    if values.is_counts and data.dtype.kind == "f" and data.size:
        frac = data != np.round(data)
        if frac.any():
            example = float(data[np.argmax(frac)])
            raise DataError(file, field, f"holds non-integer values (e.g. {example:g}){first(frac)}: not raw counts",
                            DECLARE + elsewhere)
    if values.kind == "log-normalized" and data.size and data.max() > LOG1P_MAX:
        raise DataError(file, field, f"holds values up to {data.max():g}{first(data > LOG1P_MAX)}: too large for "
                        "log1p of normalised values", "if they are not logged, declare {values=normalized}")


def resolve_values(declared: ValueType | None, recorded: ValueType | None, file: str | Path) -> ValueType:
    """The value type to read a file with: as declared, else as the file records (an ssl-st import),
    else counts. A declaration that contradicts the record is an error: one of them is wrong."""
    if declared is None:
        return recorded or COUNTS
    if recorded is not None and recorded.kind != declared.kind:
        raise DataError(file, "uns['ssl_st']", f"records values: {recorded} (from its import), but "
                        f"{{values={declared.kind}}} was declared",
                        "drop the declaration, or import the original file again with the right one")
    if declared.target_sum is None and recorded is not None:
        return recorded
    return declared


def declared_type(values: str | None, target_sum: float | None, file: str | Path) -> ValueType | None:
    """``values``/``target_sum`` as a user wrote them, checked (None: nothing declared)."""
    if values is None and target_sum is None:
        return None
    try:
        return ValueType(values or "counts", target_sum)  # type: ignore[arg-type]
    except ValueError as err:
        if "target sum" in str(err) or "target_sum" in str(err):
            raise DataError(file, "{target_sum}", f"is not valid: {err}",
                            "declare {values=normalized} or {values=log-normalized} with it") from None
        raise DataError(file, "{values}", f"is not valid: {err}", "write {values=counts}, {values=normalized} or "
                        "{values=log-normalized}") from None


def expression_field(adata: AnnData, values: ValueType) -> str:
    """Where an AnnData's expression is: ``layers['counts']`` (else ``X``) for counts, ``X`` otherwise."""
    return "layers['counts']" if values.is_counts and "counts" in adata.layers else "X"


def record_values(adata: AnnData, values: ValueType) -> None:
    """Keep the type in ``uns['ssl_st']`` (next to what :func:`ssl_st.tl.embed` records there)."""
    record = {k: v for k, v in dict(adata.uns.get("ssl_st", {})).items() if k not in ("values", "target_sum")}
    adata.uns["ssl_st"] = record | values.as_uns()


def declare_values(adata: AnnData, values: str | None = None, target_sum: float | None = None, *,
                   file: str | Path) -> ValueType:
    """Decide what ``adata``'s expression values are, check them and record the answer in ``uns``.

    What the standalone commands (``ssl-st cluster``, ``embed``, ``pretrain``) run on an AnnData as the
    user gave it; the readers make the same decision (:func:`resolve_values`) and check
    (:func:`check_values`) on the matrix they pick. Raises :class:`DataError`.
    """
    kind = resolve_values(declared_type(values, target_sum, file), ValueType.recorded(adata.uns), file)
    field = expression_field(adata, kind)
    check_values(adata.layers["counts"] if field != "X" else adata.X, kind, file, field, adata.obs_names,
                 adata.var_names)
    record_values(adata, kind)
    return kind


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
                        "or name the 2-D array with {spatial_key}")
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
    values = ValueType.recorded(adata.uns) or COUNTS
    field = expression_field(adata, values)
    check_values(adata.layers["counts"] if field != "X" else adata.X, values, file("counts"), field,
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
                        "spatial tasks need (x, y) per cell; name the coordinates with {spatial_key}")
    if label_key is not None:
        if label_key not in adata.obs.columns:
            raise DataError(file("labels"), f"obs['{label_key}']", f"is absent; obs has {list(adata.obs.columns)}",
                            "name the label column with {label_key}")
        if adata.obs[label_key].isna().all():
            raise DataError(file("labels"), f"obs['{label_key}']", "holds no labels (all missing)",
                            "name the column that holds the cell types with {label_key}")


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
    record_values(adata, COUNTS)  # instruments count molecules: their outputs are counts
    validate(adata, source=str(folder), label_key="cell_type" if labels is not None else None, files=files)
    return adata
