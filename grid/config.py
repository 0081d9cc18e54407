"""The typed schema of ``experiments.yaml``.

Every section is a frozen dataclass; :func:`load_config` builds them with :mod:`grid.schema`, which
rejects unknown keys and wrong types with file:line and a suggestion. Cross-references (a task naming
a dataset that does not exist, ...) are checked in ``__post_init__`` and reported the same way.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from cluster.domains import DomainConfig, DomainSettings
from cluster.domains import Method as ClusterMethod
from cluster.tune import Objective, TuneSettings
from ssl_st.impute import ImputeConfig
from ssl_st.models import Architecture
from ssl_st.tasks import FineTuneConfig

from . import schema

DemoFlavour = Literal["atlas", "merscope", "xenium", "slideseq", "slideseq-mouse"]
Method = Literal["random-mask", "gp-mask", "barlow-twins", "random-init", "checkpoint"]
Mode = Literal["zero-shot", "fine-tune", "supervised", "pca"]
Stage = Literal["data", "pretrain", "cell-type", "fine-tune", "spatial-clustering", "tune-clustering"]
TaskKind = Literal["cell-type", "spatial-clustering", "tune-clustering"]
CLUSTERING_KINDS: frozenset[str] = frozenset({"spatial-clustering", "tune-clustering"})
EXPRESSION = "expression"  # the clustering input that is the genes themselves, not a model's embedding

# Modes that evaluate a model; the others are model-free baselines.
MODEL_MODES: frozenset[str] = frozenset({"zero-shot", "fine-tune"})
# Modes that train a classifier (their own resources stage: they are the heavy cells).
TRAINING_MODES: frozenset[str] = frozenset({"fine-tune", "supervised"})
PRETRAINED = ("random-mask", "gp-mask", "barlow-twins")


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f"; did you mean '{close[0]}'?" if close else f" (defined: {', '.join(options) or 'none'})"


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: the built-in simulator (``source: demo``), a vendor output folder (``xenium``,
    ``merscope``) or an h5ad file (CELLxGENE, Slide-seqV2, anything with declared columns)."""

    name: str
    source: Literal["demo", "h5ad", "xenium", "merscope", "imputed"] = "demo"
    flavour: DemoFlavour | None = None
    path: str | None = None
    n_cells: int | None = None
    seed: int = 0  # generation seed of a demo dataset (not the grid seed)
    label_key: str = "cell_type"
    domain_key: str | None = None  # obs column of ground-truth spatial domains (the study's MERSCOPE: tissue)
    labels: str | None = None  # xenium/merscope: a CSV of cell id -> label (10x: Barcode, Cluster)
    spatial_key: str | None = None  # h5ad: obsm key of the coordinates (default spatial, X_spatial)
    counts_layer: str | None = None  # h5ad: where the raw counts are (a layer, raw or X)
    gene_symbols: str | None = None  # h5ad: var column of symbols
    gene_ids: str | None = None  # h5ad: var column of Ensembl IDs
    species: Literal["human", "mouse"] | None = None  # default human; the demo's slideseq-mouse is mouse
    orthologs: str | None = None  # mouse: one-to-one ortholog table (CSV), or demo
    base: str | None = None  # imputed: the dataset whose panel is imputed
    impute: ImputeConfig | None = None  # imputed: method and its settings
    impute_reference: str | None = None  # imputed: single-cell reference (default: the config's reference)

    def __post_init__(self) -> None:
        if self.source == "demo" and self.flavour is None:
            raise ValueError(f"dataset '{self.name}': a demo dataset needs 'flavour' (atlas, merscope, xenium, slideseq, slideseq-mouse)")
        if self.source == "imputed" and (not self.base or self.impute is None):
            raise ValueError(f"dataset '{self.name}': an imputed dataset needs 'base' (a dataset) and 'impute: {{method: spage|tangram}}'")
        if self.source not in ("demo", "imputed") and not self.path:
            raise ValueError(f"dataset '{self.name}': a {self.source} dataset needs 'path'")
        if self.n_cells is not None and self.n_cells < 10:
            raise ValueError(f"dataset '{self.name}': n_cells must be at least 10")
        if self.resolved_species == "mouse" and not self.orthologs:
            raise ValueError(f"dataset '{self.name}': mouse data needs 'orthologs' (a one-to-one ortholog CSV, or demo)")

    @property
    def resolved_domain_key(self) -> str | None:
        """The demo's sections carry their cortical layer; other data declares its column, or has
        none (then clustering reports the label-free metrics only)."""
        return self.domain_key or ("layer" if self.source == "demo" and self.flavour != "atlas" else None)

    @property
    def resolved_species(self) -> str:
        return self.species or ("mouse" if self.flavour == "slideseq-mouse" else "human")


@dataclass(frozen=True)
class PretrainSpec:
    """Pretraining settings; unset ones take the method's defaults (ssl_st.models.CONFIGS)."""

    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    validation_fraction: float | None = None
    mask_rate: float | None = None  # random-mask
    program_rate: float | None = None  # gp-mask
    lambd: float | None = None  # barlow-twins, and the rest below
    negbin_intensity: float | None = None
    dropout_intensity: float | None = None
    learning_rate_weights: float | None = None
    learning_rate_biases: float | None = None
    warmup_epochs: int | None = None

    def settings(self) -> dict[str, float | int]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class ModelSpec:
    """An encoder: pretrained on a reference dataset, loaded from a checkpoint, or left at random
    weights (a baseline)."""

    name: str
    method: Method
    reference: str | None = None  # dataset to pretrain on; defaults to the config's reference
    encoder: Architecture = field(default_factory=Architecture)
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    programs: str | None = None  # gp-mask: a GMT file, or "demo" for the simulator's programs
    checkpoint: str | None = None  # checkpoint: a published or ssl-st checkpoint file
    genes: str | None = None  # checkpoint: its var.parquet (default: beside the checkpoint)
    trusted: bool = False  # checkpoint: allow unpickling objects (only for files you trust)
    seed: int = 0  # weight-initialisation and training seed (fixed per model, not per grid seed)

    def __post_init__(self) -> None:
        from ssl_st.models import CONFIGS

        if self.method == "checkpoint" and not self.checkpoint:
            raise ValueError(f"model '{self.name}': method checkpoint needs 'checkpoint: path/to/file.ckpt'")
        if self.method == "gp-mask" and not self.programs:
            raise ValueError(f"model '{self.name}': gp-mask needs 'programs' (a GMT file, or demo)")
        settings = self.pretrain.settings()
        if settings and self.method not in PRETRAINED:
            raise ValueError(f"model '{self.name}': {self.method} is not trained here; remove its 'pretrain' section")
        if self.method in PRETRAINED:
            valid = {f.name for f in fields(CONFIGS[self.method])}
            wrong = sorted(set(settings) - valid)
            if wrong:
                raise ValueError(
                    f"model '{self.name}': pretrain.{wrong[0]} does not apply to {self.method} "
                    f"(its settings: {', '.join(sorted(valid))})"
                )
            try:
                CONFIGS[self.method](**settings)
            except (TypeError, ValueError) as err:
                raise ValueError(f"model '{self.name}': {err}") from None


@dataclass(frozen=True)
class TaskSpec:
    """A task and the slice of the matrix it runs on (all datasets / models when omitted).

    ``cell-type`` cells are (dataset, mode, model, seed); ``spatial-clustering`` cells are
    (dataset, method, input, seed), where an input is ``expression`` or a model whose zero-shot
    embedding replaces the genes (the study's -RM/-BT variants); ``tune-clustering`` adds the
    objective (``label-free``, or ``oracle`` for an upper bound tuned on the labels).
    """

    name: str
    kind: TaskKind = "cell-type"
    modes: tuple[Mode, ...] = ("zero-shot", "fine-tune", "supervised", "pca")
    datasets: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None  # a subset of the grid's seeds (e.g. one for a costly tuning task)
    label_key: str | None = None  # overrides the dataset's label_key
    k: int = 5
    split: tuple[float, float, float] = (0.70, 0.15, 0.15)
    normalize: Literal["cp10k", "median"] = "cp10k"
    pca_components: int = 64
    min_coverage: float = 0.5  # a cell fails if fewer of the dataset's genes map onto the model's
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)  # fine-tune and supervised cells
    supervised_encoder: Architecture = field(default_factory=Architecture)  # network of `supervised`
    # spatial-clustering and tune-clustering
    methods: tuple[ClusterMethod, ...] = ("stagate", "graphst", "cellcharter", "gmm")
    inputs: tuple[str, ...] = (EXPRESSION,)
    n_domains: int | None = None
    clustering: DomainSettings = field(default_factory=DomainSettings)  # settings of every method
    per_method: dict[ClusterMethod, DomainSettings] = field(default_factory=dict)  # overrides, e.g. stagate: {epochs: 100}
    objectives: tuple[Objective, ...] = ("label-free",)  # tune-clustering
    tuning: TuneSettings | None = None  # tune-clustering: the search

    def __post_init__(self) -> None:
        if self.kind in CLUSTERING_KINDS:
            self._check_clustering()
        elif self.n_domains is not None or self.tuning is not None:
            raise ValueError(f"task '{self.name}': n_domains and tuning belong to spatial-clustering / tune-clustering tasks")
        if abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) <= 0:
            raise ValueError(f"task '{self.name}': split must be three positive fractions summing to 1")
        if self.k < 1:
            raise ValueError(f"task '{self.name}': k must be at least 1")
        if not self.modes:
            raise ValueError(f"task '{self.name}': list at least one mode")

    def _check_clustering(self) -> None:
        if not self.methods or not self.inputs:
            raise ValueError(f"task '{self.name}': list at least one method and one input")
        for method in self.methods:
            try:
                self.domain_config(method, EXPRESSION)
            except ValueError as err:
                raise ValueError(f"task '{self.name}': {err}") from None
        unused = sorted(set(self.per_method) - set(self.methods))
        if unused:
            raise ValueError(f"task '{self.name}': per_method names '{unused[0]}', which is not in methods {list(self.methods)}")
        if self.kind == "tune-clustering" and self.tuning is None:
            raise ValueError(f"task '{self.name}': tune-clustering needs 'tuning' with a 'space', e.g. space: {{epochs: {{low: 50, high: 500, integer: true}}}}")
        if self.kind == "spatial-clustering" and self.tuning is not None:
            raise ValueError(f"task '{self.name}': 'tuning' belongs to a tune-clustering task")

    def settings_for(self, method: str) -> DomainSettings:
        """The common settings with the method's own (``per_method``) laid over them: a field set
        there to anything but its default wins."""
        own = self.per_method.get(method)  # type: ignore[call-overload]
        if own is None:
            return self.clustering
        defaults = DomainSettings()
        changed = {f.name: getattr(own, f.name) for f in fields(own) if getattr(own, f.name) != getattr(defaults, f.name)}
        return replace(self.clustering, **changed)

    def domain_config(self, method: str, input_name: str) -> DomainConfig:
        """What one clustering cell runs; a model input is read from ``obsm['X_<model>']``."""
        use_rep = "X" if input_name == EXPRESSION else f"X_{input_name}"
        settings = asdict(self.settings_for(method))
        return DomainConfig(method=method, n_domains=self.n_domains, use_rep=use_rep, **settings)  # type: ignore[arg-type]


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
    "fine-tune": Resources(cpus=1),
    "spatial-clustering": Resources(cpus=1),
    # The task that drives a Tune run only waits; its trials ask for tuning.cpus_per_trial each. Holding
    # no CPU itself means a full cluster can never deadlock on drivers waiting for their own trials.
    "tune-clustering": Resources(cpus=0),
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
        for d in self.datasets:
            for role, ref in (("base", d.base), ("impute_reference", d.impute_reference)):
                if ref is not None and ref not in datasets:
                    raise ValueError(f"dataset '{d.name}': {role} '{ref}' is not a dataset{_suggest(ref, datasets)}")
            if d.base is not None and self.dataset(d.base).source == "imputed":
                raise ValueError(f"dataset '{d.name}': base '{d.base}' is itself imputed; impute a measured dataset")
        if self.reference not in datasets:
            raise ValueError(f"reference '{self.reference}' is not a dataset{_suggest(self.reference, datasets)}")
        for model in self.models:
            ref = model.reference or self.reference
            if ref not in datasets:
                raise ValueError(f"model '{model.name}': reference '{ref}' is not a dataset{_suggest(ref, datasets)}")
        for task in self.tasks:
            if task.seeds is not None and (not task.seeds or set(task.seeds) - set(self.seeds)):
                raise ValueError(f"task '{task.name}': seeds must be a non-empty subset of the grid's seeds {list(self.seeds)}")
            for name in task.datasets or ():
                if name not in datasets:
                    raise ValueError(f"task '{task.name}': unknown dataset '{name}'{_suggest(name, datasets)}")
            for name in task.models or ():
                if name not in models:
                    raise ValueError(f"task '{task.name}': unknown model '{name}'{_suggest(name, models)}")
            if task.kind in CLUSTERING_KINDS:
                for name in task.datasets or [d for d in datasets if d != self.reference]:
                    if "oracle" in task.objectives and task.kind == "tune-clustering" and not (
                        task.label_key or self.dataset(name).resolved_domain_key
                    ):
                        raise ValueError(
                            f"task '{task.name}': the oracle objective tunes on ground-truth domains, but dataset "
                            f"'{name}' has none; set its domain_key (an obs column) or drop oracle"
                        )
                for name in task.inputs:
                    if name != EXPRESSION and name not in models:
                        raise ValueError(
                            f"task '{task.name}': input '{name}' is neither expression nor a model{_suggest(name, models)}"
                        )
            elif any(m in MODEL_MODES for m in task.modes) and not (task.models or models):
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
    def absolute(value: str | None) -> str | None:
        if value is None or value == "demo" or Path(value).is_absolute():
            return value
        return str((base / value).resolve())

    datasets = tuple(
        replace(d, path=absolute(d.path), labels=absolute(d.labels), orthologs=absolute(d.orthologs))
        for d in config.datasets
    )
    models = tuple(
        replace(m, programs=absolute(m.programs), checkpoint=absolute(m.checkpoint), genes=absolute(m.genes))
        for m in config.models
    )
    files = [
        (f"datasets[{i}].{key}", getattr(d, key), f"dataset '{d.name}'")
        for i, d in enumerate(datasets)
        for key in ("path", "labels", "orthologs")
    ]
    for i, m in enumerate(models):
        files += [(f"models[{i}].{key}", getattr(m, key), f"model '{m.name}'") for key in ("programs", "checkpoint", "genes")]
    missing = [
        schema.Problem(str(path), 0, 0, where, f"{value} does not exist; fix the path or remove {owner}")
        for where, value, owner in files
        if value and value != "demo" and not Path(value).exists()
    ]
    if missing:
        raise schema.ConfigError(str(path), missing)
    return replace(config, datasets=datasets, models=models)
