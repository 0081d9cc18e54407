"""Expansion of an :class:`ExperimentConfig` into grid cells and the artifacts they need.

A *cell* is one (task, dataset, model, mode, seed) evaluation; its id is a hash of its fully resolved
content (every setting that can change its numbers, including the specs of the data and model it
uses), so the same config always yields the same ids and any change yields new ones. An *artifact*
is something cells share and that is built once: a generated dataset or a pretrained model. Its key
is the hash of its own resolved content, which makes artifacts reusable across configs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import (
    CLUSTERING_KINDS,
    EXPRESSION,
    MODEL_MODES,
    TRAINING_MODES,
    DatasetSpec,
    ExperimentConfig,
    ModelSpec,
    TaskSpec,
)

# Bump when the meaning of an existing task changes, so results computed under the old meaning are
# not mistaken for current ones.
GRID_VERSION = 1


def content_hash(content: Any) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Artifact:
    kind: Literal["data", "model"]
    name: str
    key: str
    spec: dict[str, Any]  # the resolved content the key hashes
    inputs: dict[str, str] = field(default_factory=dict)  # role -> artifact key, e.g. "reference"

    @property
    def depends(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.inputs.values()))

    @property
    def stage(self) -> str:
        return "data" if self.kind == "data" else "pretrain"

    def path(self, root: Path) -> Path:
        if self.kind == "data":
            return root / "artifacts" / "data" / f"{self.name}-{self.key}.h5ad"
        return root / "artifacts" / "models" / f"{self.name}-{self.key}"

    def is_built(self, root: Path) -> bool:
        # Both builders write the marker file last, atomically.
        path = self.path(root)
        return path.is_file() if self.kind == "data" else (path / "model.ckpt").is_file()


@dataclass(frozen=True)
class Cell:
    cell_id: str
    task: str
    dataset: str
    model: str | None
    mode: str
    seed: int
    content: dict[str, Any]
    data: str  # artifact key of the evaluated dataset
    reference: str | None  # artifact key of the reference dataset (vocabulary of model-free modes)
    trained_model: str | None  # artifact key of the model

    @property
    def stage(self) -> str:
        return "fine-tune" if self.mode in TRAINING_MODES else self.content["task"]["kind"]

    @property
    def artifact_keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.data, self.reference, self.trained_model) if k)

    def label(self) -> str:
        return f"{self.task}/{self.dataset}/{self.model or '-'}/{self.mode}/seed={self.seed}"


@dataclass(frozen=True)
class Plan:
    config: ExperimentConfig
    cells: tuple[Cell, ...]
    artifacts: dict[str, Artifact]

    def needed_artifacts(self, cells: tuple[Cell, ...] | list[Cell]) -> list[Artifact]:
        """Artifacts the given cells need, dependencies first."""
        ordered: dict[str, Artifact] = {}

        def visit(key: str) -> None:
            artifact = self.artifacts[key]
            for dep in artifact.depends:
                visit(dep)
            ordered.setdefault(key, artifact)

        for cell in cells:
            for key in cell.artifact_keys:
                visit(key)
        return list(ordered.values())


def _dataset_content(spec: DatasetSpec) -> dict[str, Any]:
    content = asdict(spec)
    content.pop("label_key")  # where labels live does not change the data
    content.pop("domain_key")
    content["species"] = spec.resolved_species
    for key in ("path", "labels", "orthologs"):
        content[f"{key}_file"] = file_identity(content[key])
    return content


def _data_artifact(spec: DatasetSpec, config: ExperimentConfig | None = None) -> Artifact:
    content = _dataset_content(spec)
    if spec.source != "imputed":
        return Artifact("data", spec.name, content_hash(content), content)
    assert config is not None, "an imputed dataset is resolved against its config"
    base = _data_artifact(config.dataset(spec.base))
    reference = _data_artifact(config.dataset(spec.impute_reference or config.reference))
    content = {**content, "base": base.spec, "impute_reference": reference.spec}
    inputs = {"base": base.key, "reference": reference.key}
    return Artifact("data", spec.name, content_hash(content), content, inputs)


def file_identity(path: str | None) -> dict[str, Any] | None:
    """A cheap stand-in for a file's content in ids: path, size and modification time (hashing a
    250 MB checkpoint on every ``ssl-st status`` would be slow). Replacing a file renews the ids."""
    if path is None or path == "demo":
        return None
    stat = Path(path).stat()
    return {"path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _model_artifact(model: ModelSpec, reference: DatasetSpec, vocabulary: DatasetSpec) -> Artifact:
    spec = {k: v for k, v in asdict(model).items() if k != "reference"}
    spec["pretrain"] = model.pretrain.settings()
    content: dict[str, Any] = {"model": spec}
    inputs: dict[str, str] = {}
    if model.method == "checkpoint":  # weights and vocabulary come from the files
        for key in ("encoder", "pretrain", "programs"):
            spec.pop(key)
        content["files"] = {"checkpoint": file_identity(model.checkpoint), "genes": file_identity(model.genes)}
    else:
        for key in ("checkpoint", "genes", "trusted"):
            spec.pop(key)
        content["vocabulary"] = _dataset_content(vocabulary)
        inputs["vocabulary"] = _data_artifact(vocabulary).key
    if model.method in ("random-mask", "gp-mask", "barlow-twins"):
        content["reference"] = _dataset_content(reference)
        inputs["reference"] = _data_artifact(reference).key
    else:
        spec.pop("pretrain", None)
    if model.method == "gp-mask":
        content["programs"] = file_identity(model.programs) or model.programs
    else:
        spec.pop("programs", None)
    return Artifact("model", model.name, content_hash(content), content, inputs)


def _task_content(task: TaskSpec, mode: str) -> dict[str, Any]:
    """The task settings a cell of ``mode`` depends on (and nothing else, so that e.g. changing the
    fine-tuning schedule does not renew zero-shot cells)."""
    content = asdict(task)
    for key in ("name", "datasets", "models", "seeds", "modes", "methods", "inputs", "objectives"):
        content.pop(key)
    if task.kind in CLUSTERING_KINDS:
        for key in ("k", "split", "pca_components", "fine_tune", "supervised_encoder", "per_method"):
            content.pop(key)
        # only this method's resolved settings: tuning GraphST's epochs leaves STAGATE's cells alone
        content["clustering"] = asdict(task.settings_for(mode.split("/")[0]))
        if task.kind != "tune-clustering":
            content.pop("tuning")
        return content
    for key in ("n_domains", "clustering", "per_method", "tuning"):  # cell-type ids predate these settings
        content.pop(key)
    if mode not in TRAINING_MODES:
        content.pop("fine_tune")
    if mode != "supervised":
        content.pop("supervised_encoder")
    if mode != "pca":
        content.pop("pca_components")
    return content


def expand(config: ExperimentConfig) -> Plan:
    """All cells of the matrix, in a stable order (task, dataset, mode, model, seed)."""
    artifacts: dict[str, Artifact] = {}

    def register(artifact: Artifact) -> str:
        artifacts.setdefault(artifact.key, artifact)
        for role, key in artifact.inputs.items():  # an imputed dataset's base and reference
            if key not in artifacts:
                name = artifact.spec["base"]["name"] if role == "base" else artifact.spec["impute_reference"]["name"]
                register(_data_artifact(config.dataset(name), config))
        return artifact.key

    vocabulary = config.dataset(config.reference)
    vocabulary_key = register(_data_artifact(vocabulary))
    default_datasets = [d.name for d in config.datasets if d.name != config.reference]
    cells: list[Cell] = []

    def model_artifact(model_name: str) -> Artifact:
        model = config.model(model_name)
        reference = config.dataset(model.reference or config.reference)
        register(_data_artifact(reference))
        artifact = _model_artifact(model, reference, vocabulary)
        register(artifact)
        return artifact

    for task in config.tasks:
        for dataset_name in task.datasets or default_datasets:
            dataset = config.dataset(dataset_name)
            data_key = register(_data_artifact(dataset, config))
            if task.kind in CLUSTERING_KINDS:
                cells += _clustering_cells(config, task, dataset, data_key, vocabulary, model_artifact)
                continue
            for mode in task.modes:
                model_names: list[str | None] = [None]
                if mode in MODEL_MODES:
                    model_names = list(task.models or [m.name for m in config.models])
                if mode == "fine-tune":  # fine-tuning random weights is the supervised baseline
                    model_names = [n for n in model_names if config.model(n).method != "random-init"]
                for model_name in model_names:
                    model_key = None
                    model_content = None
                    if model_name is not None:
                        artifact = model_artifact(model_name)
                        model_key = artifact.key
                        model_content = {"name": model_name, "artifact": artifact.spec}
                    for seed in task.seeds or config.seeds:
                        content = {
                            "grid_version": GRID_VERSION,
                            "task": {"name": task.name, **_task_content(task, mode)},
                            "dataset": {**_dataset_content(dataset), "label_key": task.label_key or dataset.label_key},
                            "vocabulary": _dataset_content(vocabulary),
                            "model": model_content,
                            "mode": mode,
                            "seed": seed,
                        }
                        cells.append(
                            Cell(
                                cell_id=content_hash(content),
                                task=task.name,
                                dataset=dataset_name,
                                model=model_name,
                                mode=mode,
                                seed=seed,
                                content=content,
                                data=data_key,
                                reference=vocabulary_key if model_name is None else None,
                                trained_model=model_key,
                            )
                        )
    return Plan(config, tuple(cells), artifacts)


def _clustering_cells(config: ExperimentConfig, task: TaskSpec, dataset: DatasetSpec, data_key: str,
                      vocabulary: DatasetSpec, model_artifact) -> list[Cell]:
    """(method × input × objective × seed) cells; the mode is the method, ``method/objective`` when
    tuned, so an oracle-tuned figure is never mistaken for an honest one."""
    cells: list[Cell] = []
    objectives = task.objectives if task.kind == "tune-clustering" else (None,)
    for method in task.methods:
        for input_name in task.inputs:
            model_name = None if input_name == EXPRESSION else input_name
            artifact = model_artifact(model_name) if model_name else None
            for objective in objectives:
                mode = method if objective is None else f"{method}/{objective}"
                for seed in task.seeds or config.seeds:
                    content = {
                        "grid_version": GRID_VERSION,
                        "task": {"name": task.name, **_task_content(task, mode)},
                        "dataset": {**_dataset_content(dataset), "label_key": task.label_key or dataset.resolved_domain_key},
                        "vocabulary": _dataset_content(vocabulary) if model_name else None,
                        "model": {"name": model_name, "artifact": artifact.spec} if artifact else None,
                        "method": method,
                        "objective": objective,
                        "mode": mode,
                        "seed": seed,
                    }
                    cells.append(Cell(
                        cell_id=content_hash(content), task=task.name, dataset=dataset.name, model=model_name,
                        mode=mode, seed=seed, content=content, data=data_key, reference=None,
                        trained_model=artifact.key if artifact else None,
                    ))
    return cells
