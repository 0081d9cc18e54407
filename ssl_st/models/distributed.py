"""Data-parallel pretraining on Ray Train: the loop of :class:`~ssl_st.models.training.TrainingLoop`
on ``workers`` processes (a ``TorchTrainer``; DDP over gloo on CPUs, nccl on GPUs), a checkpoint
after every epoch, and a resume from the last one when a worker or its node is lost.

Two data paths, one loop (:class:`~ssl_st.models.training.TrainingLoop` with a batch source):

- **in memory** (``inputs`` a CSR matrix): every worker holds the training matrix (sent once through
  the object store) and steps on every ``workers``-th cell of each global batch, so the number of
  steps, the schedule and, with one worker, the weights are those of
  :meth:`Pretraining.train <ssl_st.models.registry.Pretraining.train>` for the same seed;
- **streamed** (``inputs`` a shard directory or Merlin split, :class:`~ssl_st.shards.Source`): the
  trainer gets a Ray Data dataset of the training cells (``datasets={"train": ...}``) and each
  worker trains on its shard of it (``ray.train.get_dataset_shard``) through a shuffle buffer: files
  in a new seeded order every epoch, minibatches shuffled within the buffer, a fixed held-out set
  for validation (:mod:`ssl_st.shards.stream`). No process holds the matrix; memory is bounded by
  the shuffle buffer and the read-ahead.

A checkpoint holds the whole loop state (weights, optimiser, scheduler, the best epoch so far and
every random generator, dropout's included), so a resumed run continues as if it had not stopped:
it repeats the interrupted epoch only. A streamed epoch's file order and shuffle buffer derive from
``(seed, epoch)``, so a resumed epoch reshuffles with the same epoch seed and reads its files in the
same order again.

>>> model = train_data_parallel(RandomMaskConfig(epochs=20), inputs, vocabulary, Architecture(),
...                             workers=2, storage="results/train")                  # doctest: +SKIP
>>> model = train_data_parallel(RandomMaskConfig(epochs=20), open_source("atlas.shards"), vocabulary,
...                             Architecture(), workers=2, storage="results/train")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import scipy.sparse as sp

    from ..genes import Vocabulary
    from ..shards.source import Source
    from ..shards.stream import StreamOptions
    from ..programs import Programs
    from .architecture import Architecture
    from .base import SSLModel
    from .registry import Pretraining

LOOP_STATE = "loop.pt"


@dataclass(frozen=True)
class Workers:
    """Where the loop runs: ``count`` Ray Train workers, each with ``cpus`` (torch threads), a GPU if
    ``use_gpu`` and the custom ``resources`` nodes declare (``ray start --resources``);
    ``max_failures`` restarts from the last checkpoint before the run fails."""

    count: int = 1
    cpus: float = 1.0
    use_gpu: bool = False
    max_failures: int = 2
    resources: tuple[tuple[str, float], ...] = ()  # Ray custom resources per worker, e.g. (("a100", 1),)

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"workers must be at least 1 (got {self.count})")
        if self.cpus <= 0:
            raise ValueError(f"cpus per worker must be positive (got {self.cpus})")
        if self.max_failures < 0:
            raise ValueError(f"max_failures must be >= 0 (got {self.max_failures})")


def _worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: the same loop as one process, on its share of every batch."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from ..threads import limit_threads
    from .training import TrainingLoop

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    limit_threads(max(1, int(config["cpus"])))
    plan: Pretraining = config["plan"]
    loss_fn, _ = plan.loss(config["vocabulary"], config["programs"])
    torch.manual_seed(config["seed"])  # the same initial weights on every worker, and as one process
    module = config["architecture"].build(len(config["vocabulary"]), plan.network)
    device = ray.train.torch.get_device()
    network = ray.train.torch.prepare_model(module, move_to_device=device)  # DDP when world > 1
    if config.get("stream") is not None:  # this worker's shard of the dataset, through the shuffle buffer
        from ..shards.stream import StreamBatches

        inputs = StreamBatches(ray.train.get_dataset_shard("train"), config["stream"], ray.get(config["validation"]),
                               seed=config["seed"], rank=rank, world=world, device=device, clock=config["clock"])
    else:
        inputs = ray.get(config["inputs"])
    loop = TrainingLoop(network, loss_fn, inputs, plan, seed=config["seed"], device=device, module=module,
                        rank=rank, world=world, log_dir=config["log_dir"] if rank == 0 else None)
    resumed = ray.train.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as folder:
            states = torch.load(Path(folder) / LOOP_STATE, weights_only=False)
        loop.load_state_dict({**states["loop"], "worker": states["workers"][rank]})
    while loop.epoch < plan.epochs:
        train_loss, val_loss = loop.run_epoch()
        worker_states = _gather(loop.worker_state(), world)
        metrics = {"epoch": loop.epoch - 1, "train_loss": train_loss, "val_loss": val_loss,
                   "resumed": int(resumed is not None)}
        if rank == 0:
            print(f"{plan.name}: epoch {loop.epoch}/{plan.epochs}, train {train_loss:.4f}, val {val_loss:.4f}"
                  f" ({world} worker{'s' if world > 1 else ''})", flush=True)
            with tempfile.TemporaryDirectory() as folder:
                torch.save({"loop": loop.state_dict(), "workers": worker_states}, Path(folder) / LOOP_STATE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        else:
            ray.train.report(metrics, checkpoint=None)


def _gather(value: Any, world: int) -> list[Any]:
    """``value`` of every worker, in rank order (each worker's random states)."""
    if world == 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, value)
    return out


@contextlib.contextmanager
def _quiet_data() -> Iterator[None]:
    """No Ray Data progress bars in the workers' logs (the trainer copies the DataContext as it
    starts); an epoch line per epoch says enough. The process's context is restored afterwards."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars
    ctx.enable_progress_bars = False
    try:
        yield
    finally:
        ctx.enable_progress_bars = saved


@dataclass(frozen=True)
class _Stream:
    """The driver's side of a streamed run: what the workers get, and the facts for the record."""

    config: dict[str, Any]  # stream plan, validation cells (an object ref), the epoch clock
    dataset: Any  # the Ray Data dataset of the training cells
    record: dict[str, Any]


def _stream(plan: Pretraining, source: Source, vocabulary: Vocabulary, *, seed: int, workers: int,
            options: StreamOptions) -> _Stream:
    """Map the source's genes, draw and read the held-out cells, build the dataset."""
    import ray

    from ..shards.inputs import plan_inputs
    from ..shards.stream import StreamPlan, epoch_clock, held_out_rows, read_validation, shard_dataset

    inputs, coverage = plan_inputs(source.var(), vocabulary, values=source.values, dense=source.dense)
    held_out = held_out_rows(source.n_rows, plan.validation_fraction, seed, options.validation_cells)
    stream = StreamPlan(inputs, source.n_rows - len(held_out), len(source.files), plan.batch_size, plan.drop_last,
                        options)
    if stream.steps_per_epoch(workers) < 1:
        raise ValueError(f"{source.path}: {stream.n_train} training cells over {workers} worker(s) cannot fill one "
                         f"batch of {plan.batch_size}; lower batch_size or the number of workers")
    validation = read_validation(source, inputs, held_out)
    clock = epoch_clock()
    dataset = shard_dataset(source, held_out, seed=seed, clock=clock, options=options)
    record = {"data": "stream", "source": str(source.path), "files": len(source.files), "train_cells": stream.n_train,
              "validation_cells": int(len(held_out)), "options": asdict(options), "coverage": coverage.as_dict()}
    return _Stream({"stream": stream, "validation": ray.put(validation), "clock": clock}, dataset, record)


def train_data_parallel(plan: Pretraining, inputs: sp.csr_matrix | Source | str | Path, vocabulary: Vocabulary,
                        architecture: Architecture, *, workers: Workers | int = 1, programs: Programs | None = None,
                        seed: int = 0, storage: str | Path, name: str = "pretrain", log_dir: str | Path | None = None,
                        stream: StreamOptions | None = None) -> SSLModel:
    """Pretrain ``plan``'s objective on Ray Train (the Ray this process is connected to, else the one in
    ``RAY_ADDRESS``, else a new local one) and return the model with its best validation epoch's weights, as
    :meth:`Pretraining.train` does. ``storage/name`` is Ray Train's run directory (the checkpoints
    of every epoch, the last two kept); within the run, a lost worker resumes from the last one.

    ``inputs``: model input in memory (a CSR matrix in ``vocabulary`` order), or a shard directory /
    Merlin split (a :class:`~ssl_st.shards.Source` or a shard directory's path) to stream, with
    ``stream``'s settings (the module doc says how each trains)."""
    import ray
    import ray.data
    import ray.train
    import scipy.sparse as sp
    import torch
    from ray.train.torch import TorchTrainer

    from .base import SSLModel

    if plan.needs_programs and not programs:
        raise ValueError(f"{plan.name} pretraining needs gene programs (a GMT file)")
    workers = workers if isinstance(workers, Workers) else Workers(count=workers)
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False, log_to_driver=True)
    storage = Path(storage).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    config = {"plan": plan, "vocabulary": vocabulary, "architecture": architecture, "programs": programs, "seed": seed,
              "cpus": workers.cpus, "log_dir": str(log_dir) if log_dir is not None else None}
    trainer_data: dict[str, Any] = {}
    streamed = None
    if sp.issparse(inputs):
        config["inputs"] = ray.put(inputs)
    else:
        from ..shards.source import Source, open_source
        from ..shards.stream import StreamOptions

        source = inputs if isinstance(inputs, Source) else open_source(inputs)
        streamed = _stream(plan, source, vocabulary, seed=seed, workers=workers.count, options=stream or StreamOptions())
        config.update(streamed.config)
        # Ray Train splits the stream over the workers with streaming_split(equal=True): equal rows,
        # so equal steps. Order preserved: each worker gets its blocks in the epoch's file order.
        trainer_data = {"datasets": {"train": streamed.dataset}, "dataset_config": ray.train.DataConfig(
            execution_options=ray.data.ExecutionOptions(preserve_order=True))}
    run_config = ray.train.RunConfig(
        name=name, storage_path=str(storage),
        failure_config=ray.train.FailureConfig(max_failures=workers.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
    )
    scaling = ray.train.ScalingConfig(num_workers=workers.count, use_gpu=workers.use_gpu,
                                      resources_per_worker={"CPU": workers.cpus, **dict(workers.resources)})
    with _quiet_data():
        result = TorchTrainer(_worker_loop, train_loop_config=config, scaling_config=scaling, run_config=run_config,
                              **trainer_data).fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{storage / name}: the training run ended without a checkpoint")
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / LOOP_STATE, weights_only=False)["loop"]
    module = architecture.build(len(vocabulary), plan.network)
    module.load_state_dict(state["best"][2])
    module.eval()
    history = {**state["history"], "best_epoch": state["best"][1], "epochs_run": state["epoch"], "steps": state["steps"]}
    _, facts = plan.loss(vocabulary, programs)
    # whether the attempt that finished started from a checkpoint (after a lost worker or node)
    resumed = bool((result.metrics or {}).get("resumed", 0))
    training = {**asdict(plan), **facts, "seed": seed, **history, "workers": workers.count, "resumed": resumed}
    if streamed is not None:
        training["stream"] = streamed.record
    return SSLModel(module, vocabulary, architecture, plan.name, training)
