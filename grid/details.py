"""What a finished cell keeps beside its rows so that the report can draw it.

Rows hold scores; a picture needs more: the test cells' predicted labels (confusion matrices), the
domains a method drew on the section (maps next to the truth), and the embedding the cell scored
(UMAPs). A cell returns these as small tables (:class:`grid.tasks.CellOutput`), and the store keeps
each as ``<results>/details/<cell_id>.<kind>.parquet``:

===============  ======================================  ==============================================
kind             written by                              columns
===============  ======================================  ==============================================
``predictions``  cell-type cells (every mode)            ``obs``, ``true``, ``predicted`` (test split)
``domains``      spatial-clustering and tuning cells     ``obs``, ``x``, ``y``, ``domain``, ``truth``
``embedding``    zero-shot cell-type cells               ``obs``, ``label``, ``e0`` ... (a seeded sample
                                                         of at most :data:`EMBEDDING_SAMPLE` cells)
===============  ======================================  ==============================================

Details are written atomically, before the cell's row file (:meth:`grid.store.ResultStore.write`), so
a cell whose rows exist has its details; a store written before details existed still reports its
tables, with fewer figures. ``obs`` is the AnnData's ``obs_names`` (a sharded dataset's row number),
so details join back onto the data: ``adata.obs.loc[details["obs"]]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    import pandas as pd

PREDICTIONS, DOMAINS, EMBEDDING = "predictions", "domains", "embedding"
KINDS = (PREDICTIONS, DOMAINS, EMBEDDING)
EMBEDDING_SAMPLE = 20_000  # cells of an embedding a cell keeps, at most: 5 MB of float32 at 64 dims
UMAP_CELLS = 1500  # cells the report's UMAPs draw of that sample by default: under a second each
SAMPLE_SEED = 0  # the sample is the same whichever seed the cell runs, so that its seeds draw alike


def predictions(obs: Sequence[str], true: Sequence[str], predicted: Sequence[str]) -> pd.DataFrame:
    """The test cells' labels and what the cell predicted for them."""
    import pandas as pd

    return pd.DataFrame({"obs": pd.Series(obs, dtype=str).to_numpy(), "true": pd.Series(true, dtype=str).to_numpy(),
                         "predicted": pd.Series(predicted, dtype=str).to_numpy()})


def domains(obs: Sequence[str], spatial: np.ndarray, domain: Sequence[object], truth: Sequence[object] | None) -> pd.DataFrame:
    """Every cell's coordinates, its domain and (where the section has one) its true domain."""
    import numpy as np
    import pandas as pd

    xy = np.asarray(spatial, dtype=np.float64)
    frame = pd.DataFrame({"obs": pd.Series(obs, dtype=str).to_numpy(), "x": xy[:, 0], "y": xy[:, 1],
                          "domain": pd.Series(domain).astype(str).to_numpy()})
    frame["truth"] = None if truth is None else pd.Series(truth).astype(str).to_numpy()
    return frame


def sample_rows(n: int, size: int = EMBEDDING_SAMPLE, seed: int = SAMPLE_SEED) -> np.ndarray:
    """Sorted row indices of a seeded sample of ``min(n, size)`` of ``n`` rows (all of them when fewer)."""
    import numpy as np

    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def embedding_sample(obs: Sequence[str], labels: Sequence[str], embedding: np.ndarray) -> pd.DataFrame:
    """Embedding rows (float32, sampled by :func:`sample_rows`) with each cell's name and label."""
    import numpy as np
    import pandas as pd

    values = np.asarray(embedding, dtype=np.float32)
    frame = pd.DataFrame(values, columns=[f"e{i}" for i in range(values.shape[1])])
    frame.insert(0, "label", pd.Series(labels, dtype=str).to_numpy())
    frame.insert(0, "obs", pd.Series(obs, dtype=str).to_numpy())
    return frame


def embedding_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The ``e0`` ... columns of an ``embedding`` detail as one float32 array."""
    import numpy as np

    columns = [c for c in frame.columns if c.startswith("e") and c[1:].isdigit()]
    return frame[sorted(columns, key=lambda c: int(c[1:]))].to_numpy(dtype=np.float32)


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink, compression="zstd")
    return sink.getvalue().to_pybytes()
