"""Expansion of an :class:`ExperimentConfig` into grid cells and the artifacts they need.

A *cell* is one evaluation (task, dataset, model or input, mode, seed); it carries the typed spec
that runs it, and its id is a hash of its resolved content (every setting that can change its
numbers, including the specs of the data and model it uses), so the same config always yields the
same ids and any change yields new ones. An *artifact* is something cells share and that is built
once: a dataset or a model. Its key is the hash of its own resolved content, which makes artifacts
reusable across configs. Each task kind expands itself (:meth:`grid.tasks.TaskSpec.cells`) through
an :class:`Expansion`, which registers the artifacts its cells use.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

ArtifactState = Literal["built", "missing", "broken", "unverified"]
MANIFEST_NAME = "manifest.json"  # inside a model folder; a dataset's sits beside it: <file>.manifest.json
MANIFEST_VERSION = 1

from .config import DatasetSpec, ExperimentConfig, ModelSpec
from .pulled import Pulled, fetch_commands, missing, pulled_fields
from .tasks import CellSpec, TaskSpec


def content_hash(content: Any) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def canonical(value: Any) -> Any:
    """The JSON form of a typed spec that a cell id hashes: dataclasses as their fields, and a
    registered class (a method's settings) with its registered name under ``type``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
        name = getattr(type(value), "name", None)
        if isinstance(name, str) and "name" not in out:
            out["type"] = name
        return out
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


@dataclass(frozen=True)
class Artifact:
    kind: Literal["data", "model", "embedding"]
    name: str
    key: str
    spec: dict[str, Any]  # the resolved content the key hashes
    inputs: dict[str, str] = field(default_factory=dict)  # role -> artifact key, e.g. "reference"
    source: DatasetSpec | ModelSpec | None = field(default=None, compare=False)  # what builds it
    # built by workers of its own (Ray Data actors, Ray Train workers), each with the stage's resources
    drives_workers: bool = field(default=False, compare=False)

    @property
    def depends(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.inputs.values()))

    @property
    def stage(self) -> str:
        return {"data": "data", "model": "pretrain", "embedding": "embed"}[self.kind]

    def path(self, root: Path) -> Path:
        if self.kind == "data":
            # a sharded dataset stays where it is; its artifact is the record that it was checked
            sharded = isinstance(self.source, DatasetSpec) and self.source.sharded
            return root / "artifacts" / "data" / f"{self.name}-{self.key}{'.json' if sharded else '.h5ad'}"
        folder = "models" if self.kind == "model" else "embeddings"
        return root / "artifacts" / folder / f"{self.name}-{self.key}"

    def manifest_path(self, root: Path) -> Path:
        return manifest_path(self.path(root))

    def check(self, root: Path, *, checksums: bool = False) -> tuple[ArtifactState, str]:
        """The artifact's state and why, against its manifest (see :func:`check_manifest`)."""
        return check_manifest(self.path(root), checksums=checksums)

    def state(self, root: Path, *, checksums: bool = False) -> ArtifactState:
        return self.check(root, checksums=checksums)[0]

    def is_built(self, root: Path) -> bool:
        """Present and, checksums included, what was built: safe to hand to cells as it is."""
        return self.state(root, checksums=True) == "built"


# ---------------------------------------------------------------- manifests
#
# Every artifact carries a manifest, written last and atomically once everything else is in place:
# the size, mtime and sha256 of each of its files. Checks come in two strengths:
#
# - ``checksums=False`` (``ssl-st plan``, instant): sizes must match (a truncated file is "broken");
#   a file whose mtime changed since it was built (copied, touched) is "unverified".
# - ``checksums=True`` (``ssl-st run`` before any cell uses an artifact, and the builders): the sha256
#   of every file, about 1 s per 500 MB, once per run.
#
# An artifact without a manifest was built by an older ssl-st (or its builder died between writing
# the file and the manifest). It is "unverified": the builder opens it completely (reads the whole
# dataset, loads the model) and, if that works, writes its manifest; otherwise it rebuilds it. That
# keeps hours of pretraining from older results directories without ever blessing a truncated file.


def manifest_path(artifact_path: Path) -> Path:
    """``manifest.json`` inside a model folder; ``<file>.manifest.json`` beside a dataset file."""
    if artifact_path.is_dir() or (artifact_path.suffix not in (".h5ad", ".json") and not artifact_path.is_file()):
        return artifact_path / MANIFEST_NAME
    return artifact_path.with_name(f"{artifact_path.name}.manifest.json")


def _artifact_files(artifact_path: Path) -> dict[str, Path]:
    if artifact_path.is_dir():
        return {p.relative_to(artifact_path).as_posix(): p for p in sorted(artifact_path.rglob("*"))
                if p.is_file() and p.relative_to(artifact_path).as_posix() != MANIFEST_NAME}
    return {artifact_path.name: artifact_path}


def write_manifest(artifact_path: Path) -> Path:
    """Record every file of an artifact (a file or a model folder); call it last, once all is written."""
    from ssl_st.hub import sha256_file

    files = {}
    for rel, path in _artifact_files(artifact_path).items():
        stat = path.stat()
        files[rel] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(path)}
    target = manifest_path(artifact_path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"manifest_version": MANIFEST_VERSION, "files": files}, indent=1))
    os.replace(tmp, target)
    return target


def check_manifest(artifact_path: Path, *, checksums: bool = False) -> tuple[ArtifactState, str]:
    """``(state, reason)`` of the artifact at ``artifact_path`` (reason is "" when built)."""
    if not artifact_path.exists():
        return "missing", "not built yet"
    target = manifest_path(artifact_path)
    if not target.is_file():
        if artifact_path.is_dir() and not (artifact_path / "model.ckpt").is_file():
            return "broken", "no model.ckpt (an interrupted build)"
        return "unverified", "no manifest (built by an older ssl-st)"
    try:
        files = json.loads(target.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return "broken", f"{target.name}: unreadable manifest ({exc})"
    from ssl_st.hub import sha256_file

    changed = []
    for rel, want in files.items():
        path = artifact_path / rel if artifact_path.is_dir() else artifact_path.with_name(rel)
        if not path.is_file():
            return "broken", f"{rel} is missing"
        stat = path.stat()
        if stat.st_size != want["size"]:
            return "broken", f"{rel}: {stat.st_size} bytes, {want['size']} when built (truncated or overwritten)"
        if checksums and sha256_file(path) != want["sha256"]:
            return "broken", f"{rel}: sha256 differs from when it was built (corrupted or overwritten)"
        if stat.st_mtime_ns != want["mtime_ns"]:
            changed.append(rel)
    if changed and not checksums:
        return "unverified", f"changed since built: {', '.join(changed)}"
    return "built", ""


def artifact_summary(artifacts: list[Artifact] | tuple[Artifact, ...], root: Path) -> str:
    """``ssl-st plan``'s artifact line: counts, every broken or unverified artifact by name, and the
    pulled files (:mod:`grid.pulled`) that artifacts still to build need and this machine lacks."""
    checked = [(a, *a.check(root)) for a in artifacts]
    built = sum(state == "built" for _, state, _ in checked)
    line = f"artifacts: {built}/{len(checked)} built"
    for state, hint in (("broken", "`ssl-st run` rebuilds them"),
                        ("unverified", "`ssl-st run` checks them and keeps or rebuilds each one")):
        named = [f"{a.path(root).relative_to(root / 'artifacts').as_posix()} ({why})" for a, s, why in checked if s == state]
        if named:
            line += f", {len(named)} {state}: {'; '.join(named)} [{hint}]"
    line += " (datasets and models, shared by cells)"
    absent = missing(a.source for a, state, _ in checked if state != "built" and a.source is not None)
    if absent:
        line += (f"\nto fetch: {len(absent)} downloaded file(s) that the datasets and models to build read are not "
                 f"on this machine; before `ssl-st run` here: {'; '.join(fetch_commands(absent))}")
    return line


def download_problems(plan: Plan, config_file: str | Path, root: Path) -> list[Any]:
    """The pulled files that artifacts still to build need and this machine has not downloaded,
    each a ``grid.schema.Problem`` at the line of the field that names it, with the command that
    fetches it: what a run that builds them here would fail on (``ssl-st plan`` lists them and goes on)."""
    from .config import field_position
    from .schema import Problem

    config = plan.config
    todo = {id(a.source) for a in plan.artifacts.values() if a.source is not None and a.state(root) != "built"}
    problems: list[Problem] = []
    for section, specs in (("datasets", config.datasets), ("models", config.models)):
        for i, spec in enumerate(specs):
            if id(spec) not in todo:
                continue
            for key, pulled in pulled_fields(spec):
                if not pulled.is_present():
                    where = f"{section}[{i}].{key}"
                    problems.append(Problem(str(config_file), *field_position(config_file, where), where,
                                            f"'{pulled.pull}' is not downloaded on this machine (no file at "
                                            f"{pulled.local_path()}); run `{pulled.command}`"))
    return problems


def resource_summary(plan: Plan) -> str:
    """What the plan asks Ray for, per stage: each task's request and how many tasks make it."""
    counts: dict[tuple[str, bool], int] = {}
    for artifact in plan.artifacts.values():
        key = (artifact.stage, artifact.drives_workers)
        counts[key] = counts.get(key, 0) + 1
    for cell in plan.cells:
        counts[(cell.stage, False)] = counts.get((cell.stage, False), 0) + 1
    parts = [f"{stage} {plan.config.resources_for(stage).describe()}{' per worker' if workers else ''} x {n}"
             for (stage, workers), n in counts.items()]
    return "resources per task: " + "; ".join(parts)


@dataclass(frozen=True)
class Cell:
    cell_id: str
    task: str  # the task's name
    dataset: str
    model: str | None
    mode: str
    seed: int
    spec: CellSpec  # the typed settings that run this cell
    content: dict[str, Any]  # what cell_id hashes
    data: str  # artifact key of the evaluated dataset
    reference: str | None  # artifact key of the reference dataset (vocabulary of model-free modes)
    trained_model: str | None  # artifact key of the model
    embedding: str | None = None  # artifact key of the model's embedding of a sharded dataset

    @property
    def stage(self) -> str:
        return self.spec.stage

    @property
    def artifact_keys(self) -> tuple[str, ...]:
        return tuple(k for k in (self.data, self.reference, self.trained_model, self.embedding) if k)

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


def file_identity(path: str | Pulled | None) -> dict[str, Any] | None:
    """A cheap stand-in for a file's content in ids: path, size and modification time (hashing a
    250 MB checkpoint on every ``ssl-st status`` would be slow). Replacing a file renews the ids. A
    pulled file is what its registry says it is (:meth:`grid.pulled.Pulled.identity`), downloaded or not."""
    if isinstance(path, Pulled):
        return path.identity()
    if path is None or path == "demo":
        return None
    stat = Path(path).stat()
    return {"path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


# Dataset keys added after ids were first pinned: left out of a dataset's content while unset, so that
# a config that does not use them keeps its ids and artifact keys (tests/test_cell_ids.py).
LATER_DATASET_KEYS = ("label_column", "values", "target_sum", "split")


def dataset_content(spec: DatasetSpec) -> dict[str, Any]:
    """A dataset's resolved content; where its labels live does not change the data."""
    content = asdict(spec)
    content.pop("label_key")
    content.pop("domain_key")
    for key in LATER_DATASET_KEYS:
        if content[key] is None:
            del content[key]
    content["species"] = spec.resolved_species
    for key in ("path", "labels", "orthologs"):
        content[f"{key}_file"] = file_identity(getattr(spec, key))
    if spec.sharded:
        content["path_file"] = sharded_identity(str(spec.path), spec.split)
    return content


def sharded_identity(path: str, split: str | None) -> dict[str, Any]:
    """A shard directory is its manifest (which holds every shard's sha256); a Merlin split, the
    sizes and times of its files, like :func:`file_identity`."""
    root = Path(path)
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        return {"path": path, "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()}
    files = sorted(p for p in (root / (split or "")).rglob("*.parquet")) + [root / "var.parquet"]
    listing = [(p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file()]
    return {"path": path, "split": split, "files": content_hash(listing)}


def _changed(settings: Any) -> dict[str, Any]:
    """The settings that differ from their class's defaults: writing a default out changes nothing."""
    defaults = type(settings)()
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
            if getattr(settings, f.name) != getattr(defaults, f.name)}


class Expansion:
    """What a task kind expands against: the config, its artifacts (registered as cells use them)
    and the cells it makes."""

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.artifacts: dict[str, Artifact] = {}
        self.vocabulary = config.dataset(config.reference)
        self.vocabulary_key = self.data(self.vocabulary.name).key

    def seeds(self, task: TaskSpec) -> tuple[int, ...]:
        return task.seeds or self.config.seeds

    def data(self, name: str) -> Artifact:
        """The artifact of dataset ``name`` (an imputed one depends on its base and reference)."""
        spec = self.config.dataset(name)
        content = dataset_content(spec)
        inputs: dict[str, str] = {}
        if spec.source == "imputed":
            base = self.data(spec.base)  # type: ignore[arg-type]
            reference = self.data(spec.impute_reference or self.config.reference)
            content = {**content, "base": base.spec, "impute_reference": reference.spec}
            inputs = {"base": base.key, "reference": reference.key}
        return self._register(Artifact("data", name, content_hash(content), content, inputs, spec))

    def model(self, name: str) -> Artifact:
        """The artifact of model ``name``: pretrained, initialised or imported."""
        model = self.config.model(name)
        spec: dict[str, Any] = {"name": model.name, "method": model.method, "seed": model.seed}
        content: dict[str, Any] = {"model": spec}
        inputs: dict[str, str] = {}
        if model.method == "checkpoint":  # weights and vocabulary come from the files
            spec.update(checkpoint=canonical(model.checkpoint), genes=canonical(model.genes), trusted=model.trusted)
            content["files"] = {"checkpoint": file_identity(model.checkpoint), "genes": file_identity(model.genes)}
        else:
            spec["encoder"] = asdict(model.encoder)
            content["vocabulary"] = dataset_content(self.vocabulary)
            inputs["vocabulary"] = self.vocabulary_key
        training = model.training
        if training is not None:
            reference = self.data(model.reference or self.config.reference)
            spec["pretrain"] = _changed(training)
            if model.workers > 1:  # gradients summed across workers: the same steps, other float rounding
                spec["workers"] = model.workers
            content["reference"] = reference.spec
            inputs["reference"] = reference.key
            if training.needs_programs:
                spec["programs"] = model.programs
                content["programs"] = file_identity(model.programs) or model.programs
        return self._register(Artifact("model", name, content_hash(content), content, inputs, model,
                                       drives_workers=model.workers > 1))

    def embedding(self, model: Artifact, data: Artifact, settings: dict[str, Any]) -> Artifact:
        """The artifact of ``model``'s embedding of the sharded dataset of ``data``, under the input
        ``settings`` (target sum, coverage floor) that it depends on; every seed's cells share it."""
        content = {"model": model.spec, "data": data.spec, "settings": settings}
        return self._register(Artifact("embedding", f"{model.name}-{data.name}", content_hash(content), content,
                                       {"data": data.key, "model": model.key}, drives_workers=True))

    def _register(self, artifact: Artifact) -> Artifact:
        return self.artifacts.setdefault(artifact.key, artifact)

    def cell(self, task: TaskSpec, *, dataset: str, model: str | None, mode: str, seed: int, spec: CellSpec,
             content: dict[str, Any], data: Artifact, reference: Artifact | None = None,
             trained_model: Artifact | None = None, embedding: Artifact | None = None) -> Cell:
        return Cell(
            cell_id=content_hash(content), task=task.name, dataset=dataset, model=model, mode=mode, seed=seed,
            spec=spec, content=content, data=data.key, reference=reference.key if reference else None,
            trained_model=trained_model.key if trained_model else None,
            embedding=embedding.key if embedding else None,
        )


def expand(config: ExperimentConfig) -> Plan:
    """All cells of the matrix, in a stable order (task, then each kind's own order)."""
    expansion = Expansion(config)
    cells = [cell for task in config.tasks for cell in task.cells(expansion)]
    return Plan(config, tuple(cells), expansion.artifacts)


def obs_columns(path: str) -> list[str]:
    """The obs column names of an h5ad file, read from its HDF5 header without loading the data
    (``obs`` is a group with a ``column-order`` attribute since anndata 0.7, a table before)."""
    import h5py

    with h5py.File(path, "r") as handle:
        obs = handle["obs"]
        if isinstance(obs, h5py.Dataset):
            return [n for n in obs.dtype.names or () if n != "index"]
        order = obs.attrs.get("column-order", [])
        return [c.decode() if isinstance(c, bytes) else str(c) for c in order]


def plan_problems(plan: Plan, config_file: str | Path) -> list[Any]:
    """What would only fail at run time, found at plan time (``grid.schema.Problem`` each, at the line
    of the key to change): a task that plans no cell, and a label column that an h5ad dataset lacks."""
    from .config import field_position
    from .schema import Problem

    config = plan.config
    problems: list[Problem] = []
    planned = {cell.task for cell in plan.cells}
    for i, task in enumerate(config.tasks):
        if task.name not in planned:
            field = f"tasks[{i}]"
            problems.append(Problem(str(config_file), *field_position(config_file, field), field,
                                    f"task '{task.name}' plans no cells with these datasets, models and modes; "
                                    "change them or remove the task"))
    wanted: dict[tuple[str, str], str] = {}  # (dataset, label column) -> the field that names it
    tasks = {t.name: i for i, t in enumerate(config.tasks)}
    datasets = {d.name: i for i, d in enumerate(config.datasets)}
    for cell in plan.cells:
        key = cell.content.get("dataset", {}).get("label_key")
        dataset = config.dataset(cell.dataset)
        if key is None or dataset.source not in ("h5ad", "shards", "merlin") or (cell.dataset, key) in wanted:
            continue
        task = config.tasks[tasks[cell.task]]
        own = "label_key" if key == dataset.label_key else "domain_key"
        wanted[(cell.dataset, key)] = (f"tasks[{tasks[cell.task]}].label_key" if task.label_key
                                       else f"datasets[{datasets[cell.dataset]}].{own}")
    columns: dict[str, list[str] | str] = {}
    problems += _shard_problems(config, config_file, columns)
    for (name, key), field in wanted.items():
        path = config.dataset(name).path
        if isinstance(path, Pulled):  # checked once downloaded; until then it is on the "to fetch" list
            if not path.is_present():
                continue
            path = str(path.local_path())
        if path not in columns and not config.dataset(name).sharded:
            try:
                columns[path] = obs_columns(path)
            except (OSError, KeyError) as exc:  # not HDF5, or HDF5 without obs: not an AnnData file
                columns[path] = f"{path} cannot be read as an h5ad file ({type(exc).__name__}: {exc})"
        found = columns.get(path)
        if found is None:  # shards that failed their check: reported once, above
            continue
        if isinstance(found, str):
            message = found
        elif key in found:
            continue
        else:
            close = difflib.get_close_matches(key, found, n=1)
            message = (f"dataset '{name}': {path} has no obs column '{key}' (its obs columns: {', '.join(found) or 'none'})"
                       + (f"; did you mean '{close[0]}'?" if close else "; name the column that holds the labels"))
        problems.append(Problem(str(config_file), *field_position(config_file, field), field, message))
    return problems


def _shard_problems(config: ExperimentConfig, config_file: str | Path, columns: dict[str, list[str] | str]) -> list[Any]:
    """Every sharded dataset checked as ``plan`` can afford (manifest, footers, schemas, row counts;
    the checksums are the data stage's): a Problem naming the shard at fault, at the dataset's path.
    Fills ``columns`` with each good one's obs columns."""
    from ssl_st.shards import ShardError

    from .config import field_position
    from .schema import Problem
    from .sharded import check_source, obs_columns

    problems = []
    for i, dataset in enumerate(config.datasets):
        if not dataset.sharded:
            continue
        try:
            columns[str(dataset.path)] = list(obs_columns(check_source(dataset, checksums=False)))
        except ShardError as exc:
            where = f"datasets[{i}].path"
            problems.append(Problem(str(config_file), *field_position(config_file, where), where,
                                    f"dataset '{dataset.name}': {exc}; nothing was run"))
    return problems

