"""Pretraining input streamed from shards: each Ray Train worker reads its share of a Ray Data
dataset and trains on shuffled minibatches, so no process ever holds the whole matrix.

The sampling is **block shuffling** (the scheme scDataset showed to match true random sampling at a
fraction of its I/O; reading shards in a fixed order biases training towards whatever the files
are sorted by):

1. every epoch the order of the shard files (the blocks) is redrawn from a generator seeded with
   ``(seed, epoch)`` (:func:`epoch_order`), and the files are read in that order, one read task a
   file (:func:`shard_dataset`, a Ray Data :class:`~ray.data.Datasource`);
2. Ray Train splits that stream over the workers (``streaming_split(equal=True)``: every worker gets
   the same number of rows, so all of them take the same number of optimiser steps, which DDP needs);
3. each worker fills a local buffer of at least ``shuffle_buffer`` rows from its blocks, shuffles it
   with a generator seeded with ``(seed, epoch, rank)`` and cuts it into minibatches
   (:func:`buffered_batches`), carrying the remainder into the next fill.

Every training row comes exactly once per epoch. Rows are mapped into the model's vocabulary per
block (:func:`ssl_st.shards.inputs.batch_inputs`, sparse) and densified per minibatch only.

Validation is a fixed set of cells drawn once from ``seed`` (the same draw as the in-memory loop's:
the first ``round(n * validation_fraction)`` of a seeded permutation, at most
``StreamOptions.validation_cells``), read once by the driver and left out of every read task, so the
validation loss is comparable across epochs.

The epoch a read uses comes from a small :func:`epoch_clock` actor that the workers set before each
epoch (Ray Train builds the dataset once, and Ray Data's own per-execution reseeding counts
executions, which restart at 0 when a lost worker makes Ray Train rebuild its worker group). So a
run resumed from the checkpoint of epoch k reshuffles epoch k+1 with the same epoch seed and reads its
files in the same order as the interrupted attempt did. Which worker gets which file, and so which
rows meet in a minibatch, depends on timing with more than one worker: a streamed run is reproducible
in its file orders and held-out cells, not bit for bit (the in-memory path is).

Importing this module imports numpy, scipy and pyarrow, not Ray or torch: the sampler
(:func:`epoch_order`, :func:`buffered_batches`, :func:`read_block`) runs without either.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from .inputs import InputPlan, batch_inputs

if TYPE_CHECKING:
    import torch

    from .source import Source

SHARD_COLUMN = "shard"  # the index (in the source's file list) of the file a row came from
ROW_COLUMN = "row"  # the cell's row in the dataset


@dataclass(frozen=True)
class StreamOptions:
    """How the shards stream into training.

    ``shuffle_buffer``: rows a worker gathers before shuffling and cutting minibatches; a buffer that
    spans several shards mixes them (shards of 32,768 cells and the default buffer mix the rows of
    one to two shards at a time: write training shards smaller, ``--rows-per-shard 4096``, for a
    finer block shuffle). ``validation_cells``: the most held-out cells (they are read once and held
    by every worker as a sparse matrix). ``read_concurrency``: shard files read at once."""

    shuffle_buffer: int = 16_384
    validation_cells: int | None = 50_000
    read_concurrency: int = 2

    def __post_init__(self) -> None:
        if self.shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be at least 1 row (got {self.shuffle_buffer})")
        if self.validation_cells is not None and self.validation_cells < 0:
            raise ValueError(f"validation_cells must be >= 0 or None (got {self.validation_cells})")
        if self.read_concurrency < 1:
            raise ValueError(f"read_concurrency must be at least 1 (got {self.read_concurrency})")


# ---------------------------------------------------------------------------------------------------
# The sampler: plain numpy, testable without Ray


def epoch_order(seed: int, epoch: int, n_files: int) -> np.ndarray:
    """The order the shard files are read in during ``epoch``: a permutation drawn from ``(seed,
    epoch)`` alone, so a resumed epoch repeats it."""
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n_files)


def buffer_rng(seed: int, epoch: int, rank: int) -> np.random.Generator:
    """The generator of worker ``rank``'s shuffle buffer in ``epoch``."""
    return np.random.default_rng([seed, epoch, rank, 0xB0F])


def held_out_rows(n_rows: int, fraction: float, seed: int, cap: int | None = None) -> np.ndarray:
    """The validation cells (sorted row numbers): the in-memory loop's draw (the first
    ``round(n * fraction)`` of ``default_rng(seed).permutation(n)``), at most ``cap`` of them."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_val = int(round(n_rows * fraction))
    if cap is not None:
        n_val = min(n_val, cap)
    return np.sort(order[:n_val])


@dataclass(frozen=True)
class Rows:
    """Cells in vocabulary order (sparse) and their row numbers in the dataset."""

    matrix: sp.csr_matrix
    ids: np.ndarray

    def __len__(self) -> int:
        return self.matrix.shape[0]


def _stack(parts: list[Rows]) -> Rows:
    if len(parts) == 1:
        return parts[0]
    return Rows(sp.vstack([p.matrix for p in parts], format="csr"), np.concatenate([p.ids for p in parts]))


def buffered_batches(blocks: Iterable[Rows], batch_size: int, buffer_rows: int, rng: np.random.Generator, *,
                     drop_last: bool = False) -> Iterator[Rows]:
    """Minibatches of ``batch_size`` rows from ``blocks``: gather at least ``buffer_rows`` rows,
    shuffle them, emit every full batch, carry the remainder into the next fill; at the end the rest
    is shuffled and emitted too (its last batch short, or dropped with ``drop_last``). Every row
    comes out exactly once, and at most ``buffer_rows + batch_size`` plus one block are held."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1 (got {batch_size})")
    pending: list[Rows] = []
    held = 0
    for block in blocks:
        if not len(block):
            continue
        pending.append(block)
        held += len(block)
        if held < max(buffer_rows, batch_size):
            continue
        pool = _stack(pending)
        order = rng.permutation(held)
        full = held - held % batch_size
        for start in range(0, full, batch_size):
            rows = order[start : start + batch_size]
            yield Rows(pool.matrix[rows], pool.ids[rows])
        rest = order[full:]
        pending = [Rows(pool.matrix[rest], pool.ids[rest])] if len(rest) else []
        held = len(rest)
    if held:
        pool = _stack(pending)
        order = rng.permutation(held)
        for start in range(0, held, batch_size):
            rows = order[start : start + batch_size]
            if drop_last and len(rows) < batch_size:
                break
            yield Rows(pool.matrix[rows], pool.ids[rows])


# ---------------------------------------------------------------------------------------------------
# Reading shard files


def source_columns(source: Source) -> tuple[str, ...]:
    """The columns training reads: the expression only."""
    return ("X",) if source.dense else ("indices", "counts")


@dataclass(frozen=True)
class BlockSpec:
    """One read task: a file, the row number of its first cell, and which of its cells to leave out
    (positions in the file: the held-out validation cells)."""

    path: str
    index: int  # the file's position in the source's file list
    offset: int
    rows: int  # cells in the file
    columns: tuple[str, ...]
    drop: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def kept(self) -> int:
        return self.rows - len(self.drop)


def block_specs(source: Source, held_out: np.ndarray) -> tuple[BlockSpec, ...]:
    """A :class:`BlockSpec` per file of ``source``, each leaving out its share of ``held_out``."""
    counts = source.file_rows
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    held_out = np.asarray(held_out, dtype=np.int64)
    columns = source_columns(source)
    specs = []
    for i, (path, n) in enumerate(zip(source.files, counts)):
        lo, hi = np.searchsorted(held_out, [offsets[i], offsets[i] + n])
        specs.append(BlockSpec(str(path), i, int(offsets[i]), int(n), columns, held_out[lo:hi] - offsets[i]))
    return tuple(specs)


def read_block(spec: BlockSpec) -> pa.Table:
    """The file's cells but the held-out ones, with their row numbers and the file's index."""
    table = pq.read_table(spec.path, columns=list(spec.columns))
    if table.num_rows != spec.rows:
        raise ValueError(f"{spec.path}: has {table.num_rows} rows, the manifest says {spec.rows}; "
                         "the shard changed since it was checked: write the directory again")
    rows = np.arange(spec.offset, spec.offset + spec.rows, dtype=np.int64)
    if len(spec.drop):
        keep = np.ones(spec.rows, dtype=bool)
        keep[spec.drop] = False
        table, rows = table.filter(pa.array(keep)), rows[keep]
    table = table.append_column(ROW_COLUMN, pa.array(rows))
    return table.append_column(SHARD_COLUMN, pa.array(np.full(len(rows), spec.index, dtype=np.int32)))


def block_rows(plan: InputPlan, table: pa.Table) -> Rows:
    """A block read by :func:`read_block` as model input (vocabulary order, normalised, sparse)."""
    return Rows(batch_inputs(plan, table), table.column(ROW_COLUMN).to_numpy())


def local_blocks(specs: tuple[BlockSpec, ...], order: Iterable[int]) -> Iterator[pa.Table]:
    """The blocks in ``order`` read in this process with pyarrow (no Ray): the sampler's reference."""
    for i in order:
        yield read_block(specs[i])


def read_validation(source: Source, plan: InputPlan, rows: np.ndarray) -> sp.csr_matrix:
    """The cells ``rows`` (sorted) as model input, in that order; reads only the files holding them."""
    parts = []
    for spec in block_specs(source, rows):
        if not len(spec.drop):
            continue
        table = pq.read_table(spec.path, columns=list(spec.columns)).take(pa.array(spec.drop))
        parts.append(batch_inputs(plan, table))
    if not parts:
        n = plan.mapping.coverage.vocabulary_genes if plan.mapping is not None else plan.n_genes
        return sp.csr_matrix((0, n), dtype=np.float32)
    return sp.vstack(parts, format="csr")


# ---------------------------------------------------------------------------------------------------
# Ray: the dataset, the epoch clock, and a worker's batch source


@functools.cache
def _clock_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class EpochClock:
        """The epoch the next read of the dataset belongs to (set by the workers)."""

        def __init__(self) -> None:
            self.epoch = 0

        def set(self, epoch: int) -> None:
            self.epoch = epoch

        def get(self) -> int:
            return self.epoch

    return EpochClock


def epoch_clock() -> Any:
    """A new epoch clock actor (no CPU) on this process's node; pass it to :func:`shard_dataset` and
    the workers. Placed where Ray likes, it could land on a worker node, and losing that node would
    lose the clock and end a run that should resume; on the driver's node it lives as long as the run."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return _clock_class().options(scheduling_strategy=here).remote()


@functools.cache
def _datasource_class() -> type:
    import ray
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class ShardStream(Datasource):
        """The shard files of a source, one read task a file, in the epoch's order."""

        def __init__(self, specs: tuple[BlockSpec, ...], seed: int, clock: Any) -> None:
            super().__init__()
            self.specs, self.seed, self.clock = specs, seed, clock

        def get_name(self) -> str:
            return "ShardStream"

        def estimate_inmemory_data_size(self) -> int:
            return sum(_block_bytes(s) for s in self.specs)

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[Any]:
            # Called as each execution (each epoch) starts, after every worker set the clock.
            epoch = ray.get(self.clock.get.remote()) if self.clock is not None else 0
            tasks = []
            for i in epoch_order(self.seed, epoch, len(self.specs)):
                spec = self.specs[i]
                if not spec.kept:
                    continue
                meta = BlockMetadata(num_rows=spec.kept, size_bytes=_block_bytes(spec), input_files=(spec.path,),
                                     exec_stats=None)
                tasks.append(ReadTask(functools.partial(_read_task, spec), meta, per_task_row_limit=per_task_row_limit))
            return tasks

    return ShardStream


def _block_bytes(spec: BlockSpec) -> int:
    import os

    return int(os.path.getsize(spec.path) * 2)  # Arrow in memory: roughly twice the compressed file


def _read_task(spec: BlockSpec) -> list[pa.Table]:
    return [read_block(spec)]


def shard_dataset(source: Source, held_out: np.ndarray, *, seed: int, clock: Any,
                  options: StreamOptions | None = None) -> Any:
    """The training cells of ``source`` (all but ``held_out``) as a Ray Data dataset whose every
    execution reads the files in :func:`epoch_order` of the epoch ``clock`` holds. Read tasks ask for
    no CPU: the training workers hold the cores (a read waiting for one would wait forever)."""
    import ray.data

    options = options or StreamOptions()
    specs = block_specs(source, held_out)
    return ray.data.read_datasource(_datasource_class()(specs, seed, clock), num_cpus=0,
                                    concurrency=options.read_concurrency, override_num_blocks=max(len(specs), 1))


@dataclass(frozen=True)
class StreamPlan:
    """What every worker needs to turn its stream into batches (sent in the trainer's config)."""

    inputs: InputPlan
    n_train: int  # training cells over all workers
    n_files: int
    batch_size: int  # the global batch
    drop_last: bool
    options: StreamOptions

    def worker_batch(self, world: int) -> int:
        """Each worker's share of a global batch."""
        return max(1, math.ceil(self.batch_size / world))

    def worker_rows(self, world: int) -> int:
        """Rows each worker gets an epoch (``streaming_split(equal=True)`` drops the remainder)."""
        return self.n_train // world

    def steps_per_epoch(self, world: int) -> int:
        per_epoch = self.worker_rows(world) / self.worker_batch(world)
        return int(per_epoch) if self.drop_last else math.ceil(per_epoch)


class StreamBatches:
    """A Ray Train worker's batch source (:class:`ssl_st.models.training.BatchSource`): its shard of
    the dataset (``ray.train.get_dataset_shard``) through the shuffle buffer, and the held-out cells.

    The file order and buffer of an epoch derive from ``(seed, epoch)`` alone, so there is no state
    to checkpoint beyond the epoch number; :meth:`epoch_facts` records the epoch's file order (as
    planned), the order in which this worker's blocks arrived (its share of it) and the seconds its
    training steps took."""

    def __init__(self, shard: Any, plan: StreamPlan, validation: sp.csr_matrix, *, seed: int, rank: int, world: int,
                 device: torch.device, clock: Any = None) -> None:
        self.shard, self.plan, self.validation = shard, plan, validation
        self.seed, self.rank, self.world, self.device, self.clock = seed, rank, world, device, clock
        self.batch_size = plan.worker_batch(world)
        self.steps_per_epoch = plan.steps_per_epoch(world)
        if self.steps_per_epoch < 1:
            raise ValueError(f"{plan.n_train} training cells over {world} worker(s) cannot fill one batch of "
                             f"{plan.batch_size}; lower batch_size or the number of workers")
        self.n_validation = validation.shape[0]
        self._facts: dict[str, Any] = {}

    def _blocks(self, seen: list[int]) -> Iterator[Rows]:
        for table in self.shard.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
            if not table.num_rows:
                continue
            for index in _first_seen(table.column(SHARD_COLUMN).to_numpy()):
                if not seen or seen[-1] != index:
                    seen.append(int(index))
            yield block_rows(self.plan.inputs, table)

    def train_batches(self, epoch: int) -> Iterator[torch.Tensor]:
        import ray
        import torch

        if self.clock is not None:  # before this worker joins the epoch's read (a barrier for all)
            ray.get(self.clock.set.remote(epoch))
        seen: list[int] = []
        steps, start = 0, time.perf_counter()
        for rows in buffered_batches(self._blocks(seen), self.batch_size, self.plan.options.shuffle_buffer,
                                     buffer_rng(self.seed, epoch, self.rank), drop_last=self.plan.drop_last):
            steps += 1
            yield torch.from_numpy(rows.matrix.toarray()).to(self.device, non_blocking=True)
        if steps != self.steps_per_epoch:  # a worker with fewer steps would leave the others waiting in DDP
            raise RuntimeError(f"worker {self.rank} took {steps} steps in epoch {epoch}, {self.steps_per_epoch} "
                               "expected: the dataset split gave the workers unequal rows")
        # train_s: the epoch's training steps, reads included (not validation): cells/s for benches
        self._facts = {"shard_order": epoch_order(self.seed, epoch, self.plan.n_files).tolist(),
                       "shards_seen": seen, "train_s": time.perf_counter() - start}

    def validation_batches(self) -> Iterator[torch.Tensor]:
        import torch

        for start in range(0, self.n_validation, self.plan.batch_size):
            block = self.validation[start : start + self.plan.batch_size]
            yield torch.from_numpy(block.toarray()).to(self.device, non_blocking=True)

    def epoch_facts(self) -> dict[str, Any]:
        return dict(self._facts)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def _first_seen(values: np.ndarray) -> np.ndarray:
    """Distinct values in order of first appearance."""
    _, first = np.unique(values, return_index=True)
    return values[np.sort(first)]
