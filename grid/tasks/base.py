"""What every task kind provides, and the registry that names them.

A kind is a frozen dataclass subclassing :class:`TaskSpec`, decorated with
``@TASK_KINDS.register`` and listed once in ``builtin`` below. It declares:

- its settings, as fields (what ``experiments.yaml`` may say in a task of this kind);
- ``kind`` (its name), ``version`` (bumped when the meaning of its cells changes, which renews their
  ids) and ``stages`` (the resource stages its cells are scheduled under, with defaults);
- :meth:`TaskSpec.check`, for cross-references against the whole config;
- :meth:`TaskSpec.cells`, its expansion into cells, each carrying a :class:`CellSpec` that runs it.

Kinds import the science (torch, sklearn, ...) inside ``CellSpec.run``, never at the top, so that
reading and planning a config stays fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ssl_st.registry import Registry

from ..resources import Resources

if TYPE_CHECKING:
    import pandas as pd

    from ..config import ExperimentConfig
    from ..plan import Cell, Expansion

TASK_KINDS: Registry = Registry("task kind", builtin=("grid.tasks.celltype", "grid.tasks.clustering"), key="kind")

Row = tuple[str, float, str]
"""One record of a finished cell: ``(metric, value, kind)``, kind ``metric`` (a score) or ``info``."""


@dataclass(frozen=True)
class CellOutput:
    """What a cell returns: its records, and the tables the report draws from, by kind
    (:mod:`grid.details`: ``predictions``, ``domains``, ``embedding``), kept beside the rows."""

    rows: list[Row]
    details: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass(frozen=True)
class CellInputs:
    """Where a running cell finds what it needs (artifact files) and may write (its workdir)."""

    data: Path
    model: Path | None
    reference: Path | None
    workdir: Path
    device: str
    embedding: Path | None = None  # a sharded dataset's embedding by the cell's model (zero-shot)
    # Results on object storage (grid.remote): the cell's workdir there, as (pyarrow filesystem, path).
    # ``workdir`` is then scratch space on this node; what must outlive the node (a Tune experiment) goes here.
    shared_workdir: tuple[Any, str] | None = None

    @classmethod
    def of(cls, cell: Cell, paths: dict[str, Path], *, workdir: Path, device: str,
           shared_workdir: tuple[Any, str] | None = None) -> CellInputs:
        """The inputs of ``cell`` from the paths of built artifacts, by artifact key."""
        return cls(data=paths[cell.data], model=paths.get(cell.trained_model), reference=paths.get(cell.reference),
                   workdir=workdir, device=device, embedding=paths.get(cell.embedding), shared_workdir=shared_workdir)


class CellSpec(Protocol):
    """The typed settings of one cell: hashed (in canonical form) into its id, and what runs it."""

    @property
    def stage(self) -> str: ...

    def run(self, cell: Cell, inputs: CellInputs) -> list[Row] | CellOutput: ...

    def nested_requests(self) -> dict[str, tuple[Resources, str]]:
        """Tasks this cell starts itself (a Tune run's trials), by description: what each asks for
        and the setting that declares it, so that ``run`` can refuse what no node could place."""
        return {}


@dataclass(frozen=True)
class TaskSpec:
    """The settings every task has; a kind adds its own."""

    kind: ClassVar[str]
    version: ClassVar[int]
    stages: ClassVar[dict[str, Resources]]

    name: str
    datasets: tuple[str, ...] | None = None  # default: every dataset but the reference
    seeds: tuple[int, ...] | None = None  # a subset of the grid's seeds (e.g. one for a costly task)
    label_key: str | None = None  # overrides the dataset's label column

    def model_refs(self) -> Iterable[tuple[str, str]]:
        """``(field path, model name)`` of every model this task names (checked against the config)."""
        return ()

    def check(self, config: ExperimentConfig) -> None:
        """Cross-references against the whole config; raise ValueError naming the task
        (:class:`grid.schema.FieldError` to point at one of its fields)."""

    def cells(self, expansion: Expansion) -> list[Cell]:
        raise NotImplementedError


def refuse_sharded(task: TaskSpec, config: ExperimentConfig, what: str, datasets: Iterable[str] | None = None) -> None:
    """Raise a FieldError if ``task`` would hold a sharded dataset (``source: shards|merlin``) in
    memory for ``what``: such datasets stream, and only the zero-shot embedding streams."""
    from ..schema import FieldError

    for i, name in enumerate(datasets if datasets is not None else config.task_datasets(task)):
        dataset = config.dataset(name)
        if dataset.sharded:
            where = f"datasets[{i}]" if task.datasets else "datasets"
            raise FieldError(where, f"task '{task.name}': {what} holds the whole dataset in memory, but '{name}' is "
                                    f"{dataset.source} (streamed; only zero-shot cell-type cells run on it); give this "
                                    "task an h5ad dataset, e.g. from `ssl-st data import`")

