"""A grid cell on a sharded dataset at scale: ``ssl-st run`` of one zero-shot cell on N cells.

Usage: python bench/grid_scale.py [--cells 1000000 50000] [--cpus 2] [--rows-per-shard 32768] [--workdir DIR]

For each size: N cells of a 300-gene panel in the 19,331-gene vocabulary (as ``bench/embed_scale.py``
writes them, plus ten cell types, each detecting its own 30 panel genes more often) are written as
shards; a config names them (``source: shards``) with the full-size encoder (random weights, imported as
a checkpoint) and one zero-shot cell-type task; ``ssl-st run`` runs it on a fresh local Ray of
``--cpus`` CPUs: the data stage checks every shard's checksum, the embed stage streams the shards
through Ray Data into an embedding artifact, and the cell fits kNN (k=5) on 70 % of the cells and
scores 15 %. Peak memory is the summed PSS of ``ssl-st run`` and everything it starts (Ray's
processes included; not the bench's own process, which wrote the shards), sampled every second, as
in ``bench/embed_scale.py``, with the largest processes at the peak. The ratio row compares each
size's cells/s and peak memory with the smallest size's, measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_scale import N_PANEL, N_VOCAB, PeakPSS, _pin, vocabulary  # noqa: E402

TYPES = 10
MARKERS = 30  # panel genes per type detected more often in it

CONFIG = """\
name: grid-scale
seeds: [0]
reference: cells
datasets:
  - {{name: cells, source: shards, path: {shards}}}
models:
  - {{name: full-size, method: checkpoint, checkpoint: {checkpoint}}}
tasks:
  - {{name: cell-type, datasets: [cells], modes: [zero-shot]}}
resources:
  data: {{cpus: 1}}
  embed: {{cpus: 1}}
  cell-type: {{cpus: {knn_cpus}}}
"""


def build(cells: int, rows_per_shard: int, work: Path) -> None:
    """Shards with a cell type each (written chunk by chunk) and the full-size model with its genes."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from ssl_st.models import Architecture, SSLModel
    from ssl_st.shards.write import Chunk, ShardWriter

    vocab = vocabulary()
    rng = np.random.default_rng(0)
    panel = np.sort(rng.choice(N_VOCAB, N_PANEL, replace=False))
    var = pd.DataFrame({"gene_ids": [vocab.ids[i] for i in panel]}, index=[vocab.symbols[i] for i in panel])
    types = rng.integers(0, TYPES, cells)
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"type{t}" for t in types])})
    with ShardWriter(work / "shards", var=var, obs=obs, source="bench/grid_scale.py", source_format="simulated") as writer:
        for start in range(0, cells, rows_per_shard):
            n = min(rows_per_shard, cells - start)
            rate = np.full((n, N_PANEL), 0.2)
            for row, t in enumerate(types[start:start + n]):
                rate[row, t * MARKERS:(t + 1) * MARKERS] = 0.8
            matrix = sp.csr_matrix(rng.random((n, N_PANEL)) < rate, dtype=np.float32)
            matrix.data = rng.integers(1, 20, matrix.nnz).astype(np.float32)
            writer.add(Chunk(start, matrix, [f"cell{i}" for i in range(start, start + n)]))
        writer.finish()
    (work / "model").mkdir(exist_ok=True)
    SSLModel.random_init(vocab, Architecture(), seed=0).save(work / "model" / "model.ckpt")


def run_grid(work: Path, cpus: int) -> dict:
    """``ssl-st run`` on a fresh local Ray, its peak PSS and the store's numbers."""
    import pandas as pd
    import pyarrow.parquet as pq

    argv = [sys.executable, "-m", "grid", "run", str(work / "experiments.yaml"), "--results", str(work / "results"),
            "--num-cpus", str(cpus)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": ""}
    started = time.perf_counter()
    log = (work / "run.log").open("w+")
    run = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    with PeakPSS(pid=run.pid) as pss:  # ssl-st run and what it starts; not this process, which wrote the shards
        returncode = run.wait()
    wall = time.perf_counter() - started
    if returncode != 0:
        log.seek(0)
        sys.exit(f"ssl-st run failed:\n{log.read()[-5000:]}")
    table = pd.concat([pq.read_table(f).to_pandas() for f in (work / "results" / "cells").glob("*.parquet")])
    if (table["status"] != "done").any():
        sys.exit(f"the cell failed: {table['error'].iloc[0]}")
    values = dict(zip(table["metric"], table["value"]))
    embedding = next((work / "results" / "artifacts" / "embeddings").iterdir())
    return {"wall_s": wall, "peak_pss": pss.peak, "knn_s": float(table["duration_s"].iloc[0]),
            "at_peak": [(round(p / 2**20), name) for p, name in pss.at_peak[:6]],
            "macro_f1": values["macro_f1"], "n_cells": values["n_cells"],
            "embedding_mib": sum(f.stat().st_size for f in embedding.rglob("*")) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[1_000_000, 50_000])
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--rows-per-shard", type=int, default=32_768)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a folder under /tmp, removed after")
    args = parser.parse_args()
    _pin(args.cpus)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="grid_scale."))
    runs = {}
    try:
        for cells in sorted(args.cells):
            work = root / f"{cells}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            t = time.perf_counter()
            build(cells, args.rows_per_shard, work)
            build_s = time.perf_counter() - t
            (work / "experiments.yaml").write_text(CONFIG.format(shards=work / "shards", checkpoint=work / "model" / "model.ckpt",
                                                                 knn_cpus=args.cpus))
            runs[cells] = {**run_grid(work, args.cpus), "build_s": build_s}
            shutil.rmtree(work / "shards", ignore_errors=True)  # the disk holds one size at a time
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    gib, base = 2**30, runs[min(runs)]
    print(f"one zero-shot grid cell (ssl-st run, fresh local Ray of {args.cpus} CPUs; {os.cpu_count()} on the machine, "
          f"load {os.getloadavg()[0]:.1f}); {N_PANEL}-gene panel in the {N_VOCAB:,}-gene vocabulary, full-size encoder, "
          f"shards of {args.rows_per_shard:,} rows")
    print(f"{'cells':>10s} {'run s':>7s} {'kNN cell s':>10s} {'cells/s':>8s} {'ratio':>6s} {'peak PSS GiB':>13s} "
          f"{'ratio':>6s} {'macro-F1':>9s} {'dense GiB':>10s}")
    for cells, run in runs.items():
        rate, base_rate = cells / run["wall_s"], min(runs) / base["wall_s"]
        print(f"{cells:10,d} {run['wall_s']:7.0f} {run['knn_s']:10.0f} {rate:8.0f} {rate / base_rate:6.2f} "
              f"{run['peak_pss'] / gib:13.2f} {run['peak_pss'] / base['peak_pss']:6.2f} {run['macro_f1']:9.3f} "
              f"{cells * N_VOCAB * 4 / gib:10.1f}")
    for cells, run in runs.items():
        print(f"{cells:,} cells, the largest processes at the peak (MiB PSS): "
              + "; ".join(f"{mib} {name}" for mib, name in run.pop("at_peak")))
    print("ratios against the smallest size; run s includes Ray's start, the checksum pass and the kNN cell; "
          f"json: {json.dumps({c: {k: round(v, 3) for k, v in r.items()} for c, r in runs.items()})}")


if __name__ == "__main__":
    main()
