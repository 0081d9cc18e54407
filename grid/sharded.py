"""Sharded datasets in the grid: checked once, then streamed where they lie.

A dataset with ``source: shards`` or ``source: merlin`` is never copied into the results: its
data artifact is a small JSON *record* that the dataset was checked, checksums included, with what
it holds (rows, genes, value type, obs columns). Cells and builders open the shards through the
record. The shards themselves must be readable at the same path from every node that runs them (a
shared filesystem), as a Merlin store on a cluster usually is.

Only what can stream does: the zero-shot embedding (Ray Data, :func:`ssl_st.shards.embed_shards`)
and pretraining on a sharded reference. Modes that hold the whole dataset in memory (fine-tuning, the
supervised and PCA baselines, spatial clustering, imputation) are refused when the config is read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import scipy.sparse as sp

    from ssl_st.genes import Vocabulary
    from ssl_st.shards import Source

    from .config import DatasetSpec

RECORD_VERSION = 1


def is_record(path: Path) -> bool:
    """Whether a data artifact is a sharded dataset's record (else an h5ad file)."""
    return Path(path).suffix == ".json"


def check_source(spec: DatasetSpec, *, checksums: bool) -> Source:
    """The dataset's shards, checked (``checksums``: every file's sha256, else footers and schemas);
    raises :class:`ssl_st.shards.ShardError` naming the file at fault."""
    from ssl_st.shards import open_source

    return open_source(spec.path, split=spec.split, checksums=checksums)  # type: ignore[arg-type]


def write_record(spec: DatasetSpec, out: Path) -> Path:
    """Check every shard of ``spec`` and record it at ``out`` (atomically)."""
    source = check_source(spec, checksums=True)
    record = {
        "record_version": RECORD_VERSION, "source": source.kind, "path": str(source.path),
        "split": source.merlin.split if source.merlin else None, "n_rows": source.n_rows, "n_genes": source.n_genes,
        "values": source.values.kind, "obs_columns": list(obs_columns(source)),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, out)
    return out


def read_record(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def open_record(path: Path) -> Source:
    """The source a record vouches for (already checked with checksums: footers only here)."""
    from ssl_st.shards import open_source

    record = read_record(path)
    return open_source(record["path"], split=record["split"], checksums=False)


def obs_columns(source: Source) -> tuple[str, ...]:
    if source.merlin is not None:
        return tuple(source.merlin.obs_columns)
    return tuple(obs for _, obs in source.manifest.obs_columns)  # type: ignore[union-attr]


def vocabulary_of(path: Path) -> Vocabulary:
    """The gene vocabulary of a data artifact: an h5ad file's var, or the shards' ``var.parquet``."""
    from ssl_st.genes import Vocabulary

    if is_record(path):
        return Vocabulary.from_var(open_record(path).var())
    import anndata as ad

    return Vocabulary.from_var(ad.read_h5ad(path, backed="r").var)


def model_inputs_of(path: Path, vocabulary: Vocabulary) -> sp.csr_matrix:
    """Every cell of a data artifact as the model input (sparse); shards are read one at a time."""
    if is_record(path):
        from ssl_st.shards.inputs import read_inputs

        return read_inputs(open_record(path), vocabulary)[0]
    import anndata as ad

    from ssl_st.pp import model_input

    return model_input(ad.read_h5ad(path), vocabulary)[0]
