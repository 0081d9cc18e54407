"""Embedding throughput of the full-size encoder (19,331 -> 512 -> 512 -> 256 -> 256 -> 64).

Usage: python bench/embed_throughput.py [--cells 20000] [--genes-measured 15000] [--density 0.05] [--device auto]

Three paths over the same cells, in one process, after a warm-up:
- bare torch: a dense float32 matrix already in memory, pushed through the encoder batch by batch;
- ssl-st model: ``SSLModel.embed`` on the same normalised values held sparse (densified per batch);
- ssl-st end to end: ``ssl_st.tl.embed`` from raw counts in an AnnData (gene mapping, normalisation,
  encoder), i.e. what ``ssl-st embed`` does between reading and writing the file.
Ratios are against bare torch, so machine noise cancels to first order.
"""

from __future__ import annotations

import argparse
import time

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ssl_st import tl
from ssl_st.genes import Vocabulary
from ssl_st.models import Architecture, SSLModel, resolve_device
from ssl_st.pp import model_input

BATCH = 4096


def timed(fn, repeats: int = 3) -> float:
    fn()  # warm-up: allocator, kernels, caches
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20000)
    parser.add_argument("--genes-measured", type=int, default=15000)
    parser.add_argument("--density", type=float, default=0.05, help="fraction of measured genes detected per cell")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    n_genes = 19331
    vocabulary = Vocabulary(tuple(f"ENSG{i:011d}" for i in range(n_genes)), tuple(f"G{i}" for i in range(n_genes)))
    measured = np.sort(rng.choice(n_genes, args.genes_measured, replace=False))
    counts = sp.random(args.cells, args.genes_measured, density=args.density, format="csr", random_state=0, dtype=np.float32)
    counts.data = rng.integers(1, 20, counts.nnz).astype(np.float32)
    adata = ad.AnnData(X=counts, var=pd.DataFrame(index=[vocabulary.ids[i] for i in measured]))
    inputs, _ = model_input(adata, vocabulary)
    dense = torch.from_numpy(inputs.toarray())
    torch.manual_seed(0)
    model = SSLModel.random_init(vocabulary, Architecture(), seed=0)
    encoder = model.encoder.to(device).eval()

    @torch.no_grad()
    def bare() -> None:
        for start in range(0, len(dense), BATCH):
            encoder(dense[start : start + BATCH].to(device)).cpu()

    t_bare = timed(bare)
    t_model = timed(lambda: model.embed(inputs, batch_size=BATCH, device=str(device)))
    t_tl = timed(lambda: tl.embed(adata, model, key="X_bench", device=str(device)))
    n = args.cells
    print(f"device {device}, {torch.get_num_threads()} threads; {n} cells, {args.genes_measured} genes measured, "
          f"{inputs.nnz / n:.0f} non-zeros per cell")
    print(f"bare torch (dense in memory) : {n / t_bare:10.0f} cells/s")
    print(f"ssl-st SSLModel.embed (CSR)  : {n / t_model:10.0f} cells/s   ratio {t_bare / t_model:.2f}")
    print(f"ssl-st tl.embed (raw counts) : {n / t_tl:10.0f} cells/s   ratio {t_bare / t_tl:.2f}")


if __name__ == "__main__":
    main()
