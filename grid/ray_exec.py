"""Running a plan on Ray: every artifact build and every cell is one small remote task.

All Ray task calls of the project live here (the Tune calls in ``cluster/tune.py``), so that Ray's API churn (``local_mode`` gone, ``concurrency=``
deprecated, token auth turned on for new clusters) is absorbed in one module.

Scheduling: artifacts (generated datasets, pretrained models) are submitted first; each cell task
receives the ObjectRefs of the artifacts it needs, so Ray starts it as soon as they exist and runs
model-free cells while models still train. Resources are declared per stage (``resources:`` in the
config) at submission time. Results come back to the driver, which writes one Parquet file per cell
as soon as it finishes: an interrupted run loses only the cells in flight. With results on object
storage (``--results s3://...``, :mod:`grid.remote`) the tasks share no disk: each builds or
downloads what it needs in its node's cache and uploads what it builds.

Faults: a stage that asks for more than any node has is refused before anything is submitted (Ray
would queue it forever); while the run waits, a watchdog says what the tasks wait for; a worker that
dies (memory monitor, kernel OOM killer) is retried ``retries`` times, then becomes a failed row
that says so. Every run ends.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import ray

from .resources import RAY_BUILTIN, Resources
from .plan import Artifact, Cell, Plan
from .remote import Location, artifact_rel, remote_state
from .store import DONE, FAILED, ObjectResultStore, ResultStore
from .tasks import CellOutput

MAX_ERROR_CHARS = 4000
WATCH_EVERY_S = 10.0  # the watchdog speaks after this long without a finished cell, then as often
GB = 1024**3


class RunProgress(Protocol):
    """What :func:`execute` reports to (``grid.progress``: a live bar, or a line per cell)."""

    def start(self, total: int, artifacts: int) -> None: ...
    def advance(self, cell: Cell, status: str, duration_s: float) -> None: ...
    def note(self, message: str) -> None: ...


@dataclass(frozen=True)
class RunSummary:
    done: int
    failed: int
    wall_s: float


class Unschedulable(Exception):
    """A stage asks for more CPUs, GPUs or memory than any node of the cluster has."""


def connect(
    address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None, retries: int = 1,
    log_to_driver: bool = False,
) -> bool:
    """Join the cluster at ``address`` (else at ``RAY_ADDRESS``, which ``ray job submit`` sets for
    its entrypoint), or start an embedded local Ray; returns whether a cluster was joined. No-op
    (False) if already connected.

    Without an address the instance is always a new one (``address="local"``): a bare ``ray.init()``
    silently joins any cluster ``ray start`` left running on the machine, with other resources.
    ``retries`` also bounds Ray's retries of tasks killed by its memory monitor, which ignore
    ``max_retries`` and default to unbounded: a cell that always needs more memory than the node
    has was rerun forever, and the run never ended."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    # The owner (this driver) decides OOM retries from its own RayConfig, which reads RAY_* variables
    # at start; on a cluster this is the only handle we have. The embedded instance gets it twice.
    os.environ["RAY_task_oom_retries"] = str(retries)
    quiet = {"include_dashboard": False, "log_to_driver": log_to_driver, "logging_level": logging.WARNING}
    # Ray >= 2.59 announces its (good) token-auth default on every local start; keep the CLI readable.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        if address:
            ray.init(address=address, runtime_env=shipped_code(), log_to_driver=log_to_driver, logging_level=logging.WARNING)
            return True
        cache_bytecode()
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus,
                 _system_config={"task_oom_retries": retries}, **quiet)
        from . import reaper

        reaper.start()  # after a kill -9 of this process, Ray's agents would linger for minutes
        return False
    except Exception as err:  # Ray raises ConnectionError, RuntimeError or its own AuthenticationError
        hint = ""
        if "auth" in str(err).lower() or "token" in str(err).lower():
            hint = (
                "; the cluster uses token authentication: export RAY_AUTH_MODE=token and make its token "
                "available (~/.ray/auth_token or RAY_AUTH_TOKEN)"
            )
        raise ConnectionError(f"could not connect to Ray at {address or 'a new local instance'}: {err}{hint}") from err


BYTECODE_ENV = "PYTHONDONTWRITEBYTECODE"


def cache_bytecode() -> None:
    """Let this process and the Ray processes it starts keep the byte code Python compiles.

    An embedded run starts a dozen Python processes that import torch, Ray, scipy and scanpy: about
    5,700 modules. Where the byte code is not on disk (pip's ``--no-compile``, which the README's
    install uses because compiling all 250 MB of the stack's sources takes a minute that no run
    needs) and ``PYTHONDONTWRITEBYTECODE`` is set (as container images often do), every process
    compiled every module again, on every run. Cleared here, the first process to import a module
    writes its ``.pyc`` next to the source, where the others find it; a read-only environment is
    left as it is (Python then skips the write). Only for the embedded instance: a cluster's
    nodes keep the environment their operator gave them.
    """
    os.environ.pop(BYTECODE_ENV, None)
    sys.dont_write_bytecode = False


def shipped_code() -> dict:
    """The job's ``runtime_env``: this driver's ssl-st packages go to every worker, so the nodes of a
    cluster need only the dependencies, and a node with another (or no) ssl-st cannot run cells
    with code that differs from the driver's. Ray caches the upload by content hash."""
    import cluster
    import grid
    import ssl_st

    return {"py_modules": [ssl_st, cluster, grid], "excludes": ["__pycache__", "*.pyc"]}


def _options(resources: Resources, retries: int) -> dict:
    # An exception in our code is deterministic: retrying it only delays its row. Only a dead worker
    # (killed, crashed, node lost) is worth another attempt.
    options = {"num_cpus": resources.cpus, "num_gpus": resources.gpus, "max_retries": retries, "retry_exceptions": False}
    if resources.memory_gb:
        options["memory"] = int(resources.memory_gb * GB)
    if resources.custom:
        options["resources"] = dict(resources.custom)
    return options


def attempt_resources(resources: Resources, attempt: int, factor: float, nodes: list[dict[str, float]]) -> Resources:
    """What attempt ``attempt`` (1 = the first) of a task asks for: the declared memory times
    ``factor`` per earlier attempt (Snakemake's attempt-scaled resources; Ray cannot change a task's
    request between its own retries), capped at the most any node that fits the rest could give."""
    if attempt <= 1 or factor == 1 or not resources.memory_gb:
        return resources
    wanted = resources.memory_gb * factor ** (attempt - 1)
    rest = {**resources.request(), "memory": 0.0}
    room = [n["memory"] / GB for n in nodes if _fits(rest, [n])]
    if room:
        wanted = max(resources.memory_gb, min(wanted, max(room)))
    return replace(resources, memory_gb=round(wanted, 2))


# ---- what the cluster can run ------------------------------------------------------------------


def _node_shapes() -> list[dict[str, float]]:
    """CPU, GPU, memory (bytes) and custom resources of every live node."""
    shapes = []
    for node in ray.nodes():
        if node.get("Alive"):
            have = {k: float(v) for k, v in node["Resources"].items() if not k.startswith("node:")}
            shapes.append({"CPU": 0.0, "GPU": 0.0, "memory": 0.0, **have})
    return shapes


def _fits(request: dict[str, float], nodes: list[dict[str, float]]) -> bool:
    # Ray places a task on one node: the request must fit a single node, not the cluster's sum.
    return any(all(node.get(k, 0.0) >= v for k, v in request.items() if v) for node in nodes)


def _describe_nodes(nodes: list[dict[str, float]]) -> str:
    if not nodes:
        return "no live node"
    def custom(node: dict[str, float]) -> str:
        extra = sorted((k, v) for k, v in node.items() if k not in RAY_BUILTIN)
        return "".join(f", {v:g} {k}" for k, v in extra)

    shapes = sorted({(n["CPU"], n["GPU"], n["memory"], custom(n)) for n in nodes}, reverse=True)
    text = "; ".join(f"{c:g} CPUs, {g:g} GPUs, {m / GB:.1f} GB memory{x}" for c, g, m, x in shapes[:3])
    more = f" and {len(shapes) - 3} other sizes" if len(shapes) > 3 else ""
    return ("the largest node has " if len(shapes) == 1 else "its nodes have ") + text + more


def _is_built(artifact: Artifact, root: Path | Location) -> bool:
    """Locally: the manifest and checksums vouch for it. On object storage: the manifest and the
    objects' sizes (the cell task that downloads it checks the checksums)."""
    if isinstance(root, Location):
        return remote_state(artifact, root)[0] == "built"
    return artifact.is_built(root)


def artifacts_to_build(plan: Plan, cells: Sequence[Cell], root: Path | Location, *,
                       rebuild: bool = False) -> list[Artifact]:
    """What ``cells`` need that is not built yet (everything if ``rebuild``), dependencies first.
    Checking an artifact reads its files (checksums): do it once per run."""
    return [a for a in plan.needed_artifacts(cells) if rebuild or not _is_built(a, root)]


def unschedulable(plan: Plan, cells: Sequence[Cell], root: Path | Location, *, rebuild: bool = False,
                  to_build: Sequence[Artifact] | None = None) -> list[str]:
    """One message per stage this run would use whose request no live node can satisfy, and per
    task whose own nested tasks (Tune trials) could not be placed (``to_build``:
    :func:`artifacts_to_build`, if already known)."""
    config = plan.config
    if to_build is None:
        to_build = artifacts_to_build(plan, cells, root, rebuild=rebuild)
    stages = {a.stage for a in to_build} | {c.stage for c in cells}
    nodes = _node_shapes()
    problems = []
    for stage in sorted(stages):
        resources = config.resources_for(stage)
        if not _fits(resources.request(), nodes):
            problems.append(
                f"stage '{stage}' asks for {resources.describe()} per task, but no node can run it "
                f"({_describe_nodes(nodes)}); lower it under 'resources: {stage}:' in the config, "
                "or run on bigger nodes (--address; the embedded Ray takes --num-cpus)"
            )
    nested = {}
    for cell in cells:
        nested.update({(cell.task, what): (res, where) for what, (res, where) in cell.spec.nested_requests().items()})
    for (task, what), (resources, where) in sorted(nested.items(), key=lambda item: item[0]):
        if not _fits(resources.request(), nodes):
            problems.append(
                f"task '{task}' starts {what} that ask for {resources.describe()} each, but no node can run "
                f"one ({_describe_nodes(nodes)}); lower {where} of task '{task}' in the config"
            )
    return problems


def _worker_device() -> str:
    # Ray narrows CUDA_VISIBLE_DEVICES to the GPUs it assigned; a CPU-only task must not grab one.
    return "cuda" if ray.get_gpu_ids() else "cpu"


def _limit_threads() -> None:
    from ssl_st.threads import limit_threads

    # One thread pool per granted CPU: oversubscribed BLAS/OpenMP pools made small mixture fits
    # ~100x slower on a 2-core machine (torch, and sklearn's OpenBLAS through threadpoolctl).
    limit_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0))))


@ray.remote
def _build_artifact(artifact: Artifact, root: str, rebuild: bool, resources: Resources, roles: Sequence[str],
                    *inputs: str) -> str:
    from .stages import build_artifact

    _limit_threads()
    paths = {r: Path(p) for r, p in zip(roles, inputs)}
    return str(build_artifact(artifact, Path(root), paths, device=_worker_device(), rebuild=rebuild,
                              resources=resources))


@ray.remote
def _run_cell(cell: Cell, workdir: str, keys: Sequence[str], *paths: str) -> tuple[CellOutput, float]:
    from .stages import run_cell
    from .tasks import CellInputs

    _limit_threads()
    started = time.perf_counter()
    inputs = CellInputs.of(cell, dict(zip(keys, map(Path, paths))), workdir=Path(workdir), device=_worker_device())
    return run_cell(cell, inputs), time.perf_counter() - started


# Results on object storage (grid.remote): the same tasks, but each works in its node's cache and goes
# through the store. The ObjectRefs of the artifacts a task needs are passed only so that Ray starts it
# once they are built (and fails it if one failed); the task downloads the artifacts itself.


@ray.remote
def _build_artifact_remote(artifact: Artifact, location: Location, rebuild: bool, resources: Resources,
                           needed: dict[str, Artifact], *built: str) -> str:
    from .remote import build

    _limit_threads()
    return build(artifact, location, needed, device=_worker_device(), rebuild=rebuild, resources=resources)


@ray.remote
def _run_cell_remote(cell: Cell, location: Location, needed: Sequence[Artifact], *built: str) -> tuple[CellOutput, float]:
    from .remote import cell_inputs
    from .stages import run_cell

    _limit_threads()
    inputs = cell_inputs(cell, location, list(needed), device=_worker_device())  # downloads: not the cell's time
    started = time.perf_counter()
    return run_cell(cell, inputs), time.perf_counter() - started


# Ray's OOM message (its wording varies across versions): "Memory on the node (IP: ..., ID: ...) was
# 7.5GB used / 7.7GB limit" and, per killed worker, "(... pid=123, actual memory used=6.1GB, ...)".
_NODE_MEMORY = re.compile(r"Memory on the node \(IP: ([^,]+),[^)]*\)[^\n]*? was ([\d.]+\s*[KMGT]?B)(?: used)? / ([\d.]+\s*[KMGT]?B)")
_TASK_MEMORY = re.compile(r"memory used=([\d.]+\s*[KMGT]?B)")
# Worker deaths without a Python error: on Linux nearly always a SIGKILL from the kernel's OOM killer.
_WORKER_DEATHS = ("WorkerCrashedError", "ActorDiedError", "ActorUnavailableError", "LocalRayletDiedError")


def _worker_died(err: BaseException) -> bool:
    """A failure worth another attempt: the worker was killed or crashed, or ran out of memory. An
    exception raised by our own code would only fail the same way again."""
    cause = getattr(err, "cause", None) or err
    return (isinstance(err, ray.exceptions.OutOfMemoryError) or isinstance(cause, MemoryError)
            or type(err).__name__ in _WORKER_DEATHS or isinstance(err, ray.exceptions.NodeDiedError))


def _retry_note(cell: Cell, err: BaseException, attempt: int, total: int, now: Resources, then: Resources) -> str:
    why = "out of memory" if isinstance(err, ray.exceptions.OutOfMemoryError) else f"its worker died ({type(err).__name__})"
    more = f", now with memory_gb: {then.memory_gb:g} (was {now.memory_gb:g})" if then.memory_gb != now.memory_gb else ""
    return f"retrying {cell.label()}: {why}; attempt {attempt + 1} of {total}{more}"


def _memory_hint(stage: str, resources: Resources, used_gb: float | None = None) -> str:
    asked = f"it asked for {resources.memory_gb:g} GB" if resources.memory_gb else "it declared no memory"
    more = max(resources.memory_gb or 0, used_gb or 0) * 1.5
    more = f"{math.ceil(more)}" if more else "N"
    return (f"{asked}; reserve more so that fewer tasks share a node: resources: {stage}: "
            f"{{memory_gb: {more}}} in the config, then ssl-st run --retry-failed")


def _describe(err: BaseException, stage: str | None = None, resources: Resources | None = None) -> str:
    cause = getattr(err, "cause", None) or err
    hint = _memory_hint(stage, resources) if stage and resources else "reserve more with resources: <stage>: {memory_gb: N}"
    if isinstance(err, ray.exceptions.OutOfMemoryError):
        node, task = _NODE_MEMORY.search(str(err)), _TASK_MEMORY.search(str(err))
        seen = [f"the killed worker used {task[1]}"] if task else []
        if task and task[1].endswith("GB") and stage and resources:
            hint = _memory_hint(stage, resources, float(task[1][:-2]))
        seen += [f"node {node[1]} was at {node[2]} of {node[3]}"] if node else []
        seen = f" ({', '.join(seen)})" if seen else ""
        head = f"out of memory: Ray's memory monitor killed the worker{seen}; {hint}\n{err}"
    elif isinstance(cause, MemoryError):
        head = f"out of memory: MemoryError in the task; {hint}\n{err}"
    elif type(err).__name__ in _WORKER_DEATHS:
        head = (f"killed: the worker died without a Python error ({type(err).__name__}), most likely killed for "
                f"using too much memory (the kernel's OOM killer; check dmesg on the node); {hint}\n{err}")
    elif isinstance(err, ray.exceptions.RayTaskError):
        head = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}\n{err}"
    else:
        head = f"{type(cause).__name__}: {cause}"
        if not isinstance(err, ray.exceptions.RayError):
            head += "\n" + "".join(traceback.format_exception(err))
    return head[:MAX_ERROR_CHARS]


# ---- the watchdog ------------------------------------------------------------------------------


def _demand() -> list[tuple[dict[str, float], int]]:
    """Resource shapes of tasks waiting for a node, cluster-wide, from the GCS (no dashboard needed:
    the state API behind ``ray.util.state`` is served by the dashboard, which ``connect`` leaves off)."""
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(ray.get_runtime_context().gcs_address, timeout=5)
    return [
        (dict(request.bundle), int(request.count))
        for demand in status.resource_demands.ray_task_actor_demand
        for request in demand.bundles_by_count
    ]


def _shape(bundle: dict[str, float]) -> str:
    names = {"CPU": "CPUs", "GPU": "GPUs"}
    parts = [f"{v / GB:.1f} GB memory" if k == "memory" else f"{v:g} {names.get(k, k)}" for k, v in sorted(bundle.items()) if v]
    return ", ".join(parts) or "no resources"


def waiting_line(demand: list[tuple[dict[str, float], int]], nodes: list[dict[str, float]], running: int,
                 retrying: int = 0) -> str | None:
    """One line saying why tasks wait, or None when none waits for a node or is being retried."""
    total = sum(count for _, count in demand)
    if not total and not retrying:
        return None
    reasons = []
    for bundle, count in demand:
        if _fits(dict(bundle), nodes):
            reasons.append(f"{count} waiting for {_shape(bundle)} to free up")
        else:
            reasons.append(f"{count} infeasible: no node with {_shape(bundle)}")
    parts = [f"{total} task{'s' if total != 1 else ''} pending ({'; '.join(reasons)})"] if total else []
    parts += [f"{retrying} cell{'s' if retrying != 1 else ''} on a retry after its worker died"] if retrying else []
    return f"waiting: {'; '.join(parts)}; {running} cells not finished"


class _Watchdog:
    """Says, every ``every`` seconds without a finished cell, what the pending tasks wait for."""

    def __init__(self, say: Callable[[str], None], every: float = WATCH_EVERY_S) -> None:
        self._say = say
        self._every = every
        self._last = time.monotonic()
        self._quiet = False

    def progressed(self) -> None:
        self._last = time.monotonic()

    def tick(self, running: int, retrying: int = 0) -> None:
        if self._quiet or time.monotonic() - self._last < self._every:
            return
        self._last = time.monotonic()
        try:
            line = waiting_line(_demand(), _node_shapes(), running, retrying)
            if line:
                self._say(line)
        except Exception:  # a report must never end the run it reports on (e.g. Ray Client has no GCS access)
            self._quiet = True


class CellFeed:
    """The cells of a run not yet handed to Ray, handed over as their inputs are built.

    Ray dispatches the tasks it holds first come, first served. Handing it every cell at once queued
    the build that gates most of the grid (a pretraining, submitted once its dataset was built) and a
    search's trials behind every cell that was ready sooner: on two cores the demo's three models were
    trained one after the other, late, and its tuning ran last. So cells go to Ray once their
    artifacts are built, and only a few more than the cluster can run at once (Ray's pattern of
    limiting pending tasks), in the plan's order; what Ray then holds is short, and a build or a
    trial that arrives waits for a cell or two, not for the grid.
    """

    def __init__(self, cells: Sequence[Cell], artifact_refs: dict[str, object]) -> None:
        # a search (a cell that starts tasks of its own) runs its trials one after another: first,
        # or its trials would be the run's tail
        self.waiting = sorted(cells, key=lambda c: not c.spec.nested_requests())
        self._refs = artifact_refs
        self._unbuilt = {r for r in artifact_refs.values() if isinstance(r, ray.ObjectRef)}

    def unbuilt(self) -> list:
        """The builds still running, to wait on beside the cells (a finished build frees its cells)."""
        return list(self._unbuilt)

    def ready(self, room: int) -> list[Cell]:
        """Up to ``room`` waiting cells whose artifacts are all built (or failed: the cell then fails
        naming the artifact), in plan order; they leave the feed."""
        if self._unbuilt:
            built, _ = ray.wait(list(self._unbuilt), num_returns=len(self._unbuilt), timeout=0)
            self._unbuilt.difference_update(built)
        chosen: list[Cell] = []
        for cell in self.waiting:
            if len(chosen) >= room:
                break
            if not any(self._refs[k] in self._unbuilt for k in cell.artifact_keys):
                chosen.append(cell)
        taken = {id(c) for c in chosen}
        self.waiting = [c for c in self.waiting if id(c) not in taken]
        return chosen


# How often a run rereads the cluster's nodes: an autoscaler adds and removes them while cells run,
# and both the in-flight bound and a retry's memory follow what the cluster has now.
NODES_REFRESH_S = 10.0


def in_flight_limit(nodes: list[dict[str, float]]) -> int:
    """How many cells Ray may hold at once on ``nodes``: twice their CPUs (so that none idles while a
    finished cell's result is recorded), at least 4."""
    return max(4, int(2 * sum(node.get("CPU", 0.0) for node in nodes)))


def execute(
    plan: Plan,
    cells: Sequence[Cell],
    root: Path | Location,
    store: ResultStore | ObjectResultStore,
    progress: RunProgress,
    *,
    rebuild: bool = False,
    cluster_may_grow: bool = False,
    watch_every_s: float = WATCH_EVERY_S,
) -> RunSummary:
    """Build what ``cells`` need (all of it if ``rebuild``), run them, and record each one in
    ``store`` as it finishes. ``root`` is the results directory, or a location on object storage
    (:mod:`grid.remote`), where tasks work in their node's cache and go through the store.

    Raises :class:`Unschedulable` before submitting anything if a stage asks for more than any node
    has; with ``cluster_may_grow`` (an autoscaler may add bigger nodes, which Ray does not expose
    before it launches them) that is a note instead, and the watchdog reports the wait."""
    started = time.perf_counter()
    config = plan.config
    building = artifacts_to_build(plan, cells, root, rebuild=rebuild)
    problems = unschedulable(plan, cells, root, to_build=building)
    if problems and not cluster_may_grow:
        raise Unschedulable("\n".join(problems))
    artifact_refs: dict[str, object] = {}
    artifacts = plan.needed_artifacts(cells)
    to_build = {a.key for a in building}
    progress.start(len(cells), len(to_build))
    for problem in problems:
        progress.note(f"warning: {problem}; waiting in case the cluster's autoscaler adds such a node")
    remote = isinstance(root, Location)
    for artifact in artifacts:
        if artifact.key in to_build:
            roles = list(artifact.inputs)
            inputs = [artifact_refs[artifact.inputs[r]] for r in roles]
            # a builder that drives workers of its own (Ray Data actors, Ray Train workers) asks for
            # nothing itself: holding a CPU while it waits could starve the workers it waits on
            options = _options(Resources(cpus=0) if artifact.drives_workers else config.resources_for(artifact.stage),
                               config.retries)
            resources = config.resources_for(artifact.stage)
            if remote:
                needed = {r: plan.artifacts[artifact.inputs[r]] for r in roles}
                ref = _build_artifact_remote.options(**options, name=f"build:{artifact.name}")
                artifact_refs[artifact.key] = ref.remote(artifact, root, rebuild, resources, needed, *inputs)
            else:
                ref = _build_artifact.options(**options, name=f"build:{artifact.name}")
                artifact_refs[artifact.key] = ref.remote(artifact, str(root), rebuild, resources, roles, *inputs)
        elif remote:
            artifact_refs[artifact.key] = root.url(artifact_rel(artifact))
        else:
            artifact_refs[artifact.key] = str(artifact.path(root))

    nodes, nodes_read = _node_shapes(), time.monotonic()
    attempts: dict[str, int] = {}

    def submit(cell: Cell) -> object:
        # Cells are retried here rather than by Ray so that a rerun can ask for more memory.
        attempt = attempts[cell.cell_id] = attempts.get(cell.cell_id, 0) + 1
        resources = attempt_resources(config.resources_for(cell.stage), attempt, config.retry_memory_factor, nodes)
        keys = list(cell.artifact_keys)
        options = _options(resources, retries=0)
        built = [artifact_refs[k] for k in keys]
        if remote:
            return _run_cell_remote.options(**options, name=f"cell:{cell.label()}").remote(
                cell, root, [plan.artifacts[k] for k in keys], *built)
        return _run_cell.options(**options, name=f"cell:{cell.label()}").remote(
            cell, str(root.resolve() / "work" / cell.cell_id), keys, *built
        )

    if rebuild:  # --force: a tuning run must not resume from old trials
        for cell in cells:
            _clear_workdir(root, cell)
    pending: dict[object, Cell] = {}
    feed = CellFeed(cells, artifact_refs)

    def top_up() -> None:
        nonlocal nodes, nodes_read
        if time.monotonic() - nodes_read > NODES_REFRESH_S:
            nodes, nodes_read = _node_shapes(), time.monotonic()
        for cell in feed.ready(in_flight_limit(nodes) - len(pending)):
            pending[submit(cell)] = cell

    done = failed = 0
    watchdog = _Watchdog(progress.note, watch_every_s)
    try:
        top_up()
        while pending or feed.waiting:
            ready, _ = ray.wait(list(pending) + feed.unbuilt(), num_returns=1, timeout=1.0)
            if not ready:
                watchdog.tick(len(pending), retrying=sum(attempts[c.cell_id] > 1 for c in pending.values()))
            for ref in ready:
                if ref not in pending:  # an artifact was built: its cells may go now
                    continue
                watchdog.progressed()
                cell = pending.pop(ref)
                try:
                    output, duration = ray.get(ref)
                    store.write(cell, output.rows, duration_s=duration, details=output.details)
                    status = DONE
                except Exception as err:  # a failed cell is a row, never a silent gap
                    artifact_error = _artifact_error(plan, cell, artifact_refs)
                    attempt = attempts[cell.cell_id]
                    declared = config.resources_for(cell.stage)
                    resources = attempt_resources(declared, attempt, config.retry_memory_factor, nodes)
                    if artifact_error is None and _worker_died(err) and attempt <= config.retries:
                        then = attempt_resources(declared, attempt + 1, config.retry_memory_factor, nodes)
                        progress.note(_retry_note(cell, err, attempt, config.retries + 1, resources, then))
                        pending[submit(cell)] = cell
                        continue
                    duration = 0.0
                    error = artifact_error or _describe(err, cell.stage, resources)
                    if attempt > 1 and artifact_error is None:
                        error = f"{error.splitlines()[0]} (after {attempt} attempts)\n" + "\n".join(error.splitlines()[1:])
                    store.write(cell, None, duration_s=duration, error=error[:MAX_ERROR_CHARS])
                    status = FAILED
                done += status == DONE
                failed += status == FAILED
                progress.advance(cell, status, duration)
            top_up()
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return RunSummary(done, failed, time.perf_counter() - started)


def _clear_workdir(root: Path | Location, cell: Cell) -> None:
    if isinstance(root, Location):
        root.delete_tree(root.path("work", cell.cell_id))
        return
    workdir = root.resolve() / "work" / cell.cell_id
    if workdir.exists():
        shutil.rmtree(workdir)


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
            why = _describe(err, artifact.stage, plan.config.resources_for(artifact.stage))
            return f"could not build {artifact.kind} '{artifact.name}': {why}"[:MAX_ERROR_CHARS]
    return None
