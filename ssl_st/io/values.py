"""What a dataset's expression values are: raw counts, normalised, or log-normalised.

Readers and commands take the type as declared by the user (``values=`` in Python, ``--values`` on
the command line, ``values:`` in experiments.yaml) and record it in the AnnData, scverse style, as
``uns['ssl_st'] = {'values': ..., 'target_sum': ...}``, so a file imported once is read right by every
later command. :func:`ssl_st.pp.log_normalized` turns any type into the log-normalised values the
models and the domain methods read.

- ``counts`` (the default): raw integer counts, in ``layers['counts']`` (else ``X``).
- ``normalized``: each cell scaled to some sum, not logged (CP10k, CPM, a lab's pseudo-counts), in ``X``.
- ``log-normalized``: ``log1p`` of such values (scanpy's ``normalize_total`` + ``log1p``), in ``X``.

``target_sum`` is the sum each cell was scaled to, when known. Only the proportions within a cell
survive normalisation, so normalised inputs are rescaled per cell before ``log1p``; the result does
not depend on the user's scale. This module imports nothing heavy: the config schema reads it.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Values = Literal["counts", "normalized", "log-normalized"]
VALUE_TYPES: tuple[str, ...] = typing.get_args(Values)
UNS_KEY = "ssl_st"  # uns[UNS_KEY]['values'], ['target_sum']; ssl_st.tl.embed keeps its coverage there too


@dataclass(frozen=True)
class ValueType:
    """A declared value type; ``target_sum``: what each cell was scaled to (normalised types only)."""

    kind: Values = "counts"
    target_sum: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in VALUE_TYPES:
            raise ValueError(f"values must be one of {', '.join(VALUE_TYPES)}; got {self.kind!r}")
        if self.target_sum is not None:
            if self.kind == "counts":
                raise ValueError("counts have no target sum; a target sum describes normalized or log-normalized values")
            if not self.target_sum > 0:
                raise ValueError(f"target_sum must be positive; got {self.target_sum!r}")

    @property
    def is_counts(self) -> bool:
        return self.kind == "counts"

    def as_uns(self) -> dict[str, Any]:
        """The record kept in ``uns['ssl_st']`` (h5ad stores no None: an unknown target sum is left out)."""
        return {"values": self.kind} | ({"target_sum": float(self.target_sum)} if self.target_sum else {})

    @classmethod
    def recorded(cls, uns: Mapping[str, Any]) -> ValueType | None:
        """The type an AnnData's ``uns`` records, or None when it records none."""
        record = uns.get(UNS_KEY)
        if not isinstance(record, Mapping) or "values" not in record:
            return None
        target = record.get("target_sum")
        return cls(str(record["values"]), None if target is None else float(target))  # type: ignore[arg-type]

    def __str__(self) -> str:
        return self.kind + (f" (target sum {self.target_sum:g})" if self.target_sum else "")


COUNTS = ValueType()
