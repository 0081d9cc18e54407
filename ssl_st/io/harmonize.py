"""After reading: a dataset's cell sample and its gene space, the same whatever the source.

- :func:`first_cells` keeps the first ``n_cells`` cells (a reproducible subset of a large file);
- :func:`to_human_space` checks that the gene IDs are of the declared species and brings mouse data
  into the human gene space of the models through one-to-one orthologs (see :mod:`ssl_st.orthologs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from anndata import AnnData

from ..orthologs import read_orthologs, species_of, to_human
from .checks import DataError

Species = Literal["human", "mouse"]


def first_cells(adata: AnnData, n_cells: int | None) -> AnnData:
    """The first ``n_cells`` cells as a new AnnData; ``adata`` itself when it has no more or ``n_cells`` is None."""
    if n_cells and n_cells < adata.n_obs:
        return adata[:n_cells].copy()
    return adata


def to_human_space(
    adata: AnnData, *, species: Species, orthologs: str | Path | None = None, where: str
) -> AnnData:
    """``adata`` in human gene space: as it is for human data, through ``orthologs`` for mouse data.

    ``orthologs`` is a one-to-one ortholog table (CSV or TSV, :func:`ssl_st.orthologs.read_orthologs`),
    or ``"demo"`` for the simulator's. ``where`` names the dataset in errors (its path, or e.g.
    ``demo slideseq-mouse``). Raises :class:`DataError` when the Ensembl IDs in ``var`` look like the
    other species than the one declared, or mouse data comes without orthologs.
    """
    if species not in ("human", "mouse"):
        raise ValueError(f"species must be human or mouse, not {species!r}")
    seen = species_of(adata.var)
    if seen is not None and seen != species:
        raise DataError(
            where, "var (gene IDs)", f"looks like {seen} data but the dataset is declared {species}",
            f"set species: {seen}" + (" and orthologs: a one-to-one ortholog table" if seen == "mouse" else ""),
        )  # fmt: skip
    if species == "human":
        return adata
    if orthologs is None:
        raise DataError(where, "orthologs", "are missing for mouse data", "set orthologs: a one-to-one ortholog table")
    if orthologs == "demo":
        from ..datasets.simulate import ortholog_table  # the simulator is only needed for its demo table

        return to_human(adata, ortholog_table())
    return to_human(adata, read_orthologs(orthologs))
