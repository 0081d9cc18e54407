"""The typed schema of ``experiments.yaml``.

Every section is a frozen dataclass; :func:`load_config` builds them with :mod:`grid.schema`, which
rejects unknown keys and wrong types with file:line and a suggestion. Cross-references (a task naming
a dataset that does not exist, ...) are checked in ``__post_init__`` and reported the same way.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from . import schema

DemoFlavour = Literal["atlas", "merscope", "xenium", "slideseq", "slideseq-mouse"]
Method = Literal["random-mask", "random-init"]
Mode = Literal["zero-shot", "pca"]
Stage = Literal["data", "pretrain", "cell-type"]

# Modes that evaluate a model; the others are model-free baselines.
MODEL_MODES: frozenset[str] = frozenset({"zero-shot"})


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f"; did you mean '{close[0]}'?" if close else f" (defined: {', '.join(options) or 'none'})"


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: the built-in simulator (``source: demo``) or an h5ad file on shared storage."""

    name: str
    source: Literal["demo", "h5ad"] = "demo"
    flavour: DemoFlavour | None = None
    path: str | None = None
    n_cells: int | None = None
    seed: int = 0  # generation seed of a demo dataset (not the grid seed)
    label_key: str = "cell_type"

    def __post_init__(self) -> None:
        if self.source == "demo" and self.flavour is None:
            raise ValueError(f"dataset '{self.name}': a demo dataset needs 'flavour' (atlas, merscope, xenium, slideseq, slideseq-mouse)")
        if self.source == "h5ad" and not self.path:
            raise ValueError(f"dataset '{self.name}': an h5ad dataset needs 'path'")
        if self.n_cells is not None and self.n_cells < 10:
            raise ValueError(f"dataset '{self.name}': n_cells must be at least 10")


@dataclass(frozen=True)
class EncoderSpec:
    """The upstream MLP encoder; the published models use units 512-512-256-256-64."""

    units: tuple[int, ...] = (512, 512, 256, 256, 64)
    dropout: float = 0.1
    activation: Literal["selu", "relu"] = "selu"
    output_activation: Literal["identity", "sigmoid", "softplus"] = "identity"

    def __post_init__(self) -> None:
        if len(self.units) < 2 or min(self.units) < 1:
            raise ValueError("encoder units need at least two positive widths, e.g. [256, 64]")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("encoder dropout must be in [0, 1)")


@dataclass(frozen=True)
class PretrainSpec:
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    mask_rate: float = 0.5
    validation_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("pretrain epochs and batch_size must be positive")
        if not 0.0 < self.mask_rate < 1.0:
            raise ValueError("pretrain mask_rate must be in (0, 1)")


@dataclass(frozen=True)
class ModelSpec:
    """An encoder: pretrained on a reference dataset, or left at random weights (a baseline)."""

    name: str
    method: Method
    reference: str | None = None  # dataset to pretrain on; defaults to the config's reference
    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    seed: int = 0  # weight-initialisation and training seed (fixed per model, not per grid seed)


@dataclass(frozen=True)
class TaskSpec:
    """A task and the slice of the matrix it runs on (all datasets / models when omitted)."""

    name: str
    kind: Literal["cell-type"] = "cell-type"
    modes: tuple[Mode, ...] = ("zero-shot", "pca")
    datasets: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    label_key: str | None = None  # overrides the dataset's label_key
    k: int = 5
    split: tuple[float, float, float] = (0.70, 0.15, 0.15)
    normalize: Literal["cp10k", "median"] = "cp10k"
    pca_components: int = 64

    def __post_init__(self) -> None:
        if abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) <= 0:
            raise ValueError(f"task '{self.name}': split must be three positive fractions summing to 1")
        if self.k < 1:
            raise ValueError(f"task '{self.name}': k must be at least 1")
        if not self.modes:
            raise ValueError(f"task '{self.name}': list at least one mode")


@dataclass(frozen=True)
class Resources:
    """What one task of a stage asks Ray for."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None


DEFAULT_RESOURCES: dict[str, Resources] = {
    "data": Resources(cpus=1),
    "pretrain": Resources(cpus=1),
    "cell-type": Resources(cpus=1),
}


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    seeds: tuple[int, ...]
    reference: str  # dataset whose genes define the model vocabulary (scTab's role)
    datasets: tuple[DatasetSpec, ...]
    models: tuple[ModelSpec, ...]
    tasks: tuple[TaskSpec, ...]
    resources: dict[Stage, Resources] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("list at least one seed, e.g. seeds: [42]")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be unique")
        for kind, names in (
            ("dataset", [d.name for d in self.datasets]),
            ("model", [m.name for m in self.models]),
            ("task", [t.name for t in self.tasks]),
        ):
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise ValueError(f"{kind} names must be unique; repeated: {', '.join(duplicated)}")
        datasets = [d.name for d in self.datasets]
        models = [m.name for m in self.models]
        if self.reference not in datasets:
            raise ValueError(f"reference '{self.reference}' is not a dataset{_suggest(self.reference, datasets)}")
        for model in self.models:
            ref = model.reference or self.reference
            if ref not in datasets:
                raise ValueError(f"model '{model.name}': reference '{ref}' is not a dataset{_suggest(ref, datasets)}")
        for task in self.tasks:
            for name in task.datasets or ():
                if name not in datasets:
                    raise ValueError(f"task '{task.name}': unknown dataset '{name}'{_suggest(name, datasets)}")
            for name in task.models or ():
                if name not in models:
                    raise ValueError(f"task '{task.name}': unknown model '{name}'{_suggest(name, models)}")
            if any(m in MODEL_MODES for m in task.modes) and not (task.models or models):
                raise ValueError(f"task '{task.name}': mode zero-shot needs at least one model")

    def dataset(self, name: str) -> DatasetSpec:
        return next(d for d in self.datasets if d.name == name)

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)

    def resources_for(self, stage: str) -> Resources:
        return self.resources.get(stage, DEFAULT_RESOURCES[stage])  # type: ignore[arg-type]


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiments file; raises :class:`grid.schema.ConfigError`.

    Relative dataset paths are taken relative to the file, so a study folder can move as a whole;
    files that do not exist are reported here, before any work is scheduled.
    """
    config = schema.load(ExperimentConfig, path)
    base = Path(path).resolve().parent
    datasets = tuple(
        replace(d, path=str((base / d.path).resolve())) if d.path and not Path(d.path).is_absolute() else d
        for d in config.datasets
    )
    missing = [
        schema.Problem(str(path), 0, 0, f"datasets[{i}].path", f"{d.path} does not exist; fix the path or remove dataset '{d.name}'")
        for i, d in enumerate(datasets)
        if d.path and not Path(d.path).exists()
    ]
    if missing:
        raise schema.ConfigError(str(path), missing)
    return replace(config, datasets=datasets)
