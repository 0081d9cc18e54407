"""The gene space: a model's vocabulary and the mapping of a dataset onto it.

A model reads a fixed, ordered gene vocabulary (scTab's ``var.parquet``: ``feature_id`` = Ensembl ID,
``feature_name`` = symbol). A dataset is mapped onto it by Ensembl ID first (version suffixes stripped)
and then, for the genes still unmatched, by symbol, case-insensitively. Vocabulary genes the dataset
does not measure are zero-filled. Every mapping yields a :class:`Coverage` record, which the grid
stores next to the metrics: a zero-shot F1 means little without knowing that 19,000 of 19,331 inputs
were zeros.

The reusability study matched lower-cased symbols only, even where Ensembl IDs existed, and so lost
renamed genes (WARS -> WARS1 and KARS -> KARS1 on Xenium). Here IDs come first (symbols get renamed,
IDs do not), and a symbol that matches nothing is tried under its current HGNC name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

if TYPE_CHECKING:
    from anndata import AnnData  # annotations only: the model paths run without anndata

_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
# Where scverse/10x/CELLxGENE files usually keep gene IDs and symbols, in order of preference.
ID_COLUMNS = ("feature_id", "gene_ids", "gene_id", "ensembl_id")
SYMBOL_COLUMNS = ("feature_name", "gene_symbols", "gene_symbol", "gene_name", "symbol")


def _looks_like_ensembl(values: pd.Index | pd.Series) -> bool:
    sample = [str(v) for v in list(values[:200])]
    return bool(sample) and np.mean([bool(_ENSEMBL.match(v)) for v in sample]) > 0.9


def _text(column: pd.Series) -> pd.Series:
    """Strings, keeping missing values missing (``astype(str)`` would turn them into "nan")."""
    return column.astype(object).where(column.notna(), None).map(lambda v: v if v is None else str(v))


def _strip_version(ids: pd.Series) -> pd.Series:
    return ids.str.replace(r"\.\d+$", "", regex=True)


@dataclass(frozen=True)
class Vocabulary:
    """A model's ordered input genes."""

    ids: tuple[str, ...]
    symbols: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.symbols):
            raise ValueError("a vocabulary needs one symbol per Ensembl ID")

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_var(cls, var: pd.DataFrame) -> Vocabulary:
        table = gene_table(var)
        return cls(tuple(table["id"].fillna("")), tuple(table["symbol"].fillna("")))

    @classmethod
    def from_parquet(cls, path: str | Path) -> Vocabulary:
        """Read a scTab-style ``var.parquet`` (columns ``feature_id``, ``feature_name``)."""
        frame = pd.read_parquet(path)
        missing = {"feature_id", "feature_name"} - set(frame.columns)
        if missing:
            raise ValueError(
                f"{path}: a gene-order file needs the columns feature_id and feature_name "
                f"(scTab's var.parquet layout); missing {sorted(missing)}"
            )
        return cls(tuple(frame["feature_id"].astype(str)), tuple(frame["feature_name"].astype(str)))

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"feature_id": list(self.ids), "feature_name": list(self.symbols)})

    def to_parquet(self, path: str | Path) -> None:
        self.to_frame().to_parquet(path, index=False)


def gene_table(var: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset gene with its Ensembl ``id`` and ``symbol`` (NaN where unknown)."""
    index = pd.Series(var.index.astype(str), index=var.index)
    ids = next((_text(var[c]) for c in ID_COLUMNS if c in var.columns), None)
    symbols = next((_text(var[c]) for c in SYMBOL_COLUMNS if c in var.columns), None)
    if ids is None and _looks_like_ensembl(index):
        ids = index
    if symbols is None and not _looks_like_ensembl(index):
        symbols = index
    n = len(var)
    return pd.DataFrame(
        {
            "id": _strip_version(ids).to_numpy() if ids is not None else np.full(n, None, dtype=object),
            "symbol": symbols.to_numpy() if symbols is not None else np.full(n, None, dtype=object),
        }
    )


@dataclass(frozen=True)
class Coverage:
    """How well a dataset covers a model's vocabulary."""

    dataset_genes: int  # genes in the dataset
    mapped_genes: int  # dataset genes that landed on a vocabulary gene
    vocabulary_genes: int  # genes the model reads
    mapped_by_id: int
    mapped_by_symbol: int
    mapped_by_renamed_symbol: int = 0

    @property
    def dataset_fraction(self) -> float:
        return self.mapped_genes / max(self.dataset_genes, 1)

    @property
    def vocabulary_fraction(self) -> float:
        return self.mapped_genes / max(self.vocabulary_genes, 1)

    def as_dict(self) -> dict[str, float]:
        return {
            **asdict(self),
            "dataset_fraction": self.dataset_fraction,
            "vocabulary_fraction": self.vocabulary_fraction,
        }


@dataclass(frozen=True)
class GeneMapping:
    """Column ``source[i]`` of the dataset feeds vocabulary column ``target[i]``."""

    source: np.ndarray
    target: np.ndarray
    coverage: Coverage

    def apply(self, matrix: sp.spmatrix | np.ndarray) -> sp.csr_matrix:
        """Reorder a cells x dataset-genes matrix into cells x vocabulary, zero-filling the rest."""
        n_genes = matrix.shape[1]
        selector = sp.csr_matrix(
            (np.ones(len(self.source), dtype=np.float32), (self.source, self.target)),
            shape=(n_genes, self.coverage.vocabulary_genes),
        )
        return sp.csr_matrix(sp.csr_matrix(matrix, dtype=np.float32) @ selector)


@functools.cache
def renamed_symbols() -> dict[str, str]:
    """Previous -> current HGNC symbols shipped with ssl-st (lower-cased keys)."""
    text = resources.files("ssl_st.resources").joinpath("renamed_symbols.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")][1:]
    return {previous.lower(): current for previous, current in rows}


def map_genes(var: pd.DataFrame, vocabulary: Vocabulary, renamed: Mapping[str, str] | None = None) -> GeneMapping:
    """Match dataset genes to the vocabulary: Ensembl ID first, then case-insensitive symbol, then a
    renamed symbol's current name (``renamed``: previous -> current, default :func:`renamed_symbols`).

    Each vocabulary gene receives at most one dataset gene (the first match wins), so a duplicated
    symbol never sums two measurements.
    """
    genes = gene_table(var)
    renamed = {k.lower(): v for k, v in (renamed_symbols() if renamed is None else renamed).items()}
    vocab_by_id = {gid: i for i, gid in reversed(list(enumerate(vocabulary.ids))) if gid}
    vocab_by_symbol = {s.lower(): i for i, s in reversed(list(enumerate(vocabulary.symbols))) if s}
    source: list[int] = []
    target: list[int] = []
    taken: set[int] = set()
    counts = {"id": 0, "symbol": 0, "renamed": 0}
    for row, (gid, symbol) in enumerate(zip(genes["id"], genes["symbol"])):
        symbol = symbol.lower() if isinstance(symbol, str) else None
        candidates = (
            ("id", vocab_by_id.get(gid) if isinstance(gid, str) else None),
            ("symbol", vocab_by_symbol.get(symbol) if symbol else None),
            ("renamed", vocab_by_symbol.get(renamed.get(symbol, "").lower()) if symbol else None),
        )
        how, hit = next(((h, i) for h, i in candidates if i is not None and i not in taken), (None, None))
        if hit is None:
            continue
        counts[how] += 1
        taken.add(hit)
        source.append(row)
        target.append(hit)
    coverage = Coverage(
        dataset_genes=len(genes),
        mapped_genes=len(source),
        vocabulary_genes=len(vocabulary),
        mapped_by_id=counts["id"],
        mapped_by_symbol=counts["symbol"],
        mapped_by_renamed_symbol=counts["renamed"],
    )
    return GeneMapping(np.asarray(source, dtype=np.int64), np.asarray(target, dtype=np.int64), coverage)


def counts_matrix(adata: AnnData) -> sp.csr_matrix:
    """Raw counts: ``layers['counts']`` by the scverse convention, else ``X``."""
    matrix = adata.layers["counts"] if "counts" in adata.layers else adata.X
    return sp.csr_matrix(matrix, dtype=np.float32)


def to_vocabulary(adata: AnnData, vocabulary: Vocabulary) -> tuple[sp.csr_matrix, Coverage]:
    """Raw counts of ``adata`` in vocabulary order (cells x len(vocabulary)), with its coverage."""
    mapping = map_genes(adata.var, vocabulary)
    return mapping.apply(counts_matrix(adata)), mapping.coverage
