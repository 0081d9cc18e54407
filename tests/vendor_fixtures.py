"""Small files in the exact on-disk layouts of the vendors, with their ground truth.

- :func:`write_xenium` -- a 10x Xenium output folder: ``cell_feature_matrix.h5`` (10x feature-barcode
  HDF5: ``matrix/{data,indices,indptr,shape,barcodes}``, ``matrix/features/{id,name,feature_type,genome,
  _all_tag_keys}`` as fixed-width byte strings, shape = [n_features, n_barcodes], CSC by barcode) or
  ``cell_feature_matrix/`` (MEX), and ``cells.csv.gz`` or ``cells.parquet`` (XOA 2.x columns);
- :func:`write_merscope` -- a Vizgen MERSCOPE folder: ``cell_by_gene.csv`` (``cell`` + genes +
  ``Blank-*``) and ``cell_metadata.csv`` (unnamed index, fov, volume, center_x, center_y, bounds);
- :func:`write_cellxgene_h5ad` -- a CELLxGENE-style h5ad: Ensembl var index, ``feature_name``, raw
  counts in ``.raw``, normalised ``X``, ``obsm['X_spatial']``.

Each writer returns an :class:`Expected` so tests compare exactly, not approximately.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

GENES: tuple[tuple[str, str], ...] = (
    ("ENSG00000075624", "ACTB"), ("ENSG00000111640", "GAPDH"), ("ENSG00000119888", "EPCAM"),
    ("ENSG00000170421", "KRT8"), ("ENSG00000081237", "PTPRC"), ("ENSG00000198851", "CD3E"),
    ("ENSG00000156738", "MS4A1"), ("ENSG00000141736", "ERBB2"), ("ENSG00000091831", "ESR1"),
    ("ENSG00000026025", "VIM"),
)
# Xenium's control kinds and the feature names it gives them (XOA 2.x naming).
CONTROLS: dict[str, tuple[str, int]] = {
    "Negative Control Probe": ("NegControlProbe_{:05d}", 3),
    "Negative Control Codeword": ("NegControlCodeword_{:04d}", 2),
    "Unassigned Codeword": ("UnassignedCodeword_{:04d}", 4),
    "Deprecated Codeword": ("DeprecatedCodeword_{:04d}", 1),
    "Genomic Control": ("GenomicControl_{:04d}", 1),
}
CELL_TYPES = ("Tumor", "T_Cells", "B_Cells", "Stromal")
MERSCOPE_GENES = ("SLC17A7", "GAD1", "AQP4", "MBP", "PDGFRA", "NEAT1", "RMST", "CUX2")


@dataclass
class Expected:
    """Ground truth of a written fixture, in the reader's cell and gene order."""

    path: Path
    counts: np.ndarray  # cells x kept genes, integers
    coords: np.ndarray  # cells x 2, float64, micrometres
    cell_ids: list[str]
    genes: list[str]  # var_names (symbols)
    gene_ids: list[str | None]
    labels: list[str | None] | None = None
    labels_path: Path | None = None
    dropped: dict[str, int] = field(default_factory=dict)


def _xenium_id(i: int) -> str:
    """XOA >= 1.3 cell ids: 8 letters a-p (hex digits shifted) + '-1'."""
    return "".join(chr(ord("a") + int(c, 16)) for c in f"{i + 0x1A2B3C:08x}") + "-1"


def _labels_csv(directory: Path, cell_ids: list[str], rng: np.random.Generator, *, id_col: str, label_col: str,
                n_unlabeled: int = 2) -> tuple[Path, list[str | None]]:
    """10x-style supplementary annotation (Barcode, Cluster); the last cells are left out on purpose."""
    labels = [str(rng.choice(CELL_TYPES)) for _ in cell_ids]
    keep = len(cell_ids) - n_unlabeled
    path = directory / "cell_types.csv"
    pd.DataFrame({id_col: cell_ids[:keep], label_col: labels[:keep]}).to_csv(path, index=False)
    return path, labels[:keep] + [None] * n_unlabeled


def write_xenium(directory: str | Path, *, n_cells: int = 50, genes: tuple[tuple[str, str], ...] = GENES,
                 controls: dict[str, int] | None = None, matrix: str = "h5", cells: str = "csv.gz", seed: int = 0,
                 labels: bool = False) -> Expected:
    """A Xenium output folder. ``controls``: count per control kind (default: one of each kind in CONTROLS)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    controls = {kind: n for kind, (_, n) in CONTROLS.items()} if controls is None else controls
    ids, names, types = [g[0] for g in genes], [g[1] for g in genes], ["Gene Expression"] * len(genes)
    for kind, n in controls.items():
        pattern = CONTROLS[kind][0] if kind in CONTROLS else kind.replace(" ", "") + "_{:04d}"
        for j in range(n):
            ids.append(pattern.format(j))
            names.append(pattern.format(j))
            types.append(kind)
    is_gene = np.array([t == "Gene Expression" for t in types])
    counts = np.where(is_gene, rng.poisson(2.0, (n_cells, len(ids))), rng.poisson(0.1, (n_cells, len(ids))))
    counts[0] = 0  # Xenium keeps cells with no decoded transcripts
    barcodes = [_xenium_id(i) for i in range(n_cells)]

    if matrix == "h5":
        csc = sp.csc_matrix(counts.T)  # features x barcodes, one column per barcode
        with h5py.File(directory / "cell_feature_matrix.h5", "w") as f:
            f.attrs["filetype"], f.attrs["version"] = "matrix", 2
            g = f.create_group("matrix")
            g.create_dataset("data", data=csc.data.astype(np.int32), compression="gzip")
            g.create_dataset("indices", data=csc.indices.astype(np.int64), compression="gzip")
            g.create_dataset("indptr", data=csc.indptr.astype(np.int64))
            g.create_dataset("shape", data=np.array(csc.shape, dtype=np.int32))
            g.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
            fe = g.create_group("features")
            fe.create_dataset("id", data=np.array(ids, dtype="S"))
            fe.create_dataset("name", data=np.array(names, dtype="S"))
            fe.create_dataset("feature_type", data=np.array(types, dtype="S"))
            fe.create_dataset("genome", data=np.array(["GRCh38"] * len(ids), dtype="S"))
            fe.create_dataset("_all_tag_keys", data=np.array(["genome"], dtype="S"))
    elif matrix == "mex":
        mex = directory / "cell_feature_matrix"
        mex.mkdir(exist_ok=True)
        coo = sp.coo_matrix(sp.csc_matrix(counts.T))  # column-major entries, as 10x writes them
        lines = ["%%MatrixMarket matrix coordinate integer general", '%metadata_json: {"format_version": 2}',
                 f"{len(ids)} {n_cells} {coo.nnz}"]
        lines += [f"{r + 1} {c + 1} {v}" for r, c, v in zip(coo.row, coo.col, coo.data)]
        (mex / "matrix.mtx.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
        table = "".join(f"{i}\t{n}\t{t}\n" for i, n, t in zip(ids, names, types))
        (mex / "features.tsv.gz").write_bytes(gzip.compress(table.encode()))
        (mex / "barcodes.tsv.gz").write_bytes(gzip.compress("".join(b + "\n" for b in barcodes).encode()))
    else:
        raise ValueError(matrix)

    coords = np.round(rng.uniform(0, 2000, (n_cells, 2)), 4)
    def total(kind: str) -> np.ndarray:
        return counts[:, [t == kind for t in types]].sum(axis=1)
    table = pd.DataFrame({
        "cell_id": barcodes, "x_centroid": coords[:, 0], "y_centroid": coords[:, 1],
        "transcript_counts": total("Gene Expression"), "control_probe_counts": total("Negative Control Probe"),
        "genomic_control_counts": total("Genomic Control"),
        "control_codeword_counts": total("Negative Control Codeword"),
        "unassigned_codeword_counts": total("Unassigned Codeword"),
        "deprecated_codeword_counts": total("Deprecated Codeword"),
        "total_counts": counts.sum(axis=1), "cell_area": np.round(rng.uniform(20, 200, n_cells), 4),
        "nucleus_area": np.round(rng.uniform(5, 60, n_cells), 4), "nucleus_count": 1,
        "segmentation_method": "Segmented by nucleus expansion of 5.0µm",
    }).sample(frac=1.0, random_state=seed)  # row order is not a contract: the reader must match by cell_id
    if cells == "csv.gz":
        table.to_csv(directory / "cells.csv.gz", index=False, compression="gzip")
    elif cells == "parquet":
        table.to_parquet(directory / "cells.parquet", index=False)
    else:
        raise ValueError(cells)

    expected = Expected(directory, counts[:, is_gene], coords, barcodes, list(np.array(names)[is_gene]),
                        list(np.array(ids)[is_gene]))
    expected.dropped = {"dropped_controls": int((~is_gene).sum()),
                        "dropped_control_counts": int(counts[:, ~is_gene].sum())}
    expected.dropped |= {"dropped_" + k.lower().replace(" ", "_"): n for k, n in controls.items() if n}
    if labels:
        expected.labels_path, expected.labels = _labels_csv(directory, barcodes, rng,
                                                            id_col="Barcode", label_col="Cluster")
    return expected


def _vizgen_id(rng: np.random.Generator) -> str:
    """MERSCOPE cell ids: ~38-digit integers, beyond int64."""
    return f"{rng.integers(10**17, 10**18)}{rng.integers(10**18, 10**19, dtype=np.uint64)}"


def write_merscope(directory: str | Path, *, n_cells: int = 50, genes: tuple[str, ...] = MERSCOPE_GENES,
                   n_blanks: int = 5, seed: int = 0, index_header: str = "cell", labels: bool = False) -> Expected:
    """A MERSCOPE output folder. ``index_header=''`` writes the older layout with an unnamed id column."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cell_ids = list(dict.fromkeys(_vizgen_id(rng) for _ in range(n_cells)))
    counts = rng.poisson(3.0, (n_cells, len(genes)))
    blanks = rng.poisson(0.05, (n_cells, n_blanks))
    columns = list(genes) + [f"Blank-{j}" for j in range(n_blanks)]
    by_gene = pd.DataFrame(np.hstack([counts, blanks]), columns=columns)
    by_gene.insert(0, index_header, cell_ids)
    by_gene.to_csv(directory / "cell_by_gene.csv", index=False)

    coords = np.round(rng.uniform(1000, 9000, (n_cells, 2)), 4)
    radius = np.round(rng.uniform(3, 8, (n_cells, 1)), 4)
    meta = pd.DataFrame({
        "fov": rng.integers(0, 40, n_cells), "volume": np.round(rng.uniform(200, 2000, n_cells), 4),
        "center_x": coords[:, 0], "center_y": coords[:, 1],
        "min_x": coords[:, 0] - radius[:, 0], "max_x": coords[:, 0] + radius[:, 0],
        "min_y": coords[:, 1] - radius[:, 0], "max_y": coords[:, 1] + radius[:, 0],
    }, index=pd.Index(cell_ids)).sample(frac=1.0, random_state=seed)
    meta.to_csv(directory / "cell_metadata.csv")  # first header field empty, as Vizgen writes it

    expected = Expected(directory, counts, coords, cell_ids, list(genes), [None] * len(genes))
    expected.dropped = {"dropped_blanks": n_blanks, "dropped_blank_counts": int(blanks.sum())}
    if labels:
        expected.labels_path, expected.labels = _labels_csv(directory, cell_ids, rng,
                                                            id_col="cell", label_col="cell_type")
    return expected


def write_cellxgene_h5ad(path: str | Path, *, n_cells: int = 40, genes: tuple[tuple[str, str], ...] = GENES,
                         seed: int = 0, spatial_key: str = "X_spatial") -> Expected:
    """A CELLxGENE-style h5ad (Slide-seqV2 section): raw counts in .raw, log1p(CP10k) in X."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    counts = rng.poisson(1.5, (n_cells, len(genes)))
    counts[:, 0] += 1  # no empty cell, so normalisation is defined everywhere
    ids, symbols = [g[0] for g in genes], [g[1] for g in genes]
    var = pd.DataFrame({
        "feature_is_filtered": False, "feature_name": pd.Categorical(symbols),
        "feature_reference": "NCBITaxon:9606", "feature_biotype": "gene",
    }, index=pd.Index(ids))
    cell_ids = [f"bead_{i:05d}" for i in range(n_cells)]
    labels = [str(rng.choice(CELL_TYPES)) for _ in range(n_cells)]
    obs = pd.DataFrame({"cell_type": pd.Categorical(labels), "assay": "Slide-seqV2", "tissue": "kidney"},
                       index=pd.Index(cell_ids))
    coords = np.round(rng.uniform(0, 3000, (n_cells, 2)), 3)
    normalised = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    adata = ad.AnnData(X=sp.csr_matrix(normalised.astype(np.float32)), obs=obs, var=var,
                       obsm={spatial_key: coords}, uns={"schema_version": "5.2.0", "title": "fixture"})
    adata.raw = ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs[[]], var=var.copy())
    adata.write_h5ad(path)
    return Expected(path, counts, coords, cell_ids, symbols, ids, labels=labels)
