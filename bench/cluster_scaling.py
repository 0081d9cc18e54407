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

``--memory`` measures instead whether memory stays flat over a long fit (issue 11, finding 4):
STAGATE and GraphST on one small slide (``--memory-cells`` 621 spots x ``--memory-genes`` 3,000,
as the finding measured) for ``--memory-epochs`` (500), the resident set sampled after every epoch,
with glibc's allocator left at its defaults as users run it. It prints the slope in MiB per 100
epochs for today's training loop and for the loop as it was before the fix (kept in this file as
``legacy_run_epochs`` and swapped in by its child process), each model and loop in a fresh
subprocess:

    python bench/cluster_scaling.py --memory --memory-epochs 500
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


def legacy_run_epochs(loss_fn, optimizer, epochs, *, clip_params=None, clip_norm=None, progress=None):
    """``cluster.training.run_epochs`` before issue 11: it kept every epoch's ``loss.detach()``, and on
    CPU ``F.mse_loss`` returns a 0-d view of its whole n x genes elementwise buffer, so STAGATE kept
    one such buffer per epoch. The baseline of ``--memory``; do not use it for anything else."""
    import torch

    losses = []
    for epoch in range(1, epochs + 1):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        if clip_norm is not None and clip_params is not None:
            torch.nn.utils.clip_grad_norm_(clip_params, clip_norm)
        optimizer.step()
        losses.append(loss.detach())
        if progress is not None:
            progress(epoch, float(loss.detach()))
    if not losses:
        return ()
    return tuple(float(v) for v in torch.stack(losses).cpu().tolist())


def measure_memory(model: str, loop: str, args: argparse.Namespace) -> dict:
    """One long fit in this process: the resident set after every epoch, and its slope."""
    import psutil

    import cluster.training as training
    from ssl_st.threads import limit_threads

    limit_threads(args.threads)
    if loop == "legacy":
        training.run_epochs = legacy_run_epochs  # FullBatchFit.train looks it up at call time
    x, a = synthetic_slide(args.memory_cells, args.memory_genes, args.neighbours)
    process = psutil.Process()
    rss: list[int] = []
    fit, config = {
        "stagate": (training.fit_stagate, training.STAGATEConfig(epochs=args.memory_epochs)),
        "graphst": (training.fit_graphst, training.GraphSTConfig(epochs=args.memory_epochs)),
    }[model]
    release_free_heap()
    before = process.memory_info().rss
    with PeakRSS() as peak:
        result = fit(x, a, config, device="cpu", progress=lambda epoch, loss: rss.append(process.memory_info().rss))
    mib = np.asarray(rss, dtype=float) / 2**20
    # The first tenth is left out of the fit: Adam's state, first-call caches and the heap's first
    # growth land there, and they are paid once, not per epoch.
    start = len(mib) // 10
    epochs = np.arange(1, len(mib) + 1)
    slope = float(np.polyfit(epochs[start:], mib[start:], 1)[0]) * 100.0
    return {
        "model": model, "loop": loop, "epochs": len(mib), "cells": args.memory_cells, "genes": args.memory_genes,
        "rss_before_mib": before / 2**20, "rss_at_start_mib": float(mib[start]), "rss_end_mib": float(mib[-1]),
        "peak_delta_mib": peak.delta / 2**20, "mib_per_100_epochs": slope, "fit_seconds": result.seconds,
    }


def run_memory_child(model: str, loop: str, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--memory-child", model, loop,
        "--memory-epochs", str(args.memory_epochs), "--memory-cells", str(args.memory_cells),
        "--memory-genes", str(args.memory_genes), "--neighbours", str(args.neighbours), "--threads", str(args.threads),
    ]
    # glibc's defaults on purpose (no MALLOC_* variables): what a user's run gets.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def print_memory_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(
        f"Memory over epochs: {args.memory_cells} cells x {args.memory_genes} genes, kNN k={args.neighbours} "
        f"symmetrised, {args.memory_epochs} epochs, {args.threads} thread(s), CPU, glibc malloc defaults; "
        "RSS sampled after every epoch, slope fitted after the first 10% of epochs"
    )
    header = (f"{'model':>8} {'loop':>7} {'RSS start':>10} {'RSS end':>9} {'peak delta':>11} "
              f"{'MiB/100 epochs':>15} {'fit s':>7}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['model']:>8} {row['loop']:>7} {row['rss_at_start_mib']:>10.0f} {row['rss_end_mib']:>9.0f} "
              f"{row['peak_delta_mib']:>11.0f} {row['mib_per_100_epochs']:>15.1f} {row['fit_seconds']:>7.0f}")
    by = {(r["model"], r["loop"]): r["mib_per_100_epochs"] for r in rows}
    for model in dict.fromkeys(r["model"] for r in rows):
        if (model, "legacy") in by and (model, "current") in by:
            print(f"{model}: {by[model, 'legacy']:.1f} -> {by[model, 'current']:.1f} MiB per 100 epochs (legacy -> current loop)")


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
    parser.add_argument("--memory", action="store_true", help="memory over epochs instead of scaling over cells")
    parser.add_argument("--memory-cells", type=int, default=621)
    parser.add_argument("--memory-genes", type=int, default=3000)
    parser.add_argument("--memory-epochs", type=int, default=500)
    parser.add_argument("--models", nargs="+", default=["stagate", "graphst"], choices=["stagate", "graphst"])
    parser.add_argument("--loops", nargs="+", default=["legacy", "current"], choices=["legacy", "current"])
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        sys.path.insert(0, str(REPO))
        print(json.dumps(measure_memory(*args.memory_child, args)))
        return
    if args.memory:
        rows = []
        for model in args.models:
            for loop in args.loops:
                rows.append(run_memory_child(model, loop, args))
                print(f"  {model} {loop}: {rows[-1]['mib_per_100_epochs']:.1f} MiB/100 epochs", file=sys.stderr, flush=True)
        print_memory_table(rows, args)
        return
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
