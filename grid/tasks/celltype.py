"""The ``cell-type`` task: predict each cell's type on a spatial section, the study's first question.

Cells are (dataset, mode, model, seed). ``zero-shot`` embeds with a frozen encoder and fits kNN on
the train split; ``fine-tune`` trains the encoder with a classifier head; ``supervised`` trains the
same network from random weights; ``pca`` is the model-free kNN baseline (``ssl_st.tasks``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ssl_st.models import Architecture
from ssl_st.tasks import CellTypeConfig, FineTuneConfig

from ..resources import Resources
from ..schema import FieldError
from .base import TASK_KINDS, CellInputs, CellOutput, CellSpec, Row, TaskSpec, refuse_sharded

if TYPE_CHECKING:
    from ..config import ExperimentConfig
    from ..plan import Cell, Expansion

Mode = Literal["zero-shot", "fine-tune", "supervised", "pca"]
MODEL_MODES = ("zero-shot", "fine-tune")  # modes that evaluate a model; the others are baselines
TRAINING_MODES = ("fine-tune", "supervised")  # modes that train a classifier: the heavy cells


@dataclass(frozen=True)
class CellTypeCell(CellSpec):
    """One cell-type evaluation: the mode, and the settings it reads."""

    mode: Mode
    config: CellTypeConfig
    fine_tune: FineTuneConfig | None = None  # fine-tune and supervised
    encoder: Architecture | None = None  # supervised: the network trained from scratch

    @property
    def stage(self) -> str:
        return "fine-tune" if self.mode in TRAINING_MODES else "cell-type"

    def run(self, cell: Cell, inputs: CellInputs) -> CellOutput:
        import anndata as ad

        from ssl_st import tl
        from ssl_st.genes import Vocabulary
        from ssl_st.models import SSLModel
        from ssl_st.tasks import fine_tune, pca_baseline, supervised, zero_shot

        if inputs.embedding is not None:
            return self._run_embedded(cell, inputs)
        adata = ad.read_h5ad(inputs.data)
        if self.mode in MODEL_MODES:
            model = SSLModel.load(inputs.model)
            if self.mode == "zero-shot":
                result = zero_shot(adata, model, self.config, cell.seed, device=inputs.device)
            else:
                result = fine_tune(adata, model, self.config, self.fine_tune, cell.seed, device=inputs.device)
        else:
            vocabulary = Vocabulary.from_var(ad.read_h5ad(inputs.reference, backed="r").var)
            if self.mode == "pca":
                result = pca_baseline(adata, vocabulary, self.config, cell.seed)
            else:
                result = supervised(adata, vocabulary, self.encoder, self.config, self.fine_tune, cell.seed,
                                    device=inputs.device)
        rows: list[Row] = [(k, v, "metric") for k, v in result.metrics.items()]
        rows += [(k, v, "info") for k, v in result.info.items()]
        imputation = adata.uns.get("ssl_st_imputation", {})
        if "holdout_pearson_r_mean" in imputation:  # how well the imputed genes were recovered
            rows.append(("imputation_holdout_r", float(imputation["holdout_pearson_r_mean"]), "info"))
        names = adata.obs_names.to_numpy().astype(str)
        y = adata.obs[self.config.label_key].astype(str).to_numpy()
        embedding = adata.obsm[tl.embedding_key(model.method)] if self.mode == "zero-shot" else None
        return CellOutput(rows, _details(names.__getitem__, y.__getitem__, result, embedding))

    def _run_embedded(self, cell: Cell, inputs: CellInputs) -> CellOutput:
        """Zero-shot on a sharded dataset: kNN on the embedding the grid streamed (an artifact every
        seed shares), with the labels read from the shards' obs columns alone."""
        from ssl_st.shards import read_embedding
        from ssl_st.tasks import zero_shot_embedded

        from ..sharded import open_record
        from ..stages import EMBEDDING_DIR

        # row i of the embedding is row i of the shards (each embedded row keeps its row number)
        embedding = read_embedding(inputs.embedding / EMBEDDING_DIR, checksums=False, cell_ids=False)
        source = open_record(inputs.data)
        if embedding.manifest.n_rows != source.n_rows:
            raise ValueError(f"{inputs.embedding}: the embedding has {embedding.manifest.n_rows:,} cells and the dataset "
                             f"{source.n_rows:,}; rebuild it (ssl-st run --force)")
        # as category codes: a million labels as Python strings would cost more than the embedding
        labels = source.read_obs([self.config.label_key])[self.config.label_key].astype("category")
        y = labels.cat.codes.to_numpy()
        result = zero_shot_embedded(embedding.values, y, self.config, cell.seed,
                                    coverage=embedding.manifest.info.get("coverage", {}))
        rows: list[Row] = [(k, v, "metric") for k, v in result.metrics.items()]
        rows += [(k, v, "info") for k, v in result.info.items()]
        names = labels.cat.categories.astype(str).to_numpy()
        # the kNN predicted codes; a sharded dataset's cells are named by their row numbers
        result = replace(result, predicted=names[result.predicted])
        return CellOutput(rows, _details(lambda r: r.astype(str), lambda r: names[y[r]], result, embedding.values))


def _details(obs_of, labels_of, result, embedding) -> dict:
    """The cell's details (:mod:`grid.details`): the test cells' predictions, and for a frozen encoder
    a seeded sample of the embedding it scored. ``obs_of(rows)`` and ``labels_of(rows)`` give the
    names and labels of row indices, so that a million-cell dataset makes text only for those."""
    from .. import details

    out = {}
    if result.test is not None and result.predicted is not None:
        out[details.PREDICTIONS] = details.predictions(obs_of(result.test), labels_of(result.test), result.predicted)
    if embedding is not None:
        rows = details.sample_rows(len(embedding))
        out[details.EMBEDDING] = details.embedding_sample(obs_of(rows), labels_of(rows), embedding[rows])
    return out


@TASK_KINDS.register
@dataclass(frozen=True)
class CellTypeTask(TaskSpec):
    """Cell-type prediction in the study's four modes, on every dataset and model it names."""

    kind: ClassVar[str] = "cell-type"
    # 2: the study's literal split (second test_size 0.1765, not 0.15 / 0.85: 699 train cells of 1,000,
    # not 700) and a PCA baseline by an exact or converged solve (no solver seed): issue 11
    version: ClassVar[int] = 2
    stages: ClassVar[dict[str, Resources]] = {"cell-type": Resources(cpus=1), "fine-tune": Resources(cpus=1)}

    modes: tuple[Mode, ...] = ("zero-shot", "fine-tune", "supervised", "pca")
    models: tuple[str, ...] | None = None  # default: every model
    k: int = 5
    split: tuple[float, float, float] = (0.70, 0.15, 0.15)
    normalize: Literal["cp10k", "median"] = "cp10k"
    pca_components: int = 64
    min_coverage: float = 0.5  # a cell fails if fewer of the dataset's genes map onto the model's
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)  # fine-tune and supervised cells
    supervised_encoder: Architecture = field(default_factory=Architecture)  # network of `supervised`

    def __post_init__(self) -> None:
        if abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) <= 0:
            raise ValueError(f"task '{self.name}': split must be three positive fractions summing to 1")
        if self.k < 1:
            raise ValueError(f"task '{self.name}': k must be at least 1")
        if not self.modes:
            raise ValueError(f"task '{self.name}': list at least one mode")

    def model_refs(self) -> list[tuple[str, str]]:
        return [(f"models[{i}]", name) for i, name in enumerate(self.models or ())]

    def check(self, config: ExperimentConfig) -> None:
        if any(m in MODEL_MODES for m in self.modes) and not (self.models or config.models):
            raise FieldError("modes", f"task '{self.name}': mode zero-shot needs at least one model")
        in_memory = [m for m in self.modes if m != "zero-shot"]
        if in_memory:
            refuse_sharded(self, config, f"mode {in_memory[0]}")
        sharded = [n for n in config.task_datasets(self) if config.dataset(n).sharded]
        if sharded and self.normalize == "median":
            raise FieldError("normalize", f"task '{self.name}': normalize: median needs every cell's depth before the "
                             f"first is embedded, and '{sharded[0]}' streams; use cp10k")

    def _content(self, mode: str) -> dict[str, Any]:
        """The task settings a cell of ``mode`` depends on (and nothing else, so that e.g. changing the
        fine-tuning schedule does not renew zero-shot cells)."""
        content: dict[str, Any] = {
            "name": self.name, "kind": self.kind, "label_key": self.label_key, "k": self.k, "split": self.split,
            "normalize": self.normalize, "min_coverage": self.min_coverage,
        }
        if mode in TRAINING_MODES:
            content["fine_tune"] = asdict(self.fine_tune)
        if mode == "supervised":
            content["supervised_encoder"] = asdict(self.supervised_encoder)
        if mode == "pca":
            content["pca_components"] = self.pca_components
        return content

    def _spec(self, mode: Mode, label_key: str) -> CellTypeCell:
        config = CellTypeConfig(
            label_key=label_key, k=self.k, split=self.split, target_sum=1e4 if self.normalize == "cp10k" else "median",
            pca_components=self.pca_components, min_coverage=self.min_coverage,
        )
        return CellTypeCell(
            mode, config, fine_tune=self.fine_tune if mode in TRAINING_MODES else None,
            encoder=self.supervised_encoder if mode == "supervised" else None,
        )

    def cells(self, expansion: Expansion) -> list[Cell]:
        """(dataset, mode, model, seed), in that order; model-free modes have no model."""
        from ..plan import dataset_content

        config = expansion.config
        cells: list[Cell] = []
        vocabulary = dataset_content(expansion.vocabulary)
        for dataset_name in config.task_datasets(self):
            dataset = config.dataset(dataset_name)
            data = expansion.data(dataset_name)
            label_key = self.label_key or dataset.label_key
            for mode in self.modes:
                model_names: list[str | None] = [None]
                if mode in MODEL_MODES:
                    model_names = list(self.models or [m.name for m in config.models])
                if mode == "fine-tune":  # fine-tuning random weights is the supervised baseline
                    model_names = [n for n in model_names if config.model(n).method != "random-init"]
                spec = self._spec(mode, label_key)
                for model_name in model_names:
                    artifact = expansion.model(model_name) if model_name else None
                    embedding = None
                    if dataset.sharded and artifact is not None:
                        embedding = expansion.embedding(artifact, data, {"target_sum": spec.config.target_sum,
                                                                         "min_coverage": spec.config.min_coverage})
                    for seed in expansion.seeds(self):
                        content = {
                            "grid_version": self.version,
                            "task": self._content(mode),
                            "dataset": {**dataset_content(dataset), "label_key": label_key},
                            "vocabulary": vocabulary,
                            "model": {"name": model_name, "artifact": artifact.spec} if artifact else None,
                            "mode": mode,
                            "seed": seed,
                        }
                        cells.append(expansion.cell(
                            self, dataset=dataset_name, model=model_name, mode=mode, seed=seed, spec=spec,
                            content=content, data=data, reference=None if artifact else expansion.data(config.reference),
                            trained_model=artifact, embedding=embedding,
                        ))
        return cells
