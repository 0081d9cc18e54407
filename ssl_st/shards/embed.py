"""Zero-shot embedding of a sharded dataset, streamed through Ray Data.

A dataset of the shard files (one item each: its path and its first row) -> ``map_batches`` over a
pool of :class:`Encoder` actors (each loads the model once; for each file it reads the file batch by
batch, turns each batch into model input, :mod:`.inputs`, encodes it and yields ``row``,
``cell_id`` and the ``embedding``) -> the driver writes Parquet files of them, fixed_size_list
<float32>[latent], with a manifest (:mod:`.format`, kind ``embedding``). :func:`read_embedding`
gathers them back in cell order for the kNN step.

Why the actors read and the driver writes, rather than ``read_parquet`` and ``write_parquet``: those
run as processes of their own, and on a million cells (bench/grid_scale.py, 2 CPUs) a read task
held a whole shard (~0.65 GiB of PSS) and a write task ~0.4 GiB beside the encoder: the peak of the
whole grid cell. An actor reading its file in batches holds one batch more than it did; the driver
holds one block of 64 floats a cell. It is also the bare loop's work, so the pool keeps up with it.

Memory is bounded by the batch size, never by the number of cells or the shard size.

Resources. Each actor asks for ``cpus_per_actor`` CPUs (its torch threads) and ``gpus_per_actor``
GPUs (then it runs on CUDA). Nothing else in the pipeline asks for a CPU. On a 2-core machine one
actor with one thread was faster than one with two (bench/embed_scale.py), whose threads waited on
each other whenever the driver wrote.

Ordering. Ray Data delivers outputs in no fixed order; every output row carries its cell's ``row``
(a cell shard stores it; a Merlin file's rows are numbered from the file's first row, known from the
footers), so the driver writes them as they come, and a Merlin row's id is the store's.

On a cluster the shard files must be readable by every node (a shared or object-store path); the
embedding travels back through the object store to the driver, which writes it to its own disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from ..genes import Vocabulary
from ..files import checkpoint_file, model_files, replace_dir, staging_dir
from .format import (
    PART_PREFIX,
    Manifest,
    ShardError,
    arrow_columns,
    describe_file,
    verify,
    write_manifest,
)
from .inputs import InputPlan, batch_inputs, plan_inputs
from .source import Source, open_source

if TYPE_CHECKING:
    from ..genes import Coverage
    from ..models import SSLModel

# Cells per encoder call: a sparse panel batch of 8,192 cells is a few MB; a dense Merlin batch is
# 19,331 floats a cell (77 KB), so 1,024 cells (80 MB) there.
DEFAULT_BATCH = {"sparse": 8192, "dense": 1024}
OUTPUT_ROWS_PER_FILE = 262_144  # 64 floats a cell: ~70 MB files


@dataclass(frozen=True)
class ModelRef:
    """A checkpoint on disk: each actor loads it once (a path travels; 80 MB of weights need not)."""

    checkpoint: str
    genes: str | None = None  # the model's var.parquet (default: beside the checkpoint)
    trusted: bool = False

    def files(self) -> tuple[Path, Path]:
        """(checkpoint file, gene-order file), found as :meth:`SSLModel.load` finds them, without
        importing torch: the driver needs the vocabulary, not the weights."""
        if not checkpoint_file(self.checkpoint).is_file():
            raise FileNotFoundError(f"{checkpoint_file(self.checkpoint)}: no such checkpoint file")
        return model_files(self.checkpoint, self.genes)

    def vocabulary(self) -> Vocabulary:
        return Vocabulary.from_parquet(self.files()[1])

    def method(self) -> str | None:
        """The method its ssl-st sidecar names (published checkpoints have none)."""
        sidecar = self.files()[0].with_suffix(".json")
        return json.loads(sidecar.read_text()).get("method") if sidecar.is_file() else None

    def load(self) -> SSLModel:
        from ..models import SSLModel

        ckpt, genes = self.files()
        return SSLModel.load(ckpt, genes=genes, trusted=self.trusted)


@dataclass(frozen=True)
class EmbedOptions:
    """How the pipeline runs; ``actors`` x ``cpus_per_actor`` (+ ``gpus_per_actor``) is what it holds."""

    actors: int = 1
    max_actors: int | None = None  # grow the pool up to this many while resources are free (default: actors)
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    resources: tuple[tuple[str, float], ...] = ()  # Ray custom resources per actor
    batch_size: int | None = None  # default: DEFAULT_BATCH for the layout
    target_sum: float = 1e4
    min_coverage: float = 0.0
    progress: bool = False  # Ray Data's progress bars
    lean_memory: bool = False  # actors return freed memory to the system: ~0.25 GiB less each, ~30 % slower

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ValueError(f"actors must be at least 1 (got {self.actors})")
        if self.max_actors is not None and self.max_actors < self.actors:
            raise ValueError(f"max_actors ({self.max_actors}) must be at least actors ({self.actors})")
        if self.cpus_per_actor <= 0 and self.gpus_per_actor <= 0:
            raise ValueError("an encoder actor needs cpus_per_actor > 0 or gpus_per_actor > 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1 (got {self.batch_size})")

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus_per_actor))

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_actor > 0 else "cpu"


def _embedding_column(values: np.ndarray) -> pa.FixedSizeListArray:
    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _return_freed_memory() -> None:
    """Make glibc hand freed memory back to the system in this process (``EmbedOptions.lean_memory``).

    An encoder allocates and frees ~100 MB of arrays per batch (sparse inputs, activations, the
    transposed first layer). glibc keeps freed heap pages for reuse and raises its mmap threshold as
    it sees large frees, so an actor settles at ~0.6 GiB. A fixed trim threshold also fixes the mmap
    threshold at 128 KB: large arrays are mapped and unmapped each batch and the actor stays at
    ~0.36 GiB, at the price of the page faults (~30 % fewer cells/s, bench/embed_scale.py).
    No-op off glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-1, 16 * 2**20)  # M_TRIM_THRESHOLD
        libc.mallopt(-8, 2)  # M_ARENA_MAX: two arenas, not 8 per core
    except (OSError, AttributeError):  # musl, macOS: their allocators return memory on their own terms
        pass


class Encoder:
    """A Ray Data actor: the model loaded once; each call embeds the files of one batch of items."""

    def __init__(self, model: ModelRef, plan: InputPlan, device: str, threads: int, batch_size: int,
                 lean_memory: bool = False) -> None:
        from ..threads import limit_threads

        if lean_memory:
            _return_freed_memory()
        limit_threads(threads)  # what the actor was given, not every core of the node
        self.model, self.plan, self.device, self.batch_size = model.load(), plan, device, batch_size
        self.columns = ["X"] if plan.dense else ["row", "cell_id", "indices", "counts"]

    def __call__(self, items: pa.Table) -> Iterator[pa.Table]:
        for file, first_row in zip(items.column("file").to_pylist(), items.column("first_row").to_pylist()):
            # buffer_size: stream each column chunk instead of reading it whole (a dense Merlin
            # row group can be hundreds of MB)
            with pq.ParquetFile(file, buffer_size=1 << 22) as parquet:
                row = first_row
                for batch in parquet.iter_batches(batch_size=self.batch_size, columns=self.columns):
                    yield self.embed(pa.Table.from_batches([batch]), row)
                    row += batch.num_rows

    def embed(self, batch: pa.Table, first_row: int) -> pa.Table:
        inputs = batch_inputs(self.plan, batch)
        embedding = self.model.embed(inputs, batch_size=max(inputs.shape[0], 1), device=self.device)
        if "row" in batch.column_names:  # cell shards store their rows and ids
            ids = {"row": batch.column("row"), "cell_id": batch.column("cell_id")}
        else:  # a Merlin part: numbered from its first row; the driver adds the store's ids
            ids = {"row": pa.array(np.arange(first_row, first_row + batch.num_rows, dtype=np.int64))}
        return pa.table({**ids, "embedding": _embedding_column(embedding)})


class _NoCpuWarning:
    """Ray Data warns that a pipeline "will hang" when the pool holds every CPU; this one does not
    (its reads and writes ask for none), so the warning would only mislead."""

    @staticmethod
    def filter(record: Any) -> bool:
        return "does not have any available CPUs" not in record.getMessage()


@contextlib.contextmanager
def _data_context(*, progress: bool) -> Iterator[Any]:
    """Ray Data settings for this pipeline only: the process-wide context is restored afterwards."""
    import logging

    import ray.data

    ctx = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data.dataset")
    logger.addFilter(_NoCpuWarning)
    saved = ctx.enable_progress_bars
    ctx.enable_progress_bars = progress
    try:
        yield ctx
    finally:
        logger.removeFilter(_NoCpuWarning)
        ctx.enable_progress_bars = saved


@dataclass(frozen=True)
class EmbedResult:
    path: Path
    manifest: Manifest
    coverage: Coverage
    method: str | None  # from the checkpoint's ssl-st sidecar; None for a published checkpoint
    latent_dim: int
    info: dict[str, Any] = field(default_factory=dict)


def _write_parts(batches: Iterator[pa.Table], staged: Path, source: Source) -> None:
    """The driver's writer: batches as they come (any order), files of ``OUTPUT_ROWS_PER_FILE``
    rows; a Merlin batch gets the store's cell ids for its rows."""
    written, part, writer = 0, 0, None
    try:
        for batch in batches:
            if "cell_id" not in batch.column_names:
                ids = source.merlin.cell_ids(batch.column("row").to_numpy())
                batch = pa.table({"row": batch.column("row"), "cell_id": pa.array(ids, pa.string()),
                                  "embedding": batch.column("embedding")})
            if writer is None:
                writer = pq.ParquetWriter(staged / f"{PART_PREFIX}{part:05d}.parquet", batch.schema)
            writer.write_table(batch)
            written += batch.num_rows
            if written >= (part + 1) * OUTPUT_ROWS_PER_FILE:
                writer.close()
                writer, part = None, part + 1
    finally:
        if writer is not None:
            writer.close()


def _checkpoint_error(exc: Exception) -> Exception | None:
    """The CheckpointError an actor died of, as an exception of its own: Ray reports an actor that
    failed to start as an ActorDiedError whose message carries the remote traceback as text."""
    match = re.search(r"CheckpointError: (.+)", str(exc))
    if match is None:
        return None
    from ..models import CheckpointError

    return CheckpointError(match.group(1).strip())


def _run(ray: Any, source: Source, ref: ModelRef, plan: InputPlan, options: EmbedOptions, staged: Path) -> None:
    """The Ray Data pipeline: shard files in, embedding files into ``staged``."""
    batch_size = options.batch_size or DEFAULT_BATCH["dense" if source.dense else "sparse"]
    first_rows = np.cumsum((0, *source.file_rows))[:-1]
    items = [{"file": str(f), "first_row": int(r)} for f, r in zip(source.files, first_rows)]
    try:
        with _data_context(progress=options.progress):
            # One file per block and per call: an actor streams its file through in batches.
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            ds = ds.map_batches(
                Encoder,
                fn_constructor_kwargs={"model": ref, "plan": plan, "device": options.device, "threads": options.threads,
                                       "batch_size": batch_size, "lean_memory": options.lean_memory},
                compute=ray.data.ActorPoolStrategy(min_size=options.actors, max_size=options.max_actors or options.actors),
                num_cpus=options.cpus_per_actor,
                num_gpus=options.gpus_per_actor,
                resources=dict(options.resources) or None,
                batch_size=1,
                batch_format="pyarrow",
            )
            _write_parts(ds.iter_batches(batch_size=None, batch_format="pyarrow"), staged, source)
    except ray.exceptions.RayActorError as exc:
        cause = _checkpoint_error(exc)
        if cause is None:
            raise
        raise cause from None


def embed_shards(model: ModelRef | str | Path, source: str | Path | Source, out: str | Path, *,
                 split: str | None = None, options: EmbedOptions | None = None,
                 address: str | None = None) -> EmbedResult:
    """Embed every cell of ``source`` (a shard directory, or a Merlin store with ``split``) with
    ``model`` into the directory ``out`` (replaced whole, atomically).

    Before anything runs: the source is checked with checksums (:func:`open_source`), the model's
    files found and its vocabulary read (not its weights: only the actors load those), and the genes
    mapped (:class:`ssl_st.pp.CoverageError` below ``min_coverage``). A checkpoint that cannot be read
    fails as the actors start, with its :class:`~ssl_st.models.CheckpointError` re-raised here. Uses
    the Ray this process is connected to, else joins ``address`` or ``RAY_ADDRESS``, else starts a local one.
    """
    import ray

    options = options or EmbedOptions()
    ref = model if isinstance(model, ModelRef) else ModelRef(str(model))
    source = source if isinstance(source, Source) else open_source(source, split=split, checksums=True)
    checkpoint, genes = ref.files()
    ref = ModelRef(str(checkpoint), str(genes), ref.trusted)  # the actors load exactly these files
    plan, coverage = plan_inputs(source.var(), ref.vocabulary(), values=source.values, dense=source.dense,
                                 target_sum=options.target_sum, min_coverage=options.min_coverage)
    info = {"method": ref.method(), "checkpoint": ref.checkpoint, "genes": ref.genes,
            "coverage": coverage.as_dict(), "target_sum": options.target_sum, "source": str(source.path),
            "split": source.merlin.split if source.merlin else None}
    out = Path(out)
    staged = staging_dir(out)
    try:
        if source.n_rows:
            if not ray.is_initialized():
                # RAY_ADDRESS: inside `ray job submit`, join that cluster, as ray.init() would
                ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False,
                         log_to_driver=False)
            _run(ray, source, ref, plan, options, staged)
        files = sorted(staged.glob("*.parquet"))
        shards = tuple(describe_file(f) for f in files)
        written = sum(s.rows for s in shards)
        if written != source.n_rows:
            raise ShardError(out, "embedding", f"has {written} rows for {source.n_rows} cells",
                             "the pipeline lost or repeated batches: run it again")
        schema = pq.read_schema(files[0]) if files else pa.schema([])
        if files:
            info["latent_dim"] = schema.field("embedding").type.list_size
        manifest = Manifest(kind="embedding", n_rows=written, columns=arrow_columns(schema), shards=shards,
                            source=str(source.path), source_format=source.kind, info=info,
                            ssl_st_version=__version__)
        write_manifest(staged, manifest)
        replace_dir(staged, out)
    finally:
        if staged.exists():
            import shutil

            shutil.rmtree(staged, ignore_errors=True)
    return EmbedResult(out, manifest, coverage, info["method"], info.get("latent_dim", 0), info)


@dataclass(frozen=True)
class Embedding:
    """An embedding directory gathered in cell order."""

    cell_ids: np.ndarray | None  # str, one per cell, in the dataset's order (None: not read)
    values: np.ndarray  # (cells, latent) float32
    manifest: Manifest


def read_embedding(path: str | Path, *, checksums: bool = True, cell_ids: bool = True) -> Embedding:
    """Gather an embedding directory (checked against its manifest) in cell order; every row
    0..n-1 must be there exactly once. Each shard is written straight into its rows of one array, so
    what this holds is the embedding and one shard (``cell_ids=False`` skips the ids: a million of
    them as Python strings are ~70 MB)."""
    path = Path(path)
    manifest = verify(path, checksums=checksums, kind="embedding")
    n, dim = manifest.n_rows, int(manifest.info.get("latent_dim", 0))
    values = np.empty((n, dim), np.float32)
    ids = np.empty(n, dtype=object) if cell_ids else None
    seen = np.zeros(n, dtype=bool)
    for shard in manifest.shards:
        table = pq.read_table(path / shard.name, columns=["row", "embedding", *(["cell_id"] if cell_ids else [])])
        rows = table.column("row").to_numpy()
        if len(rows) and (rows.min() < 0 or rows.max() >= n or seen[rows].any() or len(np.unique(rows)) != len(rows)):
            raise ShardError(path / shard.name, "rows", "repeat cells or fall outside the dataset", "embed the dataset again")
        seen[rows] = True
        column = table.column("embedding").combine_chunks()
        values[rows] = column.flatten().to_numpy().reshape(len(column), dim)
        if ids is not None:
            ids[rows] = table.column("cell_id").to_numpy(zero_copy_only=False)
    if not seen.all():
        raise ShardError(path, "rows", f"miss {int((~seen).sum())} of {n} cells", "embed the dataset again")
    return Embedding(ids, values, manifest)
