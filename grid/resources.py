"""What one Ray task of a stage asks for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resources:
    """Declared per stage in ``resources:``; each stage has a default (its kind's, or the builders')."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None
