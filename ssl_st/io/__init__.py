"""Readers: what a spatial instrument or portal produced -> one standard AnnData.

Every reader returns the same shape of object, so every task can use any dataset:

- raw counts as a float32 CSR matrix of integer values in ``X`` and ``layers['counts']`` (one object);
- ``obsm['spatial']``: float64 (n, 2) coordinates, micrometres for Xenium and MERSCOPE (h5ad: as stored);
- labels in ``obs`` when the source has them (``obs['cell_type']`` for a labels CSV);
- ``var`` indexed by gene symbol (else id), with ``gene_symbols`` and ``gene_ids`` (Ensembl, else NaN);
- ``uns['ssl_st_import']``: ``format``, ``source`` and what was dropped (``dropped_controls``,
  ``dropped_blanks``, ``dropped_features``, ...).

Bad inputs raise :class:`DataError` (a ``ValueError``) naming the file, the field and the fix.
After reading, :func:`first_cells` and :func:`to_human_space` (:mod:`.harmonize`) subsample a dataset
and bring it into the models' human gene space.

>>> adata = read("outs/xenium_run", format="xenium", labels="cell_types.csv")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anndata import AnnData

from .h5ad import read_h5ad
from .harmonize import first_cells, to_human_space
from .merscope import read_merscope
from .validate import DataError, guess_format, validate
from .xenium import read_xenium

READERS = {"xenium": read_xenium, "merscope": read_merscope, "h5ad": read_h5ad}


def read(path: str | Path, format: str | None = None, **options: Any) -> AnnData:  # noqa: A002 - the user-facing word
    """Read ``path`` with the reader for ``format`` (``xenium``, ``merscope``, ``h5ad``; None: guess it)."""
    name = format or guess_format(path)
    if name not in READERS:
        field, problem = (f"format={format!r}", "is not supported") if format else ("format", "could not be recognised")
        raise DataError(path, field, problem,
                        f"pass format= one of {sorted(READERS)} (a Xenium or MERSCOPE output folder, or an .h5ad file)")
    return READERS[name](path, **options)


__all__ = [
    "DataError",
    "first_cells",
    "guess_format",
    "read",
    "read_h5ad",
    "read_merscope",
    "read_xenium",
    "to_human_space",
    "validate",
]
