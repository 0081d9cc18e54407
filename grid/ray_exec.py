"""Running a plan on Ray: every artifact build and every cell is one small remote task.

All Ray task calls of the project live here (the Tune calls in ``cluster/tune.py``), so that Ray's API churn (``local_mode`` gone, ``concurrency=``
deprecated, token auth turned on for new clusters) is absorbed in one module.

Scheduling: artifacts (generated datasets, pretrained models) are submitted first; each cell task
receives the ObjectRefs of the artifacts it needs, so Ray starts it as soon as they exist and runs
model-free cells while models still train. Resources are declared per stage (``resources:`` in the
config) at submission time. Results come back to the driver, which writes one Parquet file per cell
as soon as it finishes: an interrupted run loses only the cells in flight.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import ray

from .resources import Resources
from .plan import Artifact, Cell, Plan
from .store import DONE, FAILED, ResultStore

MAX_ERROR_CHARS = 4000


class RunProgress(Protocol):
    """What :func:`execute` reports to (``grid.progress``: a live bar, or a line per cell)."""

    def start(self, total: int, artifacts: int) -> None: ...
    def advance(self, cell: Cell, status: str, duration_s: float) -> None: ...


@dataclass(frozen=True)
class RunSummary:
    done: int
    failed: int
    wall_s: float


def connect(address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Join the cluster at ``address``, or start an embedded local Ray; no-op if already connected."""
    if ray.is_initialized():
        return
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    # Ray >= 2.59 announces its (good) token-auth default on every local start; keep the CLI readable.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, **quiet)
    except Exception as err:  # Ray raises ConnectionError, RuntimeError or its own AuthenticationError
        hint = ""
        if "auth" in str(err).lower() or "token" in str(err).lower():
            hint = (
                "; the cluster uses token authentication: export RAY_AUTH_MODE=token and make its token "
                "available (~/.ray/auth_token or RAY_AUTH_TOKEN)"
            )
        raise ConnectionError(f"could not connect to Ray at {address or 'a new local instance'}: {err}{hint}") from err


def _options(resources: Resources) -> dict:
    options = {"num_cpus": resources.cpus, "num_gpus": resources.gpus, "max_retries": 1}
    if resources.memory_gb:
        options["memory"] = int(resources.memory_gb * 1024**3)
    return options


def _worker_device() -> str:
    # Ray narrows CUDA_VISIBLE_DEVICES to the GPUs it assigned; a CPU-only task must not grab one.
    return "cuda" if ray.get_gpu_ids() else "cpu"


def _limit_threads() -> None:
    from ssl_st.threads import limit_threads

    # One thread pool per granted CPU: oversubscribed BLAS/OpenMP pools made small mixture fits
    # ~100x slower on a 2-core machine (torch, and sklearn's OpenBLAS through threadpoolctl).
    limit_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0))))


@ray.remote
def _build_artifact(artifact: Artifact, root: str, rebuild: bool, roles: Sequence[str], *inputs: str) -> str:
    from .stages import build_artifact

    _limit_threads()
    paths = {r: Path(p) for r, p in zip(roles, inputs)}
    return str(build_artifact(artifact, Path(root), paths, device=_worker_device(), rebuild=rebuild))


@ray.remote
def _run_cell(cell: Cell, workdir: str, keys: Sequence[str], *paths: str) -> tuple[list, float]:
    from .stages import run_cell
    from .tasks import CellInputs

    _limit_threads()
    started = time.perf_counter()
    inputs = CellInputs.of(cell, dict(zip(keys, map(Path, paths))), workdir=Path(workdir), device=_worker_device())
    return run_cell(cell, inputs), time.perf_counter() - started


def _describe(err: BaseException) -> str:
    cause = getattr(err, "cause", None) or err
    head = f"{type(cause).__name__}: {cause}"
    if isinstance(err, ray.exceptions.RayTaskError):
        head = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}\n{err}"
    elif not isinstance(err, ray.exceptions.RayError):
        head += "\n" + "".join(traceback.format_exception(err))
    return head[:MAX_ERROR_CHARS]


def execute(
    plan: Plan,
    cells: Sequence[Cell],
    root: Path,
    store: ResultStore,
    progress: RunProgress,
    *,
    rebuild: bool = False,
) -> RunSummary:
    """Build what ``cells`` need (all of it if ``rebuild``), run them, and record each one in
    ``store`` as it finishes."""
    started = time.perf_counter()
    config = plan.config
    artifact_refs: dict[str, object] = {}
    artifacts = plan.needed_artifacts(cells)
    to_build = {a.key for a in artifacts if rebuild or not a.is_built(root)}
    progress.start(len(cells), len(to_build))
    for artifact in artifacts:
        if artifact.key in to_build:
            roles = list(artifact.inputs)
            inputs = [artifact_refs[artifact.inputs[r]] for r in roles]
            ref = _build_artifact.options(**_options(config.resources_for(artifact.stage)), name=f"build:{artifact.name}")
            artifact_refs[artifact.key] = ref.remote(artifact, str(root), rebuild, roles, *inputs)
        else:
            artifact_refs[artifact.key] = str(artifact.path(root))

    pending: dict[object, Cell] = {}
    for cell in cells:
        workdir = root.resolve() / "work" / cell.cell_id
        if rebuild and workdir.exists():  # --force: a tuning run must not resume from old trials
            shutil.rmtree(workdir)
        keys = list(cell.artifact_keys)
        options = _options(config.resources_for(cell.stage))
        ref = _run_cell.options(**options, name=f"cell:{cell.label()}").remote(
            cell, str(workdir), keys, *[artifact_refs[k] for k in keys]
        )
        pending[ref] = cell

    done = failed = 0
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                cell = pending.pop(ref)
                try:
                    records, duration = ray.get(ref)
                    store.write(cell, records, duration_s=duration)
                    status = DONE
                except Exception as err:  # a failed cell is a row, never a silent gap
                    duration = 0.0
                    store.write(cell, None, duration_s=duration, error=_artifact_error(plan, cell, artifact_refs) or _describe(err))
                    status = FAILED
                done += status == DONE
                failed += status == FAILED
                progress.advance(cell, status, duration)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return RunSummary(done, failed, time.perf_counter() - started)


def _artifact_error(plan: Plan, cell: Cell, refs: dict[str, object]) -> str | None:
    """If the cell failed because an artifact it needs failed to build, say which and why."""
    for key in cell.artifact_keys:
        ref = refs[key]
        if isinstance(ref, str):
            continue
        try:
            ray.get(ref, timeout=0)
        except ray.exceptions.GetTimeoutError:
            continue
        except Exception as err:
            artifact = plan.artifacts[key]
            return f"could not build {artifact.kind} '{artifact.name}': {_describe(err)}"[:MAX_ERROR_CHARS]
    return None
