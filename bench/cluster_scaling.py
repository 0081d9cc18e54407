"""How STAGATE's training cost grows with the number of cells.

Full-batch training is only viable on whole slides if time and memory per epoch grow linearly with
cells (the graph has a bounded number of neighbours per cell). This script measures it: seconds per
epoch and peak memory of ``cluster.training.fit_stagate`` on synthetic slides of increasing size,
each size in a fresh subprocess so one size's memory high-water mark cannot leak into the next,
and prints the growth ratios next to the cell ratios.

Synthetic slide: cells on a jittered square grid, ``--genes`` log-normal-ish expression values
(log1p of log-normal draws, gene-specific location), a symmetrised kNN graph (``--neighbours``,
~8-10 neighbours per cell after symmetrisation) built with ``cKDTree``.

Memory: on CUDA ``torch.cuda.max_memory_allocated`` during the fit; on CPU the peak resident-set
size above the level just before the fit (the inputs already built), sampled every 2 ms by a
thread with psutil, or, without psutil, the ``getrusage`` high-water mark (a lower bound if building
the inputs peaked higher). Children run with ``MALLOC_MMAP_THRESHOLD_`` fixed at 1 MiB so that RSS
follows live tensors rather than glibc's heap retention. Time: median wall and process-CPU seconds
per timed epoch; the CPU column is the one to trust on a shared machine.

    python bench/cluster_scaling.py --sizes 10000 50000 200000 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def synthetic_slide(n_cells: int, genes: int, neighbours: int, seed: int = 0):
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_cells)))
    cells = np.arange(n_cells)
    pos = np.c_[cells % side, cells // side].astype(np.float64) + rng.normal(0, 0.25, (n_cells, 2))
    location = rng.normal(0.0, 1.0, genes).astype(np.float32)
    x = np.log1p(rng.lognormal(location, 1.0, (n_cells, genes)).astype(np.float32))
    _, idx = cKDTree(pos).query(pos, k=neighbours + 1)
    rows = np.repeat(cells, neighbours)
    a = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, idx[:, 1:].ravel())), shape=(n_cells, n_cells))
    a = ((a + a.T) > 0).astype(np.float32).tocsr()
    return x, a


class PeakRSS:
    """Peak resident memory above the level at ``start()``, in bytes."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        try:
            import psutil

            self._process = psutil.Process()
        except ImportError:
            self._process = None

    @property
    def method(self) -> str:
        return "psutil" if self._process is not None else "getrusage"

    def _rss(self) -> int:
        return self._process.memory_info().rss

    def __enter__(self) -> "PeakRSS":
        if self._process is None:
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            return self
        self._base = self._rss()
        self.peak = self._base

        def sample() -> None:
            while not self._stop.is_set():
                self.peak = max(self.peak, self._rss())
                time.sleep(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is None:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss())

    @property
    def delta(self) -> int:
        return max(0, self.peak - self._base)


def release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc) so the RSS baseline is what is really in use;
    otherwise memory freed while building the inputs is silently reused and the delta shrinks."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure(n_cells: int, args: argparse.Namespace) -> dict:
    """One size, in this process: build the slide, fit, report per-epoch time and peak memory."""
    import torch

    from cluster._torch import resolve_device
    from cluster.training import STAGATEConfig, fit_stagate
    from ssl_st.threads import limit_threads

    limit_threads(args.threads)
    device = resolve_device(args.device)
    # Load kernels and allocator pools on a toy slide first, so they are not billed to the first size.
    fit_stagate(*synthetic_slide(200, args.genes, args.neighbours), STAGATEConfig(epochs=1), device=device)
    x, a = synthetic_slide(n_cells, args.genes, args.neighbours)
    release_free_heap()
    config = STAGATEConfig(epochs=args.warmup + args.epochs)
    wall: list[float] = []
    cpu: list[float] = []

    def progress(epoch: int, loss: float) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall.append(time.perf_counter())
        cpu.append(time.process_time())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        result = fit_stagate(x, a, config, device=device, progress=progress)
        peak, method = torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
    else:
        with PeakRSS() as rss:
            result = fit_stagate(x, a, config, device=device, progress=progress)
        peak, method = rss.delta, f"RSS delta ({rss.method})"
    # stamps[i] marks the end of epoch i + 1; medians shrug off a neighbour process's burst.
    return {
        "cells": n_cells,
        "edges": int(a.nnz),
        "seconds_per_epoch": float(np.median(np.diff(wall[args.warmup - 1 :]))),
        "cpu_seconds_per_epoch": float(np.median(np.diff(cpu[args.warmup - 1 :]))),
        "peak_bytes": int(peak),
        "memory_method": method,
        "fit_seconds": result.seconds,
        "device": result.device,
    }


def run_child(n_cells: int, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", str(n_cells),
        "--epochs", str(args.epochs), "--warmup", str(args.warmup), "--device", args.device,
        "--genes", str(args.genes), "--neighbours", str(args.neighbours), "--threads", str(args.threads),
    ]
    # A fixed mmap threshold stops glibc from serving big tensors out of its heap after the first
    # frees (its dynamic threshold grows to 32 MB), where freed memory stays resident and the RSS peak
    # would depend on allocation history rather than on what the fit keeps alive.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    out = subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ratio(new: float, old: float) -> str:
    return f"{new / old:5.2f}x" if old > 0 else "   - "


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(
        f"STAGATE full-batch scaling: {args.genes} genes, hidden (512, 30), "
        f"kNN k={args.neighbours} symmetrised, {args.epochs} timed epochs after {args.warmup} warm-up, "
        f"{args.threads} thread(s), device {rows[0]['device']}; memory = {rows[0]['memory_method']}"
    )
    header = (
        f"{'cells':>8} {'edges':>9} {'s/epoch':>8} {'cpu s/ep':>8} {'peak MiB':>9} |"
        f" {'cells x':>7} {'time x':>7} {'cpu x':>7} {'mem x':>7}"
    )
    print(header)
    print("-" * len(header))
    for i, row in enumerate(rows):
        mib = row["peak_bytes"] / 2**20
        growth = ""
        if i > 0:
            prev = rows[i - 1]
            growth = " ".join(
                f"{ratio(row[key], prev[key]):>7}"
                for key in ("cells", "seconds_per_epoch", "cpu_seconds_per_epoch", "peak_bytes")
            )
        print(
            f"{row['cells']:>8} {row['edges']:>9} {row['seconds_per_epoch']:>8.3f} "
            f"{row['cpu_seconds_per_epoch']:>8.3f} {mib:>9.1f} | {growth}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per size")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs before them (>= 1)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--genes", type=int, default=300)
    parser.add_argument("--neighbours", type=int, default=6, help="k of the kNN graph before symmetrising")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 1 or args.warmup < 1:
        # The first timed epoch is measured from the end of the previous one, so one warm-up is needed.
        parser.error("--epochs and --warmup must be >= 1")
    if args.child is not None:
        sys.path.insert(0, str(REPO))
        print(json.dumps(measure(args.child, args)))
        return
    rows = []
    for n in args.sizes:
        rows.append(run_child(n, args))
        print(f"  {n} cells done: {rows[-1]['seconds_per_epoch']:.3f} s/epoch", file=sys.stderr, flush=True)
    print_table(rows, args)


if __name__ == "__main__":
    main()
