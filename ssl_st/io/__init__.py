"""Readers: what a spatial instrument or portal produced -> one standard AnnData.

Every reader returns the same shape of object, so every task can use any dataset:

- expression of a declared type (:mod:`.values`): raw counts as a float32 CSR matrix of integer
  values in ``X`` and ``layers['counts']`` (one object), or declared normalised / log-normalised
  values in ``X`` alone; the type in ``uns['ssl_st']`` (``values``, ``target_sum``);
- ``obsm['spatial']``: float64 (n, 2) coordinates, micrometres for Xenium and MERSCOPE (h5ad: as stored);
- labels in ``obs`` when the source has them (``obs['cell_type']`` for a labels CSV);
- ``var`` indexed by gene symbol (else id), with ``gene_symbols`` and ``gene_ids`` (Ensembl, else NaN);
- ``uns['ssl_st_import']``: ``format``, ``source`` and what was dropped (``dropped_controls``,
  ``dropped_blanks``, ``dropped_features``, ...).

Bad inputs raise :class:`DataError` (a ``ValueError``) naming the file, the field and the fix.
After reading, :func:`first_cells` and :func:`to_human_space` (:mod:`.harmonize`) subsample a dataset
and bring it into the models' human gene space.

Importing this package is cheap (the config schema reads :class:`ValueType`); the readers load
anndata and h5py on first use.

>>> adata = read("outs/xenium_run", format="xenium", labels="cell_types.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._lazy import lazy_attributes
from .values import COUNTS, VALUE_TYPES, Values, ValueType

if TYPE_CHECKING:
    from anndata import AnnData

    from .h5ad import read_h5ad
    from .harmonize import first_cells, to_human_space
    from .merscope import read_merscope
    from .checks import DataError, declare_values, guess_format, validate
    from .xenium import read_xenium

__getattr__, __dir__ = lazy_attributes(__name__, {
    "read_h5ad": ".h5ad", "read_merscope": ".merscope", "read_xenium": ".xenium",
    "first_cells": ".harmonize", "to_human_space": ".harmonize",
    "DataError": ".checks", "declare_values": ".checks", "guess_format": ".checks", "validate": ".checks",
})

FORMATS = ("xenium", "merscope", "h5ad")


def _misplaced(fmt: str, option: str, value: Any) -> str:
    """What to write instead of an option that ``fmt``'s reader does not take."""
    if fmt == "h5ad" and option == "labels":
        column = str(value)
        if not Path(column).exists() and "/" not in column and not column.endswith((".csv", ".gz", ".tsv")):
            return f"an h5ad file's labels are an obs column: name it with {{label_key={column}}}"
        return "an h5ad file's labels are an obs column (a labels CSV is for xenium/merscope): name it with {label_key}"
    if fmt == "h5ad" and option == "label_column":
        return ("it names the label column of a labels CSV ({labels}, xenium/merscope); an h5ad file's labels "
                "are an obs column: name it with {label_key}")
    if option == "label_key":
        return (f"a {fmt} folder's labels come from a CSV: give it with {{labels}} "
                "(and its label column with {label_column} if it is not Cluster/cell_type)")
    if option in ("values", "target_sum"):
        return f"a {fmt} output holds raw counts, the default: leave {{{option}}} out"
    return f"see which options apply to {fmt} data"


def read(path: str | Path, format: str | None = None, **options: Any) -> AnnData:  # noqa: A002 - the user-facing word
    """Read ``path`` with the reader for ``format`` (``xenium``, ``merscope``, ``h5ad``; None: guess it).

    ``options`` go to the reader (None: its default); one that the format does not take is a
    :class:`DataError` saying what to use instead (``labels`` on an h5ad file: ``label_key``), as is
    ``values`` other than counts for the instruments' outputs.
    """
    from .h5ad import read_h5ad
    from .merscope import read_merscope
    from .checks import DataError, guess_format
    from .xenium import read_xenium

    readers = {"xenium": read_xenium, "merscope": read_merscope, "h5ad": read_h5ad}
    name = format or guess_format(path)
    if name not in readers:
        problem = f"{format!r} is not supported" if format else "could not be recognised"
        raise DataError(path, "{format}", problem,
                        f"name one of {list(readers)} with {{format}} (a Xenium or MERSCOPE output folder, or an .h5ad file)")
    if name != "h5ad" and options.get("values") == "counts":
        options = {k: v for k, v in options.items() if k != "values"}  # what they hold anyway
    taken = inspect.signature(readers[name]).parameters
    for option, value in options.items():
        if option not in taken and value is not None:
            raise DataError(path, f"{{{option}}}", f"does not apply to {name} data", _misplaced(name, option, value))
    return readers[name](path, **{k: v for k, v in options.items() if k in taken})


__all__ = [
    "COUNTS",
    "FORMATS",
    "VALUE_TYPES",
    "DataError",
    "ValueType",
    "Values",
    "declare_values",
    "first_cells",
    "guess_format",
    "read",
    "read_h5ad",
    "read_merscope",
    "read_xenium",
    "to_human_space",
    "validate",
]
