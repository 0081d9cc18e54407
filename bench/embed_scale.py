"""Embedding at scale: Ray Data over Parquet shards vs a bare single-process torch loop, same cores.

Usage: python bench/embed_scale.py [--cells 1000000] [--cpus 2] [--actors 1] [--cpus-per-actor 1]
                                   [--rows-per-shard 32768] [--batch-size 8192] [--lean-memory] [--workdir DIR]

N cells of a 300-gene panel (about 90 genes detected per cell, counts 1-19), mapped into the
19,331-gene vocabulary, written as shards (:mod:`ssl_st.shards.write`, chunk by chunk) and embedded
by the full-size encoder (19,331 -> 512 -> 512 -> 256 -> 256 -> 64, random weights) two ways, each
in a fresh process pinned to the same ``--cpus`` cores:

- bare loop: one process, pyarrow's ``iter_batches`` over the shards, the same batch -> model input
  code (:func:`ssl_st.shards.inputs.batch_inputs`), ``SSLModel.embed``, the embeddings written to one
  Parquet file; run with ``--cpus`` torch threads and with one, and the faster is the baseline;
- Ray Data: :func:`ssl_st.shards.embed_shards` on a fresh local Ray of ``--cpus`` CPUs. By default
  one actor with one thread, as the grid's default ``resources.embed`` gives it; the actor reads its
  files itself, so ``--cpus-per-actor 2`` lets it use both cores (0.77x the bare loop at 1M cells
  against 0.62x with one; a second actor is a second torch and model in memory, ~0.5 GiB).

Both include loading the model; Ray's own start (``ray.init``) is reported apart. Peak memory is the
largest sum, over the process and all its descendants (Ray: driver, GCS, raylet, workers), of PSS
(``psutil.Process.memory_full_info().pss``: shared pages, libraries and the object store count once),
sampled every second (the sampler's own CPU time is printed). The dense cells x 19,331 float32 matrix is printed for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

N_VOCAB = 19331
N_PANEL = 300
DETECTED = 0.3  # fraction of panel genes detected per cell: ~90 of 300


def _pin(cpus: int) -> None:
    """Run this process (and what it starts) on the first ``cpus`` cores, when the machine has more."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpus:
        os.sched_setaffinity(0, set(range(cpus)))


class PeakPSS:
    """Samples the summed PSS of this process (or ``pid``) and its descendants in a background thread."""

    def __init__(self, interval: float = 1.0, pid: int | None = None) -> None:
        import psutil

        self.root, self.interval, self.peak, self.samples, self.cpu_s = psutil.Process(pid), interval, 0, 0, 0.0
        self.at_peak: list[tuple[int, str]] = []  # (PSS, command line) of each process at the peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> int:
        import psutil

        total, parts = 0, []
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:  # the watched process has ended
            return 0
        for proc in procs:
            try:
                pss = proc.memory_full_info().pss
                parts.append((pss, " ".join(proc.cmdline())[:90]))
                total += pss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        if total > self.peak:  # which processes made the peak
            self.at_peak = sorted(parts, reverse=True)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            self.samples += 1
            self.cpu_s = time.thread_time()  # what sampling costs, reported next to the timings
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakPSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._total())


def vocabulary():
    from ssl_st.genes import Vocabulary

    return Vocabulary(tuple(f"ENSG{i:011d}" for i in range(N_VOCAB)), tuple(f"G{i}" for i in range(N_VOCAB)))


def build(args: argparse.Namespace, work: Path) -> None:
    """The shards (written chunk by chunk: the cells never are in memory at once) and the model."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from ssl_st.models import Architecture, SSLModel
    from ssl_st.shards.write import Chunk, ShardWriter

    vocab = vocabulary()
    rng = np.random.default_rng(0)
    panel = np.sort(rng.choice(N_VOCAB, N_PANEL, replace=False))
    var = pd.DataFrame({"gene_ids": [vocab.ids[i] for i in panel]}, index=[vocab.symbols[i] for i in panel])
    with ShardWriter(work / "shards", var=var, obs=None, source="bench/embed_scale.py", source_format="simulated") as writer:
        for start in range(0, args.cells, args.rows_per_shard):
            n = min(args.rows_per_shard, args.cells - start)
            detected = rng.random((n, N_PANEL)) < DETECTED
            matrix = sp.csr_matrix(detected, dtype=np.float32)
            matrix.data = rng.integers(1, 20, matrix.nnz).astype(np.float32)
            writer.add(Chunk(start, matrix, [f"cell{i}" for i in range(start, start + n)]))
        writer.finish()
    SSLModel.random_init(vocab, Architecture(), seed=0).save(work / "model.ckpt")


def run_bare(args: argparse.Namespace, work: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from ssl_st.models import SSLModel
    from ssl_st.shards import open_source
    from ssl_st.shards.inputs import batch_inputs, plan_inputs

    torch.set_num_threads(args.threads or args.cpus)
    source = open_source(work / "shards")
    with PeakPSS() as memory:
        start = time.perf_counter()
        model = SSLModel.load(work / "model.ckpt")
        plan, _ = plan_inputs(source.var(), model.vocabulary, values=source.values)
        writer = None
        for path in source.files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=args.batch_size,
                                                           columns=["row", "cell_id", "indices", "counts"]):
                table = pa.Table.from_batches([batch])
                embedding = model.embed(batch_inputs(plan, table), batch_size=table.num_rows, device="cpu")
                out = pa.table({"row": table.column("row"), "cell_id": table.column("cell_id"),
                                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embedding.ravel()), embedding.shape[1])})
                writer = writer or pq.ParquetWriter(work / "bare.parquet", out.schema)
                writer.write_table(out)
        writer.close()
        wall = time.perf_counter() - start
    return {"wall_s": wall, "peak_pss": memory.peak, "samples": memory.samples, "sampler_cpu_s": memory.cpu_s}


def run_ray(args: argparse.Namespace, work: Path) -> dict:
    import logging

    import ray

    from ssl_st.shards import EmbedOptions, embed_shards

    with PeakPSS() as memory:
        start = time.perf_counter()
        ray.init(address="local", num_cpus=args.cpus, object_store_memory=args.object_store_mb * 2**20,
                 include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        started = time.perf_counter()
        options = EmbedOptions(actors=args.actors, cpus_per_actor=args.cpus_per_actor, batch_size=args.batch_size,
                               lean_memory=args.lean_memory)
        embed_shards(work / "model.ckpt", work / "shards", work / "emb", options=options)
        wall = time.perf_counter() - started
        ray.shutdown()
    return {"wall_s": wall, "init_s": started - start, "peak_pss": memory.peak, "samples": memory.samples,
            "sampler_cpu_s": memory.cpu_s}


def check_same(work: Path, n: int = 2000) -> float:
    """Largest difference between the two paths' embeddings of the first ``n`` cells."""
    import numpy as np
    import pyarrow.parquet as pq

    from ssl_st.shards import read_embedding

    bare = pq.read_table(work / "bare.parquet").slice(0, n)
    ray_values = read_embedding(work / "emb", checksums=False).values[:n]
    column = bare.column("embedding").combine_chunks()
    values = column.flatten().to_numpy().reshape(len(column), -1)
    return float(np.abs(values - ray_values).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--actors", type=int, default=1, help="encoder actors")
    parser.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs (torch threads) per actor")
    parser.add_argument("--lean-memory", action="store_true", help="EmbedOptions.lean_memory for the actors")
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)  # bare loop, per run
    parser.add_argument("--rows-per-shard", type=int, default=32_768)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--object-store-mb", type=int, default=256)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a folder under /tmp, removed after")
    parser.add_argument("--role", choices=["build", "bare", "ray"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    _pin(args.cpus)
    if args.role:  # a child process: do one thing, report JSON on the last line
        work = args.workdir
        result = {"build": lambda: build(args, work) or {}, "bare": lambda: run_bare(args, work),
                  "ray": lambda: run_ray(args, work)}[args.role]()
        print(json.dumps(result))
        return

    import shutil
    import tempfile

    work = args.workdir or Path(tempfile.mkdtemp(prefix="embed_scale."))
    work.mkdir(parents=True, exist_ok=True)

    def child(role: str, *extra: str) -> dict:
        argv = [sys.executable, __file__, "--role", role, *extra, "--workdir", str(work), "--cells", str(args.cells),
                "--cpus", str(args.cpus), "--actors", str(args.actors), "--cpus-per-actor", str(args.cpus_per_actor),
                "--rows-per-shard", str(args.rows_per_shard), "--batch-size", str(args.batch_size),
                "--object-store-mb", str(args.object_store_mb), *(["--lean-memory"] if args.lean_memory else [])]
        done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        if done.returncode != 0:
            sys.exit(f"{role} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    try:
        t = time.perf_counter()
        child("build")
        build_s = time.perf_counter() - t
        bares = {threads: child("bare", "--threads", str(threads)) for threads in sorted({args.cpus, 1}, reverse=True)}
        ray_ = child("ray")
        diff = check_same(work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    n, gib = args.cells, 2**30
    best = min(bares, key=lambda t: bares[t]["wall_s"])
    bare = bares[best]
    rate_bare, rate_ray = n / bare["wall_s"], n / ray_["wall_s"]
    print(f"{n:,} cells, {N_PANEL}-gene panel in a {N_VOCAB:,}-gene vocabulary; {args.cpus} CPUs "
          f"({os.cpu_count()} on the machine, load {os.getloadavg()[0]:.1f}); shards of {args.rows_per_shard:,} rows, "
          f"batches of {args.batch_size:,}; Ray: {args.actors} actor(s) x {args.cpus_per_actor:g} CPU"
          f"{', lean memory' if args.lean_memory else ''}; "
          f"shards written in {build_s:.0f} s")
    print(f"dense float32 matrix for scale: {n * N_VOCAB * 4 / gib:,.1f} GiB")
    print(f"{'path':26s} {'wall s':>8s} {'cells/s':>9s} {'ratio':>6s} {'peak PSS GiB':>13s}")
    for threads, run in bares.items():
        label = f"bare torch loop, {threads} thr" + (" *" if threads == best else "")
        print(f"{label:26s} {run['wall_s']:8.1f} {n / run['wall_s']:9.0f} {bare['wall_s'] / run['wall_s']:6.2f} "
              f"{run['peak_pss'] / gib:13.2f}")
    print(f"{'Ray Data (ssl-st embed)':26s} {ray_['wall_s']:8.1f} {rate_ray:9.0f} {rate_ray / rate_bare:6.2f} "
          f"{ray_['peak_pss'] / gib:13.2f}")
    print(f"ratios against the faster bare loop (*); ray.init: {ray_['init_s']:.1f} s (not in the ratio); "
          f"max |bare - ray| over 2,000 cells: {diff:.2e}; PSS sampling took {bare['sampler_cpu_s']:.1f} / {ray_['sampler_cpu_s']:.1f} CPU s (bare / Ray)")


if __name__ == "__main__":
    main()
