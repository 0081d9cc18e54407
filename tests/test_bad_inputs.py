"""A corpus of bad inputs: each must raise DataError whose message names the file and the field.

Every case starts from a correct vendor fixture and breaks one thing, the way real downloads break
(truncated copy, wrong folder, hand-edited CSV, normalised matrix passed as counts, ...).
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ssl_st.io import DataError, read, read_h5ad, read_merscope, read_xenium, validate

from .vendor_fixtures import GENES, write_cellxgene_h5ad, write_merscope, write_xenium

# anndata warns about the duplicated names before validate() rejects them
pytestmark = pytest.mark.filterwarnings("ignore:(Variable|Observation) names are not unique")

Case = Callable[[Path], Callable[[], object]]  # tmp dir -> the call that must fail
TWO_ACTB = (*GENES[:4], ("ENSG00000999999", "ACTB"))  # a second probe set reusing a symbol


def _edit_csv(file: Path, edit: Callable[[pd.DataFrame], pd.DataFrame], **read_kwargs) -> None:
    table = edit(pd.read_csv(file, **read_kwargs))
    table.to_csv(file, index=False, compression="gzip" if file.suffix == ".gz" else None)


def _h5ad(tmp: Path, **changes) -> Path:
    """A small scanpy-layout h5ad (counts layer, spatial, cell_type) with ``changes`` applied."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(2, (12, 4)).astype(np.float32)
    parts = {"X": counts.copy(), "layers": {"counts": counts}, "obsm": {"spatial": rng.uniform(0, 9, (12, 2))},
             "obs": pd.DataFrame({"cell_type": ["a", "b"] * 6}, index=[f"c{i}" for i in range(12)]),
             "var": pd.DataFrame(index=["ACTB", "GAPDH", "VIM", "CD3E"])}
    parts |= changes
    path = tmp / "bad.h5ad"
    ad.AnnData(**parts).write_h5ad(path)
    return path


def _with(array: np.ndarray, value: float) -> np.ndarray:
    """``array`` with one entry set to ``value`` (a hole in an otherwise valid matrix)."""
    array[3, 1] = value
    return array


def _without(name: str, vendor: str = "xenium", **options) -> Case:
    """A vendor folder with the file ``name`` deleted."""
    write, reader = (write_xenium, read_xenium) if vendor == "xenium" else (write_merscope, read_merscope)

    def case(tmp: Path) -> Callable[[], object]:
        path = write(tmp / vendor[0], **options).path
        (path / name).unlink()
        return lambda: reader(path)
    return case


def truncated_xenium_h5(tmp):
    file = write_xenium(tmp / "x").path / "cell_feature_matrix.h5"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    return lambda: read_xenium(file.parent)


def truncated_h5ad(tmp):
    file = write_cellxgene_h5ad(tmp / "c.h5ad").path
    file.write_bytes(file.read_bytes()[:1500])
    return lambda: read_h5ad(file)


def corrupt_cells_gzip(tmp):
    path = write_xenium(tmp / "x").path
    (path / "cells.csv.gz").write_bytes(gzip.compress(b"cell_id,x_centroid\n")[:12])
    return lambda: read_xenium(path)


def nan_counts_merscope(tmp):
    path = write_merscope(tmp / "m").path
    _edit_csv(path / "cell_by_gene.csv", lambda t: t.assign(GAD1=t["GAD1"].where(t.index != 2)), dtype={"cell": str})
    return lambda: read_merscope(path)


def negative_counts_xenium(tmp):
    file = write_xenium(tmp / "x").path / "cell_feature_matrix.h5"
    with h5py.File(file, "r+") as f:
        f["matrix/data"][0] = -3
    return lambda: read_xenium(file.parent)


def duplicated_cells_merscope(tmp):
    path = write_merscope(tmp / "m").path
    _edit_csv(path / "cell_by_gene.csv", lambda t: pd.concat([t, t.iloc[:1]]), dtype={"cell": str})
    return lambda: read_merscope(path)


def coordinates_column_missing(tmp):
    path = write_xenium(tmp / "x").path
    _edit_csv(path / "cells.csv.gz", lambda t: t.drop(columns=["x_centroid"]))
    return lambda: read_xenium(path)


def coordinates_not_finite(tmp):
    path = write_merscope(tmp / "m").path
    meta = pd.read_csv(path / "cell_metadata.csv", index_col=0, dtype={"Unnamed: 0": str})
    meta.iloc[4, meta.columns.get_loc("center_x")] = np.nan
    meta.to_csv(path / "cell_metadata.csv")
    return lambda: read_merscope(path)


def coordinates_not_numeric(tmp):
    path = write_xenium(tmp / "x").path
    _edit_csv(path / "cells.csv.gz", lambda t: t.assign(x_centroid="n/a"))
    return lambda: read_xenium(path)


def barcode_without_coordinates(tmp):
    path = write_xenium(tmp / "x").path
    _edit_csv(path / "cells.csv.gz", lambda t: t.iloc[1:])
    return lambda: read_xenium(path)


def labels_csv_wrong_columns(tmp):
    path = write_xenium(tmp / "x").path
    pd.DataFrame({"a": [1], "b": [2], "c": [3]}).to_csv(tmp / "types.csv", index=False)
    return lambda: read_xenium(path, labels=tmp / "types.csv")


def labels_from_another_run(tmp):
    path = write_merscope(tmp / "m").path
    pd.DataFrame({"cell": ["1", "2"], "cell_type": ["x", "y"]}).to_csv(tmp / "types.csv", index=False)
    return lambda: read_merscope(path, labels=tmp / "types.csv")


def empty_dataset(tmp):
    path = write_merscope(tmp / "m").path
    _edit_csv(path / "cell_by_gene.csv", lambda t: t.iloc[:0], dtype={"cell": str})
    return lambda: read_merscope(path)


def non_numeric_gene_column(tmp):
    path = write_merscope(tmp / "m").path
    _edit_csv(path / "cell_by_gene.csv", lambda t: t.assign(MBP="high"), dtype={"cell": str})
    return lambda: read_merscope(path)


# id -> (breaker, text naming the file, text naming the field)
CASES: dict[str, tuple[Case, str, str]] = {
    "missing-matrix": (_without("cell_feature_matrix.h5"), "/x", "cell_feature_matrix.h5"),
    "missing-cells-table": (_without("cells.csv.gz"), "/x", "cells.csv.gz"),
    "mex-missing-features": (_without("cell_feature_matrix/features.tsv.gz", matrix="mex"), "cell_feature_matrix", "features.tsv.gz"),
    "missing-metadata": (_without("cell_metadata.csv", "merscope"), "/m", "cell_metadata.csv"),
    "merscope-as-xenium": (
        lambda tmp: lambda: read(write_merscope(tmp / "m").path, format="xenium"),
        "/m", "format='merscope'"),
    "xenium-as-merscope": (lambda tmp: lambda: read_merscope(write_xenium(tmp / "x").path), "/x", "format='xenium'"),
    "h5ad-as-xenium": (
        lambda tmp: lambda: read_xenium(write_cellxgene_h5ad(tmp / "c.h5ad").path),
        "c.h5ad", "format='h5ad'"),
    "10x-h5-as-h5ad": (
        lambda tmp: lambda: read_h5ad(write_xenium(tmp / "x").path / "cell_feature_matrix.h5"),
        "cell_feature_matrix.h5", "X/obs/var"),
    "truncated-10x-h5": (truncated_xenium_h5, "cell_feature_matrix.h5", "truncated"),
    "truncated-h5ad": (truncated_h5ad, "c.h5ad", "truncated"),
    "corrupt-gzip-cells": (corrupt_cells_gzip, "cells.csv.gz", "CSV"),
    "nan-counts-h5ad": (
        lambda tmp: lambda: read_h5ad(_h5ad(tmp, layers={"counts": _with(np.ones((12, 4)), np.nan)})),
        "bad.h5ad", "layers['counts']"),
    "nan-counts-csv": (nan_counts_merscope, "cell_by_gene.csv", "gene 'GAD1'"),
    "negative-counts": (negative_counts_xenium, "cell_feature_matrix.h5", "negative"),
    "non-integer-x": (
        lambda tmp: lambda: read_h5ad(_h5ad(tmp, X=np.log1p(np.arange(48.0).reshape(12, 4)), layers={})),
        "bad.h5ad", "counts_layer="),
    "normalised-x-undeclared": (
        lambda tmp: lambda: read_h5ad(_h5ad(tmp, X=np.full((12, 4), 0.25), layers={})),
        "bad.h5ad", "values='normalized'"),
    "nan-in-declared-normalised": (
        lambda tmp: lambda: read_h5ad(_h5ad(tmp, X=_with(np.full((12, 4), 0.25), np.nan), layers={}), values="normalized"),
        "bad.h5ad", "NaN"),
    "declared-log-normalised-not-logged": (
        lambda tmp: lambda: read_h5ad(_h5ad(tmp, X=np.full((12, 4), 2500.0), layers={}), values="log-normalized"),
        "bad.h5ad", "too large for log1p"),
    "unknown-value-type": (
        lambda tmp: lambda: read_h5ad(_h5ad(tmp), values="normalised"),
        "bad.h5ad", "log-normalized"),
    "target-sum-of-counts": (lambda tmp: lambda: read_h5ad(_h5ad(tmp), target_sum=1e4), "bad.h5ad", "no target sum"),
    "labels-file-on-h5ad": (lambda tmp: lambda: read(_h5ad(tmp), labels="cell_type"), "bad.h5ad", "label_key='cell_type'"),
    "normalised-xenium": (
        lambda tmp: lambda: read(write_xenium(tmp / "x").path, values="normalized"), "/x", "raw counts"),
    "non-integer-layer": (
        lambda tmp: lambda: read_h5ad(_h5ad(tmp, layers={"counts": np.full((12, 4), 0.57)})),
        "bad.h5ad", "layers['counts']"),
    "counts-layer-absent": (
        lambda tmp: lambda: read_h5ad(_h5ad(tmp), counts_layer="raw_counts"),
        "bad.h5ad", "layers['raw_counts']"),
    "duplicated-genes": (
        lambda tmp: lambda: read_xenium(write_xenium(tmp / "x", genes=TWO_ACTB).path),
        "cell_feature_matrix.h5", "ACTB"),
    "duplicated-cell-ids": (duplicated_cells_merscope, "cell_by_gene.csv", "cell ids"),
    "coordinates-column-missing": (coordinates_column_missing, "cells.csv.gz", "x_centroid"),
    "coordinates-key-missing": (
        lambda tmp: lambda: read_h5ad(_h5ad(tmp, obsm={}), spatial_key="spatial"),
        "bad.h5ad", "obsm['spatial']"),
    "coordinates-wrong-shape": (
        lambda tmp: lambda: read_h5ad(_h5ad(tmp, obsm={"spatial": np.zeros((12, 3))})),
        "bad.h5ad", "(12, 3)"),
    "coordinates-not-finite": (coordinates_not_finite, "cell_metadata.csv", "center_x/center_y"),
    "coordinates-not-numeric": (coordinates_not_numeric, "cells.csv.gz", "x_centroid/y_centroid"),
    "barcode-without-coordinates": (barcode_without_coordinates, "cells.csv.gz", "cell_id"),
    "label-column-absent": (
        lambda tmp: lambda: read_h5ad(_h5ad(tmp), label_key="celltype"),
        "bad.h5ad", "obs['celltype']"),
    "labels-csv-wrong-columns": (labels_csv_wrong_columns, "types.csv", "Barcode"),
    "labels-from-another-run": (labels_from_another_run, "types.csv", "column 'cell'"),
    "empty-dataset": (empty_dataset, "cell_by_gene.csv", "0 cells"),
    "only-controls": (
        lambda tmp: lambda: read_xenium(write_xenium(tmp / "x", genes=()).path),
        "cell_feature_matrix.h5", "0 genes"),
    "non-numeric-gene-column": (non_numeric_gene_column, "cell_by_gene.csv", "'MBP'"),
    "missing-path": (lambda tmp: lambda: read(tmp / "nowhere", format="merscope"), "nowhere", "does not exist"),
    "unknown-format": (lambda tmp: lambda: read(write_merscope(tmp / "m").path, format="cosmx"), "/m", "cosmx"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_raises_data_error(tmp_path, case):
    breaker, file_text, field_text = CASES[case]
    call = breaker(tmp_path)
    with pytest.raises(DataError) as caught:
        call()
    message = str(caught.value)
    assert file_text in message, message
    assert field_text in message, message
    assert caught.value.file in message and caught.value.field in message and caught.value.fix in message
    assert isinstance(caught.value, ValueError)


def test_data_error_survives_pickling():
    """Ray ships exceptions between processes; the parts must survive, spelled as they were."""
    err = pickle.loads(pickle.dumps(DataError("a.csv", "column 'x'", "is missing", "add it")))
    assert (err.file, err.field, err.fix) == ("a.csv", "column 'x'", "add it")
    assert str(err).startswith("a.csv: column 'x'")
    spelled = pickle.loads(pickle.dumps(DataError("a.h5ad", "X", "is odd", "use {values=normalized}").spelled("yaml")))
    assert spelled.fix == "use values: normalized" and spelled.spelled("cli").fix == "use --values normalized"


@pytest.mark.parametrize(("audience", "spelled"), [
    ("python", "label_key='cell_type', counts_layer= or format='xenium'"),
    ("cli", "--label-key cell_type, --counts-layer or --format xenium"),
    ("yaml", "label_key: cell_type, counts_layer: or source: xenium"),
])
def test_options_are_spelled_for_whoever_reads_them(audience, spelled):
    err = DataError("f", "X", "is odd", "{label_key=cell_type}, {counts_layer} or {format=xenium}", audience)
    assert err.fix == spelled and "{unknown}" in DataError("f", "X", "is", "{unknown}", audience).fix


def test_validate_directly():
    """validate() on an in-memory AnnData: names the source and the field."""
    good = ad.AnnData(X=sp.csr_matrix(np.ones((3, 2), np.float32)), obsm={"spatial": np.zeros((3, 2))},
                      obs=pd.DataFrame({"cell_type": list("abc")}, index=list("xyz")))
    validate(good, source="mem")
    with pytest.raises(DataError, match=r"mem: obsm\['spatial'\] is missing"):
        validate(ad.AnnData(X=np.ones((3, 2), np.float32)), source="mem", label_key=None)
    with pytest.raises(DataError, match=r"mem: obs\['label'\] is absent; obs has \['cell_type'\]"):
        validate(good, source="mem", label_key="label")
