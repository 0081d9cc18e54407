"""Graph-autoencoder training keeps no memory from one epoch to the next (issue 11, finding 4).

STAGATE grew by one n x genes buffer per epoch (7 MB on 621 spots x 3,000 genes, 7.8 GB after
1,000 epochs): the loop kept each epoch's ``loss.detach()``, and on CPU ``F.mse_loss`` returns a
0-d view of its whole elementwise buffer. What is measured here is the bytes glibc's malloc has
handed out and not got back (heap chunks in use plus mmapped chunks, ``mallinfo2``): unlike the
resident set, it does not depend on how the allocator reuses freed pages, so the bound is robust
on a loaded machine. The slope in MiB per 100 epochs, before and after, is
``bench/cluster_scaling.py --memory``.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest

from cluster.training import GraphSTConfig, STAGATEConfig, fit_graphst, fit_stagate

from .test_cluster_models import banded_slide


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _malloc_live_bytes():
    """A function returning glibc's live malloc bytes, or None off glibc (< 2.33 has no mallinfo2)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2

    def live() -> int:
        info = mallinfo2()
        return int(info.uordblks + info.hblkhd)

    return live


LIVE = _malloc_live_bytes()
EPOCHS = 40


@pytest.mark.skipif(LIVE is None, reason="needs glibc's mallinfo2 to count live allocations")
@pytest.mark.parametrize(("fit", "config"), [(fit_stagate, STAGATEConfig(hidden=(32, 8), epochs=EPOCHS)),
                                             (fit_graphst, GraphSTConfig(latent=8, epochs=EPOCHS))],
                         ids=["stagate", "graphst"])
def test_training_holds_no_memory_across_epochs(fit, config):
    # 400 cells x 1,000 genes: one elementwise buffer is 1.6 MB, so a buffer kept per epoch would
    # add ~48 MB over the epochs measured; the bound is four buffers.
    x, adjacency, _ = banded_slide(width=20, height=20, genes=1000, noise=1.0)
    buffer = x.nbytes
    live: list[int] = []
    fit(x, adjacency, config, device="cpu", progress=lambda epoch, loss: live.append(LIVE()))
    growth = live[-1] - live[9]  # after 10 epochs: Adam's state and the first-call caches exist
    assert growth < 4 * buffer, f"live malloc bytes grew {growth / 2**20:.1f} MiB over {EPOCHS - 10} epochs"
    assert np.isfinite(live).all()
