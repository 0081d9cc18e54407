"""The typed schema of ``experiments.yaml``.

Every section is a frozen dataclass; :func:`load_config` builds them with :mod:`grid.schema`, which
rejects unknown keys and wrong types with file:line and a suggestion. A task's class is chosen by its
``kind`` from :data:`grid.tasks.TASK_KINDS`, and a model's ``pretrain`` settings by its ``method``
from :data:`ssl_st.models.PRETRAINING`: each kind and method declares its own settings, once.
Cross-references (a task naming a dataset that does not exist, ...) are checked in
``__post_init__`` and reported the same way.

Reading a config imports no torch, Ray, sklearn or torch-geometric: the science is imported where
it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from ssl_st.impute import ImputeConfig
from ssl_st.io.values import Values
from ssl_st.models import PRETRAINING, Architecture

from . import schema
from .pulled import Pulled
from .schema import FieldError, suggest
from .resources import Resources
from .tasks import TASK_KINDS, TaskSpec

DemoFlavour = Literal["atlas", "merscope", "xenium", "slideseq", "slideseq-mouse"]
# Encoders that are not pretrained here: random weights (a baseline) and imported checkpoints.
UNTRAINED_METHODS = ("random-init", "checkpoint")
# "embed": one encoder actor of the Ray Data pipeline that embeds a sharded dataset; "pretrain": one
# training process (a Ray Train worker, with workers: N)
ARTIFACT_STAGES: dict[str, Resources] = {"data": Resources(cpus=1), "pretrain": Resources(cpus=1),
                                         "embed": Resources(cpus=1)}
SHARDED_SOURCES = ("shards", "merlin")
# The simulator holds a dense cells x genes matrix (3,000 genes for the atlas): 200,000 cells are
# ~2.4 GB of float32 before normalisation copies; beyond that a demo is a typo, not a study.
DEMO_MAX_CELLS = 200_000


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: the built-in simulator (``source: demo``), a vendor output folder (``xenium``,
    ``merscope``), an h5ad file (CELLxGENE, Slide-seqV2, anything with declared columns), or cells on
    disk as Parquet shards, streamed and never held whole (``shards``: ``ssl-st data shard``'s
    directory; ``merlin``: one ``split`` of scTab's Merlin store). An h5ad file and the ortholog table
    may be one of the study's files, named as ``ssl-st data pull`` names it (``path: {pull:
    merscope-human-neocortex}``, :mod:`grid.pulled`)."""

    name: str
    source: Literal["demo", "h5ad", "xenium", "merscope", "imputed", "shards", "merlin"] = "demo"
    flavour: DemoFlavour | None = None
    path: str | Pulled | None = None
    n_cells: int | None = None
    seed: int = 0  # generation seed of a demo dataset (not the grid seed)
    label_key: str = "cell_type"
    domain_key: str | None = None  # obs column of ground-truth spatial domains (the study's MERSCOPE: tissue)
    labels: str | None = None  # xenium/merscope: a CSV of cell id -> label (10x: Barcode, Cluster)
    label_column: str | None = None  # xenium/merscope: the labels CSV's label column (default: found by name)
    spatial_key: str | None = None  # h5ad: obsm key of the coordinates (default spatial, X_spatial)
    counts_layer: str | None = None  # h5ad: where the expression is (a layer, raw or X; default: the counts)
    gene_symbols: str | None = None  # h5ad: var column of symbols
    gene_ids: str | None = None  # h5ad: var column of Ensembl IDs
    species: Literal["human", "mouse"] | None = None  # default human; the demo's slideseq-mouse is mouse
    orthologs: str | Pulled | None = None  # mouse: one-to-one ortholog table (CSV), or demo
    base: str | None = None  # imputed: the dataset whose panel is imputed
    impute: ImputeConfig | None = None  # imputed: method and its settings
    impute_reference: str | None = None  # imputed: single-cell reference (default: the config's reference)
    # h5ad: what the expression is (ssl_st.io.values; default: what the file records, else counts), and
    # the sum each cell was scaled to, if known. Unset, neither is part of the dataset's key.
    values: Values | None = None
    target_sum: float | None = None
    split: str | None = None  # merlin: the split to read (train, val, test)

    def __post_init__(self) -> None:
        self._check_pulled()
        self._check_sharded()
        if self.source == "demo" and self.flavour is None:
            raise ValueError(f"dataset '{self.name}': a demo dataset needs 'flavour' (atlas, merscope, xenium, slideseq, slideseq-mouse)")
        if self.source == "imputed" and (not self.base or self.impute is None):
            raise ValueError(f"dataset '{self.name}': an imputed dataset needs 'base' (a dataset) and 'impute: {{method: spage|tangram}}'")
        if self.source not in ("demo", "imputed") and not self.path:
            raise ValueError(f"dataset '{self.name}': a {self.source} dataset needs 'path'")
        if self.n_cells is not None and self.n_cells < 10:
            raise ValueError(f"dataset '{self.name}': n_cells must be at least 10")
        if self.source == "demo" and self.n_cells is not None and self.n_cells > DEMO_MAX_CELLS:
            raise FieldError("n_cells", f"dataset '{self.name}': a demo dataset has at most {DEMO_MAX_CELLS:,} cells "
                                    f"(got {self.n_cells:,}); the simulator builds it in memory on one worker")
        if self.resolved_species == "mouse" and not self.orthologs:
            raise ValueError(f"dataset '{self.name}': mouse data needs 'orthologs' (a one-to-one ortholog CSV, or demo)")
        self._check_labels()
        self._check_values()

    def _check_pulled(self) -> None:
        """A pulled file must be what its field reads: the study's h5ad files, an ortholog table."""
        owner = f"dataset '{self.name}'"
        if isinstance(self.path, Pulled):
            self.path.expect("path", (".h5ad",), owner, "an h5ad file")
            if self.source != "h5ad":
                raise FieldError("source" if self.source != "demo" else "path",
                                 f"{owner}: '{self.path.pull}' is an h5ad file; set source: h5ad")
        if isinstance(self.orthologs, Pulled):
            self.orthologs.expect("orthologs", (".csv", ".tsv"), owner, "an ortholog table (CSV)")

    @property
    def sharded(self) -> bool:
        """Streamed from Parquet shards rather than read whole into memory."""
        return self.source in SHARDED_SOURCES

    def _check_sharded(self) -> None:
        if self.source == "merlin" and not self.split:
            raise FieldError("split", f"dataset '{self.name}': a Merlin store holds several splits; name one with "
                                      "split: train, val or test")
        if self.split is not None and self.source != "merlin":
            raise FieldError("split", f"dataset '{self.name}': split names a split of a Merlin store (source: merlin); "
                                      "remove it")
        if not self.sharded:
            return
        unsupported = [k for k in ("n_cells", "labels", "spatial_key", "counts_layer", "gene_symbols", "gene_ids",
                                   "orthologs", "values", "target_sum") if getattr(self, k) is not None]
        if self.species == "mouse":
            unsupported.append("species")
        if unsupported:
            key = unsupported[0]
            raise FieldError(key, f"dataset '{self.name}': {key} does not apply to a {self.source} dataset (its "
                                  "manifest records genes, values and columns); set it when the shards are written "
                                  "(ssl-st data shard) and remove it here")

    def _check_labels(self) -> None:
        """``labels`` is a CSV for the instruments' outputs; everywhere else labels are an obs column."""
        if self.labels is not None and self.source not in ("xenium", "merscope"):
            name = Path(self.labels).name
            if self.source == "h5ad" and not Path(self.labels).exists() and not name.endswith((".csv", ".gz", ".tsv")):
                fix = f"write label_key: {name}"
            else:
                fix = "name its obs column with label_key: (labels: is a CSV for xenium/merscope datasets)"
            article = "a" if self.source == "demo" else "an"
            raise FieldError("labels", f"dataset '{self.name}': {article} {self.source} dataset's labels are an obs "
                                       f"column, not a file; {fix}")
        if self.label_column is not None and self.labels is None:
            raise FieldError("label_column", f"dataset '{self.name}': label_column names the label column of a labels "
                                             "CSV; give the CSV with labels:")
        if self.labels is not None and self.label_key != "cell_type":
            raise FieldError("label_key", f"dataset '{self.name}': the labels CSV's labels are read into obs['cell_type']; "
                                          "drop label_key (name the CSV's label column with label_column:)")

    def _check_values(self) -> None:
        """``values`` declares an h5ad file's expression; the other sources hold counts."""
        if self.values not in (None, "counts") and self.source != "h5ad":
            raise FieldError("values", f"dataset '{self.name}': {self.source} data holds counts; values: "
                                       f"{self.values} applies to h5ad files")
        if self.target_sum is not None and self.values in (None, "counts"):
            why = "counts have no target sum" if self.values == "counts" else "a target sum describes normalised values"
            raise FieldError("target_sum", f"dataset '{self.name}': {why}; declare values: normalized or "
                                           "values: log-normalized with it")
        if self.target_sum is not None and not self.target_sum > 0:
            raise FieldError("target_sum", f"dataset '{self.name}': target_sum must be positive (got {self.target_sum:g})")

    @property
    def resolved_domain_key(self) -> str | None:
        """The demo's sections carry their cortical layer; other data declares its column, or has
        none (then clustering reports the label-free metrics only)."""
        return self.domain_key or ("layer" if self.source == "demo" and self.flavour != "atlas" else None)

    @property
    def resolved_species(self) -> str:
        return self.species or ("mouse" if self.flavour == "slideseq-mouse" else "human")


@dataclass(frozen=True)
class ModelSpec:
    """An encoder: pretrained on a reference dataset, loaded from a checkpoint, or left at random
    weights (a baseline)."""

    name: str
    method: str  # a pretraining method (ssl_st.models.PRETRAINING), random-init or checkpoint
    reference: str | None = None  # dataset to pretrain on; defaults to the config's reference
    encoder: Architecture = field(default_factory=Architecture)
    # the method's own settings class; unset ones take its defaults
    pretrain: Annotated[Any, schema.ChosenBy("method", PRETRAINING)] = None
    programs: str | None = None  # gp-mask: a GMT file, or "demo" for the simulator's programs
    # checkpoint: a published or ssl-st checkpoint file, or {pull: RandomMask} (as `ssl-st models pull` names it)
    checkpoint: str | Pulled | None = None
    # checkpoint: its gene order (default: <checkpoint>.var.parquet, else var.parquet beside it), or {pull: var}
    genes: str | Pulled | None = None
    trusted: bool = False  # checkpoint: allow unpickling objects (only for files you trust)
    seed: int = 0  # weight-initialisation and training seed (fixed per model, not per grid seed)
    # data-parallel pretraining on this many Ray Train workers, each with resources.pretrain (1: in the
    # builder's own process, as before); the weights of 1 and of N workers differ only by float rounding
    workers: int = 1

    def __post_init__(self) -> None:
        if self.method not in PRETRAINING and self.method not in UNTRAINED_METHODS:
            methods = [*PRETRAINING.names(), *UNTRAINED_METHODS]
            raise ValueError(f"model '{self.name}': unknown method '{self.method}'{suggest(self.method, methods)}")
        if self.method == "checkpoint" and not self.checkpoint:
            raise ValueError(f"model '{self.name}': method checkpoint needs 'checkpoint: path/to/file.ckpt'")
        owner = f"model '{self.name}'"
        if isinstance(self.checkpoint, Pulled):
            self.checkpoint.expect("checkpoint", (".ckpt",), owner, "a checkpoint (.ckpt)")
        if isinstance(self.genes, Pulled):
            self.genes.expect("genes", (".parquet",), owner, "a gene order (var.parquet)")
        if self.workers < 1:
            raise FieldError("workers", f"model '{self.name}': workers must be at least 1 (got {self.workers})")
        if self.workers > 1 and self.method not in PRETRAINING:
            raise FieldError("workers", f"model '{self.name}': {self.method} is not trained here; remove workers")
        if self.pretrain is not None and self.method not in PRETRAINING:
            raise ValueError(f"model '{self.name}': {self.method} is not trained here; remove its 'pretrain' section")
        training = self.training
        if getattr(training, "needs_programs", False) and not self.programs:
            raise ValueError(f"model '{self.name}': {self.method} needs 'programs' (a GMT file, or demo)")

    @property
    def training(self) -> Any:
        """The typed pretraining settings (the method's defaults without a ``pretrain`` section);
        ``None`` for encoders that are not trained here."""
        if self.method not in PRETRAINING:
            return None
        return self.pretrain if self.pretrain is not None else PRETRAINING[self.method]()


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    seeds: tuple[int, ...]
    reference: str  # dataset whose genes define the model vocabulary (scTab's role)
    datasets: tuple[DatasetSpec, ...]
    models: tuple[ModelSpec, ...]
    tasks: tuple[Annotated[TaskSpec, schema.Tagged("kind", TASK_KINDS, default="cell-type")], ...]
    resources: dict[str, Resources] = field(default_factory=dict)  # stage -> what one of its tasks asks for
    retries: int = 1  # reruns of a task whose worker died (crash, kill, out of memory); errors are not retried
    # each rerun of a cell asks for this many times the memory of the attempt before (with memory_gb declared)
    retry_memory_factor: float = 1.0

    def __post_init__(self) -> None:
        if not self.seeds:
            raise FieldError("seeds", "list at least one seed, e.g. seeds: [42]")
        if self.retries < 0:
            raise FieldError("retries", f"retries must be 0 or more (got {self.retries}); 0 runs each task once")
        if self.retry_memory_factor < 1:
            raise FieldError("retry_memory_factor", f"retry_memory_factor must be 1 or more (got {self.retry_memory_factor:g}); "
                             "1 retries with the same memory, 2 doubles it per attempt")
        if len(set(self.seeds)) != len(self.seeds):
            raise FieldError("seeds", "seeds must be unique")
        for kind, names in (
            ("datasets", [d.name for d in self.datasets]),
            ("models", [m.name for m in self.models]),
            ("tasks", [t.name for t in self.tasks]),
        ):
            repeated = [i for i, n in enumerate(names) if n in names[:i]]
            if repeated:
                raise FieldError(f"{kind}[{repeated[0]}].name", f"{kind[:-1]} names must be unique; "
                                 f"'{names[repeated[0]]}' is repeated")
        datasets = [d.name for d in self.datasets]
        models = [m.name for m in self.models]
        for i, d in enumerate(self.datasets):
            for role, ref in (("base", d.base), ("impute_reference", d.impute_reference)):
                if ref is not None and ref not in datasets:
                    raise FieldError(f"datasets[{i}].{role}", f"dataset '{d.name}': {role} '{ref}' is not a dataset{suggest(ref, datasets)}")
            if d.base is not None and self.dataset(d.base).source == "imputed":
                raise FieldError(f"datasets[{i}].base", f"dataset '{d.name}': base '{d.base}' is itself imputed; impute a measured dataset")
            for role, ref in (("base", d.base), ("impute_reference", d.impute_reference or (d.base and self.reference))):
                if ref is not None and self.dataset(ref).sharded:
                    raise FieldError(f"datasets[{i}].{role}", f"dataset '{d.name}': imputation holds both datasets in "
                                     f"memory, and {role} '{ref}' is {self.dataset(ref).source} (streamed); impute from "
                                     "an h5ad or instrument dataset")
            for role, ref in (("base", d.base), ("impute_reference", d.impute_reference or (d.base and self.reference))):
                if ref is not None and self.dataset(ref).values not in (None, "counts"):
                    raise FieldError(f"datasets[{i}].{role}", f"dataset '{d.name}': imputation needs counts, but {role} "
                                     f"'{ref}' holds values: {self.dataset(ref).values}; impute from datasets of counts")
        if self.reference not in datasets:
            raise FieldError("reference", f"reference '{self.reference}' is not a dataset{suggest(self.reference, datasets)}")
        for i, model in enumerate(self.models):
            ref = model.reference or self.reference
            if ref not in datasets:
                raise FieldError(f"models[{i}].reference", f"model '{model.name}': reference '{ref}' is not a dataset{suggest(ref, datasets)}")
        for i, task in enumerate(self.tasks):
            if not self.task_datasets(task):
                raise FieldError(f"tasks[{i}]", f"task '{task.name}' matches no dataset: without datasets: it runs on every "
                                 f"dataset but the reference '{self.reference}', and there is none; list its datasets "
                                 "or add one")
            if task.seeds is not None and (not task.seeds or set(task.seeds) - set(self.seeds)):
                raise FieldError(f"tasks[{i}].seeds", f"task '{task.name}': seeds must be a non-empty subset of the grid's seeds {list(self.seeds)}")
            for j, name in enumerate(task.datasets or ()):
                if name not in datasets:
                    raise FieldError(f"tasks[{i}].datasets[{j}]", f"task '{task.name}': unknown dataset '{name}'{suggest(name, datasets)}")
            for path, name in task.model_refs():
                if name not in models:
                    raise FieldError(f"tasks[{i}].{path}", f"task '{task.name}': unknown model '{name}'{suggest(name, models)}")
            try:
                task.check(self)
            except FieldError as err:
                raise err.within(f"tasks[{i}]") from None
            except ValueError as err:
                raise FieldError(f"tasks[{i}]", str(err)) from None
        stages = self.stages()
        for stage in self.resources:
            if stage not in stages:
                raise FieldError(f"resources.{stage}", f"resources: unknown stage '{stage}'{suggest(stage, list(stages))}")

    def dataset(self, name: str) -> DatasetSpec:
        return next(d for d in self.datasets if d.name == name)

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)

    def task_datasets(self, task: TaskSpec) -> tuple[str, ...]:
        """The datasets a task runs on: its own list, or every dataset but the reference."""
        return task.datasets or tuple(d.name for d in self.datasets if d.name != self.reference)

    def stages(self) -> dict[str, Resources]:
        """Every stage that can be given resources, with its default: the artifact builders', then
        each task kind's."""
        stages = dict(ARTIFACT_STAGES)
        for kind in TASK_KINDS:
            stages.update(TASK_KINDS[kind].stages)
        return stages

    def resources_for(self, stage: str) -> Resources:
        return self.resources.get(stage) or self.stages()[stage]


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiments file; raises :class:`grid.schema.ConfigError`.

    Relative dataset paths are taken relative to the file, so a study folder can move as a whole;
    files that do not exist are reported here, before any work is scheduled. Pulled files
    (``{pull: NAME}``, :mod:`grid.pulled`) are not looked for: a config that names them is valid on a
    machine that has not downloaded them yet (``ssl-st plan`` lists what it has to fetch).
    """
    config = schema.load(ExperimentConfig, path)
    base = Path(path).resolve().parent
    def absolute(value: Any) -> Any:
        if not isinstance(value, str) or value == "demo" or Path(value).is_absolute():
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
        schema.Problem(str(path), *field_position(path, where), where, f"{value} does not exist; fix the path or remove {owner}")
        for where, value, owner in files
        if isinstance(value, str) and value != "demo" and not Path(value).exists()
    ]
    if missing:
        raise schema.ConfigError(str(path), missing)
    return replace(config, datasets=datasets, models=models)


def field_position(path: str | Path, field: str) -> tuple[int, int]:
    """The 1-based line and column of a dotted field (``datasets[2].label_key``) in a config file, or
    of the deepest part of it that is written there (a default: its record); (0, 0) if unreadable."""
    import yaml

    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return 0, 0
    if root is None:
        return 0, 0
    mark = schema._locate(root, field).start_mark  # the node the schema reports its own errors at
    return mark.line + 1, mark.column + 1
