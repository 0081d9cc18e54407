"""Built-in demo data: a seeded simulator of the study's datasets, generated on demand and cached.

>>> atlas = ssl_st.datasets.demo("atlas")            # reference single-cell atlas
>>> section = ssl_st.datasets.demo("merscope", seed=1)  # a MERSCOPE-like spatial section

Files are cached as h5ad under ``$SSL_ST_CACHE`` (default ``~/.cache/ssl-st``), keyed by everything
that determines their content, and written atomically so concurrent workers never read half a file.

Importing the package is cheap (anndata and the simulator load on first use): a config that names
the study's files (:mod:`.registry`) is read without the data stack.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData

DEMO_FLAVOURS = ("atlas", "merscope", "xenium", "slideseq", "slideseq-mouse")
DEFAULT_CELLS = {"atlas": 8000, "merscope": 5000, "xenium": 5000, "slideseq": 5000, "slideseq-mouse": 5000}


def default_cache_dir() -> Path:
    return Path(os.environ.get("SSL_ST_CACHE", Path.home() / ".cache" / "ssl-st"))


def generate(flavour: str, *, seed: int = 0, n_cells: int | None = None, world_seed: int = 0) -> AnnData:
    """Simulate one demo dataset in memory (no cache)."""
    from . import simulate

    if flavour not in DEMO_FLAVOURS:
        raise ValueError(f"unknown demo flavour '{flavour}'; choose one of {', '.join(DEMO_FLAVOURS)}")
    n = n_cells or DEFAULT_CELLS[flavour]
    if flavour == "atlas":
        return simulate.simulate_atlas(n, seed=seed, world_seed=world_seed)
    return simulate.simulate_section(flavour, n, seed=seed, world_seed=world_seed)


def write_h5ad_atomic(adata: AnnData, path: Path) -> Path:
    """Write ``adata`` so that ``path`` either does not exist or holds the complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def demo_path(
    flavour: str,
    *,
    seed: int = 0,
    n_cells: int | None = None,
    world_seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Path:
    """Path of the cached demo dataset, generating it first if needed."""
    from . import simulate

    n = n_cells or DEFAULT_CELLS.get(flavour, 0)
    name = f"demo-{flavour}-seed{seed}-n{n}-world{world_seed}-v{simulate.SIMULATOR_VERSION}.h5ad"
    path = Path(cache_dir or default_cache_dir()) / name
    if not path.is_file():
        write_h5ad_atomic(generate(flavour, seed=seed, n_cells=n_cells, world_seed=world_seed), path)
    return path


def demo(flavour: str, **kwargs) -> AnnData:
    """Load a demo dataset (see :func:`demo_path` for the arguments)."""
    import anndata as ad

    return ad.read_h5ad(demo_path(flavour, **kwargs))
