"""The GPU proofs, in one process: each path on ``cuda`` against the same work on the CPU, as ratios.

Usage: python bench/gpu_check.py [--quick] [--json FILE]

1. Zero-shot embedding (the one embedding path, :meth:`SSLModel.embed`): the full-size encoder
   (19,331 -> 512 -> 512 -> 256 -> 256 -> 64) on sparse panel cells (300 genes, ~90 detected);
   cells/s. Goal on one GPU: >= 1,000,000 cells/s with sparse input. The result must equal the CPU's.
2. Pretraining (:meth:`RandomMaskConfig.train`, the loop every method shares): samples/s of the
   full-size masked autoencoder on a sparse atlas-like matrix.
3. STAGATE (:func:`cluster.training.fit_stagate`): seconds per full-batch epoch on a kNN graph.

Only torch, numpy, scipy, pandas and anndata are needed (no Ray), so it runs on a machine that
carries those; without a GPU it says so and times the CPU alone. ``--quick`` shrinks every size
(a smoke run here). Each figure is the median of timed repeats after a warm-up, with
``torch.cuda.synchronize()`` before the clock stops.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import scipy.sparse as sp

N_VOCAB = 19_331
PANEL = 300


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up: kernels, allocator, cuBLAS handles
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _panel_cells(n: int, seed: int = 0) -> sp.csr_matrix:
    """n cells of a 300-gene panel placed in the 19,331-gene vocabulary, log1p-normalised values."""
    rng = np.random.default_rng(seed)
    genes = np.sort(rng.choice(N_VOCAB, PANEL, replace=False))
    detected = rng.random((n, PANEL)) < 0.3
    rows, cols = np.nonzero(detected)
    values = np.log1p(rng.integers(1, 20, rows.size).astype(np.float32))
    return sp.csr_matrix((values, (rows, genes[cols])), shape=(n, N_VOCAB), dtype=np.float32)


def _vocabulary():
    from ssl_st.genes import Vocabulary

    return Vocabulary(tuple(f"ENSG{i:011d}" for i in range(N_VOCAB)), tuple(f"G{i}" for i in range(N_VOCAB)))


def check_embedding(devices: list[str], n: int, repeats: int) -> dict:
    from ssl_st.models import Architecture, SSLModel

    model = SSLModel.random_init(_vocabulary(), Architecture(), seed=0)
    cells = _panel_cells(n)
    out: dict = {"cells": n}
    reference = model.embed(cells[:2000], device="cpu")
    for device in devices:
        batch = 65_536 if device == "cuda" else 8_192
        seconds = _timed(lambda d=device, b=batch: model.embed(cells, batch_size=b, device=d), device, repeats)
        emb = model.embed(cells[:2000], device=device)
        out[device] = {"seconds": seconds, "cells_per_s": n / seconds,
                       "max_abs_diff_vs_cpu": float(np.abs(emb - reference).max())}
    return out


def check_pretraining(devices: list[str], n: int, epochs: int) -> dict:
    from ssl_st.models import Architecture, RandomMaskConfig

    cells = _panel_cells(n, seed=1)
    vocabulary = _vocabulary()
    out: dict = {"cells": n, "epochs": epochs}
    for device in devices:
        plan = RandomMaskConfig(epochs=epochs, batch_size=8192 if device == "cuda" else 1024)
        start = time.perf_counter()
        model = plan.train(cells, vocabulary, Architecture(), seed=0, device=device)
        _sync(device)
        seconds = time.perf_counter() - start
        out[device] = {"seconds": seconds, "samples_per_s": n * 0.9 * epochs / seconds,
                       "final_val_loss": model.training["val_loss"][-1]}
    return out


def check_stagate(devices: list[str], n: int, epochs: int) -> dict:
    from cluster.graph import neighbor_graph
    from cluster.training import STAGATEConfig, fit_stagate

    rng = np.random.default_rng(2)
    coords = rng.uniform(0, 1000, (n, 2))
    adjacency, _ = neighbor_graph(coords, k=24)
    x = np.log1p(rng.poisson(0.5, (n, PANEL)).astype(np.float32))
    out: dict = {"cells": n, "epochs": epochs}
    for device in devices:
        result = fit_stagate(x, adjacency, STAGATEConfig(epochs=epochs), seed=0, device=device)
        out[device] = {"seconds": result.seconds, "s_per_epoch": result.seconds / epochs}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    import torch

    gpu = torch.cuda.is_available()
    devices = ["cpu", "cuda"] if gpu else ["cpu"]
    sizes = {"embed": 20_000, "pretrain": 4_000, "stagate": 5_000, "repeats": 1, "epochs": 2} if args.quick else \
        {"embed": 1_000_000, "pretrain": 200_000, "stagate": 50_000, "repeats": 3, "epochs": 20}
    report = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if gpu else None,
              "cpu_threads": torch.get_num_threads(), "machine": platform.node(), "quick": args.quick}
    print(f"torch {report['torch']}; GPU: {report['gpu'] or 'none (CPU only)'}; CPU threads {report['cpu_threads']}",
          flush=True)
    # The CPU leg runs smaller where the full size would take minutes; rates are per cell either way.
    cpu_cap = {"embed": 200_000, "pretrain": 20_000, "stagate": 20_000}
    for name, fn, size, extra in (("embed", check_embedding, sizes["embed"], sizes["repeats"]),
                                  ("pretrain", check_pretraining, sizes["pretrain"], 1),
                                  ("stagate", check_stagate, sizes["stagate"], sizes["epochs"])):
        results = {}
        for device in devices:
            n = size if device == "cuda" else min(size, cpu_cap[name])
            results.update(fn([device], n, extra))
            results[f"{device}_cells"] = n
        report[name] = results
        line = ", ".join(f"{d}: " + ", ".join(f"{k} {v:,.3g}" for k, v in results[d].items() if isinstance(v, float))
                         for d in devices)
        print(f"{name}: {line}", flush=True)
        if gpu:
            rate = {"embed": "cells_per_s", "pretrain": "samples_per_s"}.get(name)
            ratio = results["cuda"][rate] / results["cpu"][rate] if rate else \
                results["cpu"]["s_per_epoch"] / results["cpu_cells"] / (results["cuda"]["s_per_epoch"] / results["cuda_cells"])
            print(f"  cuda / cpu (per cell): {ratio:,.1f}x", flush=True)
    if gpu:
        goal = report["embed"]["cuda"]["cells_per_s"] >= 1_000_000
        print(f"embedding goal (>= 1,000,000 cells/s on one GPU, sparse input): {'met' if goal else 'NOT met'}")
        diff = report["embed"]["cuda"]["max_abs_diff_vs_cpu"]
        print(f"embedding on cuda vs cpu: max |diff| {diff:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
