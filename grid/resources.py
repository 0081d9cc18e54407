"""What one Ray task of a stage asks for."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import FieldError


@dataclass(frozen=True)
class Resources:
    """Declared per stage in ``resources:``; each stage has a default (its kind's, or the builders')."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None

    def __post_init__(self) -> None:
        # Ray rejects a negative quantity only when the task is submitted, mid-run; say so at the line.
        for key in ("cpus", "gpus"):
            if getattr(self, key) < 0:
                raise FieldError(key, f"{key} cannot be negative (got {getattr(self, key):g}); use 0 for none")
        if self.memory_gb is not None and self.memory_gb <= 0:
            raise FieldError("memory_gb", f"memory_gb must be positive (got {self.memory_gb:g}); remove it to ask for no memory")

    def describe(self) -> str:
        parts = [f"cpus: {self.cpus:g}"]
        if self.gpus:
            parts.append(f"gpus: {self.gpus:g}")
        if self.memory_gb:
            parts.append(f"memory_gb: {self.memory_gb:g}")
        return "{" + ", ".join(parts) + "}"
