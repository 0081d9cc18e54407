"""What one Ray task of a stage asks for."""

from __future__ import annotations

from dataclasses import dataclass, field

from .schema import FieldError

RAY_BUILTIN = ("CPU", "GPU", "memory", "object_store_memory")


@dataclass(frozen=True)
class Resources:
    """Declared per stage in ``resources:``; each stage has a default (its kind's, or the builders')."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None
    # Ray custom resources a node declares (ray start --resources='{"a100": 4}'), e.g. {a100: 0.5}
    custom: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Ray rejects a negative quantity only when the task is submitted, mid-run; say so at the line.
        for key in ("cpus", "gpus"):
            if getattr(self, key) < 0:
                raise FieldError(key, f"{key} cannot be negative (got {getattr(self, key):g}); use 0 for none")
        if self.memory_gb is not None and self.memory_gb <= 0:
            raise FieldError("memory_gb", f"memory_gb must be positive (got {self.memory_gb:g}); remove it to ask for no memory")
        for name, amount in self.custom.items():
            if name in RAY_BUILTIN:
                raise FieldError(f"custom.{name}", f"{name} is not a custom resource; use cpus, gpus or memory_gb")
            if amount <= 0:
                raise FieldError(f"custom.{name}", f"custom resource {name} must be positive (got {amount:g}); remove it to ask for none")

    def request(self) -> dict[str, float]:
        """What Ray is asked for, in its own names (memory in bytes)."""
        return {"CPU": self.cpus, "GPU": self.gpus, "memory": (self.memory_gb or 0) * 1024**3, **self.custom}

    def describe(self) -> str:
        parts = [f"cpus: {self.cpus:g}"]
        if self.gpus:
            parts.append(f"gpus: {self.gpus:g}")
        if self.memory_gb:
            parts.append(f"memory_gb: {self.memory_gb:g}")
        if self.custom:
            parts.append("custom: {" + ", ".join(f"{k}: {v:g}" for k, v in sorted(self.custom.items())) + "}")
        return "{" + ", ".join(parts) + "}"
