"""Which genes a spatial panel and a reference share, and finding genes by ID or symbol."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ..genes import Vocabulary, map_genes

# Panel columns that are not genes: blank / negative-control / unassigned codewords (MERSCOPE
# "Blank-0001", Xenium "NegControlProbe_*", "BLANK_*", "UnassignedCodeword_*", CosMx "NegPrb*").
NOT_A_GENE = re.compile(r"^(blank|negcontrol|negprb|systemcontrol|unassigned|deprecated|intergenic)", re.I)
MATCHING = "Ensembl ID first (version suffix stripped), then case-insensitive symbol (ssl_st.genes.map_genes)"


def panel_columns(var: pd.DataFrame) -> np.ndarray:
    """Indices of the spatial columns that are genes (control barcodes dropped)."""
    return np.flatnonzero([not NOT_A_GENE.match(str(name)) for name in var.index])


def shared_genes(spatial: AnnData, reference: AnnData) -> tuple[np.ndarray, np.ndarray]:
    """Column indices ``(spatial_idx, reference_idx)`` of the genes both datasets measure, paired.

    Matching is ``ssl_st.genes.map_genes``: Ensembl ID first, then case-insensitive symbol; each
    reference gene receives at most one spatial gene. Control barcodes (``Blank-0001`` ...) never match.
    Empty arrays when nothing is shared (``impute`` and ``holdout`` turn that into an error).
    """
    panel = panel_columns(spatial.var)
    mapping = map_genes(spatial.var.iloc[panel], Vocabulary.from_var(reference.var))
    return panel[mapping.source], mapping.target


def require_shared(spatial: AnnData, reference: AnnData) -> tuple[np.ndarray, np.ndarray]:
    """:func:`shared_genes`, refusing datasets that share none with an error that says how to fix it."""
    sp_idx, ref_idx = shared_genes(spatial, reference)
    if sp_idx.size == 0:
        raise ValueError(
            f"the spatial dataset ({len(panel_columns(spatial.var))} genes, e.g. "
            f"{', '.join(map(str, spatial.var_names[:3]))}) and the reference ({reference.n_vars} genes, e.g. "
            f"{', '.join(map(str, reference.var_names[:3]))}) share no gene; genes are matched by {MATCHING}. "
            "Check that both are the same species and that var holds Ensembl IDs (gene_ids/feature_id) or symbols."
        )
    return sp_idx, ref_idx


class GeneIndex:
    """Look-up of a gene by Ensembl ID (version stripped) or, failing that, case-insensitive symbol."""

    def __init__(self, ids: Sequence[Any], symbols: Sequence[Any]) -> None:
        # reversed: the first occurrence wins, as in ssl_st.genes.map_genes
        self.by_id = {g: i for i, g in reversed(list(enumerate(ids))) if isinstance(g, str) and g}
        self.by_symbol = {s.lower(): i for i, s in reversed(list(enumerate(symbols))) if isinstance(s, str) and s}

    def find(self, name: str) -> int | None:
        hit = self.by_id.get(re.sub(r"\.\d+$", "", str(name)))
        return hit if hit is not None else self.by_symbol.get(str(name).lower())


def resolve(names: Sequence[str], index: GeneIndex, what: str) -> np.ndarray:
    """Positions of ``names`` (IDs or symbols), first occurrence each; ValueError naming the missing ones."""
    hits = {name: index.find(name) for name in names}
    missing = [name for name, hit in hits.items() if hit is None]
    if missing:
        raise ValueError(f"{len(missing)} requested gene(s) not found in {what}: {', '.join(map(str, missing[:10]))}")
    return np.asarray(list(dict.fromkeys(hits.values())), dtype=np.int64)


def unique_names(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        n = seen.get(name, 0)
        out.append(name if n == 0 else f"{name}-{n}")
        seen[name] = n + 1
    return out
