"""The ``spatial-clustering`` and ``tune-clustering`` tasks: cut a section into spatial domains.

Cells are (dataset, method, input, seed), and ``tune-clustering`` adds the objective. An input is
``expression`` or a model, whose zero-shot embedding of the section replaces the genes (the study's
STAGATE-RM / GraphST-RM). A method is any class registered in :data:`cluster.DOMAIN_METHODS`; its
settings are the class defaults, then ``clustering`` (given once for every method that has the
setting), then ``per_method`` (given for one method).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from cluster import DOMAIN_METHODS, DomainConfig
from cluster.tune import TuneObjective, TuneSettings
from ssl_st.tl import embedding_key

from .. import schema
from ..resources import Resources
from .base import TASK_KINDS, CellInputs, CellOutput, CellSpec, Row, TaskSpec, refuse_sharded

if TYPE_CHECKING:
    from ..config import ExperimentConfig
    from ..plan import Cell, Expansion

EXPRESSION = "expression"  # the clustering input that is the genes themselves, not a model's embedding
MethodName = Annotated[str, schema.Name(DOMAIN_METHODS)]


@dataclass(frozen=True)
class DomainCell(CellSpec):
    """One domain map: the method's settings and input, the label column scored against (None: the
    label-free metrics only) and, for a model input, how the section is embedded."""

    stage: ClassVar[str] = "spatial-clustering"

    domains: DomainConfig
    labels: str | None
    target_sum: float | Literal["median"] | None = None  # model input: normalisation before embedding
    min_coverage: float | None = None  # model input: fail below this gene coverage

    def run(self, cell: Cell, inputs: CellInputs) -> CellOutput:
        import anndata as ad

        from cluster import find_domains, output_key, score_domains

        from .. import details

        adata = ad.read_h5ad(inputs.data)
        rows: list[Row] = self._embed(adata, inputs) if inputs.model else []
        if self.labels is not None and self.labels not in adata.obs:
            raise KeyError(
                f"domain label column '{self.labels}' not found in obs (columns: {', '.join(map(str, adata.obs.columns))}); "
                "set domain_key on the dataset or label_key on the task (a demo section built before simulator v2 "
                "calls it 'domain': rebuild it with ssl-st run --force)"
            )
        key = output_key(self.labels)
        config, info = self._settings(adata, cell, inputs)
        result = find_domains(adata, config, seed=cell.seed, device=inputs.device, key_added=key)
        metrics = score_domains(adata, key=key, labels=self.labels, library_key=config.library_key)
        rows += [(name, value, "metric") for name, value in metrics.items() if name != "n_domains"]
        rows += [(name, float(value), "info") for name, value in {**result.info, **info}.items()]
        out = {}
        if "spatial" in adata.obsm:  # the map the report draws beside the truth
            truth = adata.obs[self.labels] if self.labels is not None else None
            out[details.DOMAINS] = details.domains(adata.obs_names, adata.obsm["spatial"], adata.obs[key], truth)
        return CellOutput(rows, out)

    def _settings(self, adata: Any, cell: Cell, inputs: CellInputs) -> tuple[DomainConfig, dict[str, float]]:
        """The settings to run: this cell's own (a tuned cell searches them first)."""
        return self.domains, {}

    def _embed(self, adata: Any, inputs: CellInputs) -> list[Row]:
        from ssl_st.models import SSLModel
        from ssl_st.tl import embed

        coverage = embed(adata, SSLModel.load(inputs.model), key=self.domains.use_rep, target_sum=self.target_sum,
                         min_coverage=self.min_coverage, device=inputs.device)
        return [("genes_mapped", float(coverage.mapped_genes), "info"),
                ("vocabulary_coverage", coverage.vocabulary_fraction, "info")]


@dataclass(frozen=True)
class TunedDomainCell(DomainCell):
    """A domain map whose settings are searched first (Ray Tune + Optuna), then rerun with the best
    so that the reported domains are reproducible from the record."""

    stage: ClassVar[str] = "tune-clustering"

    tuning: TuneSettings | None = None
    objective: TuneObjective = "label-free"

    def _settings(self, adata: Any, cell: Cell, inputs: CellInputs) -> tuple[DomainConfig, dict[str, float]]:
        from cluster.tune import tune_domains

        # results on object storage keep the experiment there, so that any node resumes it
        filesystem, storage = inputs.shared_workdir or (None, inputs.workdir)
        outcome = tune_domains(adata, self.domains, self.tuning, objective=self.objective, storage=storage,
                               storage_filesystem=filesystem, labels=self.labels, seed=cell.seed)
        info = {"tune_score": outcome.score, "tune_trials": float(len(outcome.trials)),
                "tune_resumed": float(outcome.resumed), "oracle": float(outcome.objective == "oracle")}
        info.update({f"tuned_{name}": float(getattr(outcome.best.settings, name)) for name in self.tuning.space})
        return outcome.best, info

    def nested_requests(self) -> dict[str, tuple[Resources, str]]:
        trial = Resources(cpus=self.tuning.cpus_per_trial, gpus=self.tuning.gpus_per_trial)
        return {"Tune trials": (trial, "tuning.cpus_per_trial / tuning.gpus_per_trial")}


@TASK_KINDS.register
@dataclass(frozen=True)
class SpatialClusteringTask(TaskSpec):
    """Spatial domains of each section by each method, fed with each input."""

    kind: ClassVar[str] = "spatial-clustering"
    version: ClassVar[int] = 2  # 2: cells hash their method's typed settings (ssl-st 0.2)
    stages: ClassVar[dict[str, Resources]] = {"spatial-clustering": Resources(cpus=1)}

    methods: tuple[MethodName, ...] = ("stagate", "graphst", "cellcharter", "neighbour-average", "gmm")
    inputs: tuple[str, ...] = (EXPRESSION,)
    n_domains: int | None = None
    library_key: str | None = None  # obs column of slices: graphs never cross them, metrics are per slice
    normalize: Literal["cp10k", "median"] = "cp10k"  # a model input: how the section is normalised for it
    min_coverage: float = 0.5  # a model input: the cell fails if fewer of the genes map onto the model's
    clustering: Annotated[dict[str, Any], schema.SharedSettings("methods", DOMAIN_METHODS)] = field(default_factory=dict)
    per_method: Annotated[dict[str, dict[str, Any]], schema.SettingsByName(DOMAIN_METHODS)] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.methods or not self.inputs:
            raise ValueError(f"task '{self.name}': list at least one method and one input")
        unused = sorted(set(self.per_method) - set(self.methods))
        if unused:
            raise schema.FieldError(f"per_method.{unused[0]}", f"task '{self.name}': per_method names '{unused[0]}', which is not in methods {list(self.methods)}")
        for method in self.methods:
            try:
                self.domain_config(method, EXPRESSION)
            except ValueError as err:
                raise ValueError(f"task '{self.name}': {err}") from None

    def settings_for(self, method: str) -> Any:
        """The method's settings: its class defaults, then ``clustering``, then ``per_method``."""
        cls = DOMAIN_METHODS[method]
        own = {f.name for f in fields(cls)}
        shared = {k: v for k, v in self.clustering.items() if k in own}
        return cls(**{**shared, **self.per_method.get(method, {})})

    def domain_config(self, method: str, input_name: str) -> DomainConfig:
        use_rep = "X" if input_name == EXPRESSION else embedding_key(input_name)
        return DomainConfig(self.settings_for(method), n_domains=self.n_domains, use_rep=use_rep,
                            library_key=self.library_key)

    def model_refs(self) -> list[tuple[str, str]]:
        """Every input but expression names a model."""
        return [(f"inputs[{i}]", name) for i, name in enumerate(self.inputs) if name != EXPRESSION]

    def _cell_specs(self, method: str, input_name: str, labels: str | None) -> list[tuple[str, DomainCell]]:
        """(mode, spec) of one method and input; a tuned kind adds one per objective."""
        return [(method, DomainCell(self.domain_config(method, input_name), labels, **self._embedding(input_name)))]

    def _embedding(self, input_name: str) -> dict[str, Any]:
        if input_name == EXPRESSION:
            return {}
        return {"target_sum": 1e4 if self.normalize == "cp10k" else "median", "min_coverage": self.min_coverage}

    def check(self, config: ExperimentConfig) -> None:
        refuse_sharded(self, config, "spatial clustering")

    def cells(self, expansion: Expansion) -> list[Cell]:
        """(dataset, method, input, [objective], seed), in that order."""
        from ..plan import canonical, dataset_content

        config = expansion.config
        cells: list[Cell] = []
        for dataset_name in config.task_datasets(self):
            dataset = config.dataset(dataset_name)
            data = expansion.data(dataset_name)
            labels = self.label_key or dataset.resolved_domain_key
            for method in self.methods:
                for input_name in self.inputs:
                    model = None if input_name == EXPRESSION else input_name
                    artifact = expansion.model(model) if model else None
                    for mode, spec in self._cell_specs(method, input_name, labels):
                        for seed in expansion.seeds(self):
                            content = {
                                "grid_version": self.version,
                                "task": {"name": self.name, "kind": self.kind},
                                "dataset": {**dataset_content(dataset), "label_key": labels},
                                "vocabulary": dataset_content(expansion.vocabulary) if model else None,
                                "model": {"name": model, "artifact": artifact.spec} if artifact else None,
                                "cell": canonical(spec),
                                "mode": mode,
                                "seed": seed,
                            }
                            cells.append(expansion.cell(
                                self, dataset=dataset_name, model=model, mode=mode, seed=seed, spec=spec,
                                content=content, data=data, trained_model=artifact,
                            ))
        return cells


@TASK_KINDS.register
@dataclass(frozen=True)
class TuneClusteringTask(SpatialClusteringTask):
    """Spatial domains with the method's settings searched per cell; the mode reads
    ``method/objective`` so that an oracle-tuned figure is never mistaken for an honest one."""

    kind: ClassVar[str] = "tune-clustering"
    # The task that drives a Tune run only waits; its trials ask for tuning.cpus_per_trial each. Holding
    # no CPU itself means a full cluster can never deadlock on drivers waiting for their own trials.
    stages: ClassVar[dict[str, Resources]] = {"tune-clustering": Resources(cpus=0)}

    objectives: tuple[TuneObjective, ...] = ("label-free",)
    tuning: TuneSettings | None = None  # the search: its space names settings of the methods

    def __post_init__(self) -> None:
        if self.tuning is None:
            raise ValueError(f"task '{self.name}': tune-clustering needs 'tuning' with a 'space', e.g. space: {{epochs: {{low: 50, high: 500, integer: true}}}}")
        super().__post_init__()
        for method in self.methods:
            try:
                self.tuning.check(DOMAIN_METHODS[method])
            except ValueError as err:
                raise schema.FieldError("tuning.space", f"task '{self.name}': tuning {method}: {err}") from None

    def check(self, config: ExperimentConfig) -> None:
        super().check(config)
        if "oracle" not in self.objectives or self.label_key:
            return
        for name in config.task_datasets(self):
            if not config.dataset(name).resolved_domain_key:
                raise schema.FieldError(
                    "objectives", f"task '{self.name}': the oracle objective tunes on ground-truth domains, but dataset "
                    f"'{name}' has none; set its domain_key (an obs column) or drop oracle"
                )

    def _cell_specs(self, method: str, input_name: str, labels: str | None) -> list[tuple[str, DomainCell]]:
        config = self.domain_config(method, input_name)
        return [(f"{method}/{objective}", TunedDomainCell(config, labels, **self._embedding(input_name),
                                                         tuning=self.tuning, objective=objective))
                for objective in self.objectives]
