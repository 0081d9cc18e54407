"""Task kinds: one typed spec per kind of task, registered once in :data:`TASK_KINDS`.

A kind's spec is what a task of that kind says in ``experiments.yaml``; it expands itself into
cells (:meth:`TaskSpec.cells`) and each of its cells carries a typed spec that runs it. The built-in
kinds are ``cell-type`` (:mod:`grid.tasks.celltype`) and ``spatial-clustering`` /
``tune-clustering`` (:mod:`grid.tasks.clustering`).
"""

from .base import TASK_KINDS, CellInputs, CellOutput, CellSpec, Row, TaskSpec

__all__ = ["TASK_KINDS", "CellInputs", "CellOutput", "CellSpec", "Row", "TaskSpec"]
