"""Pretraining from shards at scale: Random Mask on Ray Train workers streaming shards, and the data
path alone against plain reading, same cores.

Usage: python bench/train_scale.py [--cells 200000] [--quick] [--cpus 2] [--rows-per-shard 16384]
                                   [--batch-size 256] [--epochs 2] [--units 512,512,256,256,64]
                                   [--h5ad-cells 20000] [--workdir DIR]

N cells of a 300-gene panel (about 90 genes detected per cell, counts 1-19) in the 19,331-gene
vocabulary, written as shards (:mod:`ssl_st.shards.write`, chunk by chunk) and as an .h5ad of the
same cells. Each measurement runs in a fresh process pinned to the same ``--cpus`` cores:

- **training**: :func:`ssl_st.models.distributed.train_data_parallel` streaming the shards
  (:mod:`ssl_st.shards.stream`), Random Mask with the full-size encoder, on 1 worker (``--cpus``
  threads) and on ``--cpus`` workers (one thread each). cells/s is the last epoch's training cells
  over its training steps' seconds (reads included; Ray start, validation and checkpoints not);
  the ratio is against 1 worker;
- **data path alone** (no model: each batch mapped into the vocabulary, normalised and densified,
  what a training step receives), cells/s, ratios against plain pyarrow:
  - plain pyarrow reading the shards in order (the baseline: sequential, no shuffling);
  - the Ray Data iterator of training: files in the epoch's seeded order, the shuffle buffer
    (:func:`ssl_st.shards.stream.shard_dataset` + :func:`~ssl_st.shards.stream.buffered_batches`), on a
    local Ray of ``--cpus`` CPUs (``ray.init`` not counted);
  - random minibatches read from the backed .h5ad (the AnnLoader-style baseline: each batch a
    random set of rows, sorted, read through anndata's backed sparse matrix); it is slow, so it
    reads ``--h5ad-cells`` cells and the rate is scaled from those.

The dense cells x 19,331 float32 matrix is printed for scale. ``--quick``: 4,000 cells in shards of
500, a small encoder, 1 epoch, for a check that everything runs (about a minute on an idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_scale import DETECTED, N_PANEL, N_VOCAB, _pin, vocabulary  # noqa: E402  (the same panel and vocabulary)


def build(args: argparse.Namespace, work: Path) -> dict:
    """The shards (written chunk by chunk) and an .h5ad of the same cells."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from ssl_st.shards.write import Chunk, ShardWriter

    vocab = vocabulary()
    rng = np.random.default_rng(0)
    panel = np.sort(rng.choice(N_VOCAB, N_PANEL, replace=False))
    var = pd.DataFrame({"gene_ids": [vocab.ids[i] for i in panel]}, index=[vocab.symbols[i] for i in panel])
    chunks = []
    with ShardWriter(work / "shards", var=var, obs=None, source="bench/train_scale.py", source_format="simulated") as writer:
        for start in range(0, args.cells, args.rows_per_shard):
            n = min(args.rows_per_shard, args.cells - start)
            matrix = sp.csr_matrix(rng.random((n, N_PANEL)) < DETECTED, dtype=np.float32)
            matrix.data = rng.integers(1, 20, matrix.nnz).astype(np.float32)
            writer.add(Chunk(start, matrix, [f"cell{i}" for i in range(start, start + n)]))
            chunks.append(matrix)
        writer.finish()
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(args.cells)])
    ad.AnnData(X=sp.vstack(chunks, format="csr"), obs=obs, var=var).write_h5ad(work / "cells.h5ad")
    return {}


def _init_ray(args: argparse.Namespace) -> float:
    import logging

    import ray

    start = time.perf_counter()
    ray.init(address="local", num_cpus=args.cpus, object_store_memory=args.object_store_mb * 2**20,
             include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    return time.perf_counter() - start


def run_train(args: argparse.Namespace, work: Path) -> dict:
    from ssl_st.models import Architecture, RandomMaskConfig
    from ssl_st.models.distributed import Workers, train_data_parallel
    from ssl_st.shards import open_source
    from ssl_st.shards.stream import StreamOptions

    init_s = _init_ray(args)
    workers = args.workers
    plan = RandomMaskConfig(epochs=args.epochs, batch_size=args.batch_size)
    units = tuple(int(u) for u in args.units.split(","))
    start = time.perf_counter()
    model = train_data_parallel(plan, open_source(work / "shards"), vocabulary(), Architecture(units=units),
                                workers=Workers(count=workers, cpus=args.cpus / workers, max_failures=0), seed=0,
                                storage=work / f"train-{workers}", stream=StreamOptions())
    wall = time.perf_counter() - start
    record = model.training
    return {"wall_s": wall, "init_s": init_s, "train_s": record["train_s"][-1],
            "cells": record["stream"]["train_cells"], "val_loss": record["val_loss"]}


def _dense(matrix) -> float:
    """What a training step receives: the batch densified (the sum keeps the work from being skipped)."""
    import torch

    return float(torch.from_numpy(matrix.toarray()).sum())


def run_pyarrow(args: argparse.Namespace, work: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ssl_st.shards import open_source
    from ssl_st.shards.inputs import batch_inputs, plan_inputs

    source = open_source(work / "shards")
    plan, _ = plan_inputs(source.var(), vocabulary(), values=source.values)
    start, cells = time.perf_counter(), 0
    for path in source.files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=args.batch_size, columns=["indices", "counts"]):
            matrix = batch_inputs(plan, pa.Table.from_batches([batch]))
            _dense(matrix)
            cells += matrix.shape[0]
    return {"wall_s": time.perf_counter() - start, "cells": cells}


def run_ray_data(args: argparse.Namespace, work: Path) -> dict:
    import numpy as np

    from ssl_st.shards import open_source
    from ssl_st.shards.inputs import plan_inputs
    from ssl_st.shards.stream import (
        StreamOptions,
        block_rows,
        buffer_rng,
        buffered_batches,
        epoch_clock,
        shard_dataset,
    )

    init_s = _init_ray(args)
    source = open_source(work / "shards")
    plan, _ = plan_inputs(source.var(), vocabulary(), values=source.values)
    options = StreamOptions()
    start, cells = time.perf_counter(), 0
    dataset = shard_dataset(source, np.zeros(0, np.int64), seed=0, clock=epoch_clock(), options=options)
    blocks = (block_rows(plan, t) for t in dataset.iter_batches(batch_size=None, batch_format="pyarrow",
                                                                 prefetch_batches=1))
    for rows in buffered_batches(blocks, args.batch_size, options.shuffle_buffer, buffer_rng(0, 0, 0)):
        _dense(rows.matrix)
        cells += len(rows)
    return {"wall_s": time.perf_counter() - start, "init_s": init_s, "cells": cells}


def run_h5ad(args: argparse.Namespace, work: Path) -> dict:
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    from ssl_st.genes import map_genes
    from ssl_st.io.values import COUNTS
    from ssl_st.pp import log_normalized

    adata = ad.read_h5ad(work / "cells.h5ad", backed="r")
    mapping = map_genes(adata.var, vocabulary())
    rng = np.random.default_rng(0)
    order = rng.permutation(adata.n_obs)[: min(args.h5ad_cells, adata.n_obs)]
    start, cells = time.perf_counter(), 0
    for s in range(0, len(order), args.batch_size):
        rows = np.sort(order[s : s + args.batch_size])
        matrix = log_normalized(mapping.apply(sp.csr_matrix(adata.X[rows])), COUNTS, 1e4)
        _dense(matrix)
        cells += matrix.shape[0]
    adata.file.close()
    return {"wall_s": time.perf_counter() - start, "cells": cells}


ROLES = {"build": build, "train": run_train, "pyarrow": run_pyarrow, "ray_data": run_ray_data, "h5ad": run_h5ad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="4,000 cells, a small encoder, 1 epoch")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--rows-per-shard", type=int, default=16_384)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2, help="the last epoch is timed")
    parser.add_argument("--units", default="512,512,256,256,64", help="encoder widths")
    parser.add_argument("--h5ad-cells", type=int, default=20_000, help="cells read from the backed .h5ad")
    parser.add_argument("--object-store-mb", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a folder under /tmp, removed after")
    parser.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.cells, args.rows_per_shard, args.units, args.epochs = 4000, 500, "64,32", 1
        args.h5ad_cells = min(args.h5ad_cells, 2000)
    _pin(args.cpus)
    if args.role:  # a child process: do one thing, report JSON on the last line
        print(json.dumps(ROLES[args.role](args, args.workdir)))
        return

    import shutil
    import tempfile

    work = args.workdir or Path(tempfile.mkdtemp(prefix="train_scale."))
    work.mkdir(parents=True, exist_ok=True)

    def child(role: str, workers: int = 1) -> dict:
        argv = [sys.executable, __file__, "--role", role, "--workers", str(workers), "--workdir", str(work),
                "--cells", str(args.cells), "--cpus", str(args.cpus), "--rows-per-shard", str(args.rows_per_shard),
                "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--units", args.units,
                "--h5ad-cells", str(args.h5ad_cells), "--object-store-mb", str(args.object_store_mb)]
        done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        if done.returncode != 0:
            sys.exit(f"{role} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    try:
        t = time.perf_counter()
        child("build")
        build_s = time.perf_counter() - t
        data = {"plain pyarrow, in order *": child("pyarrow"), "Ray Data, shuffled": child("ray_data"),
                "backed h5ad, random": child("h5ad")}
        trains = {w: child("train", w) for w in sorted({1, args.cpus})}
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    n = args.cells
    print(f"{n:,} cells, {N_PANEL}-gene panel in a {N_VOCAB:,}-gene vocabulary; {args.cpus} CPUs "
          f"({os.cpu_count()} on the machine, load {os.getloadavg()[0]:.1f}); shards of {args.rows_per_shard:,} rows, "
          f"batches of {args.batch_size}; encoder {args.units}; data written in {build_s:.0f} s")
    print(f"dense float32 matrix for scale: {n * N_VOCAB * 4 / 2**30:,.2f} GiB")
    print(f"{'data path (no model)':34s} {'cells':>8s} {'wall s':>8s} {'cells/s':>9s} {'ratio':>6s}")
    base = data["plain pyarrow, in order *"]
    base_rate = base["cells"] / base["wall_s"]
    for label, run in data.items():
        rate = run["cells"] / run["wall_s"]
        print(f"{label:34s} {run['cells']:8,d} {run['wall_s']:8.1f} {rate:9.0f} {rate / base_rate:6.2f}")
    print(f"{'Random Mask training (streamed)':34s} {'cells':>8s} {'epoch s':>8s} {'cells/s':>9s} {'ratio':>6s}")
    one = trains[1]["cells"] / trains[1]["train_s"]
    for workers, run in trains.items():
        rate = run["cells"] / run["train_s"]
        label = f"{workers} worker(s) x {args.cpus / workers:g} CPU" + (" *" if workers == 1 else "")
        print(f"{label:34s} {run['cells']:8,d} {run['train_s']:8.1f} {rate:9.0f} {rate / one:6.2f}")
    walls = ", ".join(f"{w} worker(s) {r['wall_s']:.0f} s" for w, r in trains.items())
    print(f"ratios against the starred row of each part; training: the last of {args.epochs} epoch(s), its training "
          f"steps only (whole run incl. Ray Train start: {walls}; "
          f"ray.init {trains[1]['init_s']:.1f} s, not counted); h5ad: {data['backed h5ad, random']['cells']:,} cells read")


if __name__ == "__main__":
    main()
