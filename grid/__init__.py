"""The experiment grid: ``ssl-st plan | run | status | query`` (:mod:`grid.cli`) and its result store.

From Python, the results of a run as a DataFrame or a DuckDB relation::

    import grid
    grid.results("results", view="summary")  # or best, failures; or sql="SELECT ... FROM results"

Importing ``grid`` loads nothing else: ``results`` and ``results_relation`` are looked up on first
use (:mod:`grid.query`), so a Ray worker or a command that plans stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .query import ResultsError, results, results_relation

__all__ = ["ResultsError", "results", "results_relation"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import query

        return getattr(query, name)
    raise AttributeError(f"module 'grid' has no attribute {name!r}")
