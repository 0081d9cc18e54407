"""One way to cap the threads of this process: torch's intra-op pool and the BLAS/OpenMP pools.

Small networks and panel-sized linear algebra gain nothing from many threads, and on a shared or
oversubscribed machine (Ray workers beside each other, a busy laptop) extra threads mostly wait on
each other: a Tangram fit ran 3-5x faster with one thread than with two. torch and threadpoolctl are
imported inside the functions, so that importing this module stays free.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def limit_threads(n: int) -> None:
    """Use at most ``n`` threads from now on (torch, and every BLAS/OpenMP pool threadpoolctl sees)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(n)


@contextmanager
def limited_threads(n: int | None) -> Iterator[None]:
    """:func:`limit_threads` for the duration of a block, restored afterwards; ``None`` changes nothing."""
    if n is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    try:
        with threadpool_limits(n):
            torch.set_num_threads(n)
            yield
    finally:
        torch.set_num_threads(previous)
