"""Sharded datasets: cells as Parquet shards, scTab's Merlin store as it is, and their embedding with
Ray Data.

- :mod:`.format` — the shard directory layout, its manifest and :func:`verify` (:class:`ShardError`);
- :mod:`.merlin` — a split of scTab's Merlin store (dense ``X``, coded columns, lookup tables);
- :mod:`.source` — :func:`open_source`, one checked entry point over both;
- :mod:`.write` — any dataset ``ssl-st data import`` reads -> shards (h5ad read backed);
- :mod:`.inputs` — a batch of rows -> the model input :func:`ssl_st.pp.model_input` makes;
- :mod:`.embed` — :func:`embed_shards` (Ray Data) and :func:`read_embedding`;
- :mod:`.stream` — pretraining input streamed to Ray Train workers (:class:`StreamOptions`,
  :func:`shard_dataset`: files reshuffled every epoch, a shuffle buffer per worker).

Importing this package, :func:`verify` and :func:`open_source` import no numpy, pandas, pyarrow,
anndata, torch or Ray: ``plan`` checks shard directories through them. The rest loads on first use.

>>> shard("section.h5ad", "section.shards")                                  # doctest: +SKIP
>>> embed_shards("RandomMask.ckpt", "section.shards", "section.emb")          # doctest: +SKIP
>>> read_embedding("section.emb").values.shape                                # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from .format import FORMAT_VERSION, Manifest, ShardError, ShardFile, verify
from .merlin import MerlinSplit, is_merlin_store, open_split
from .source import Source, open_source

if TYPE_CHECKING:
    from .embed import EmbedOptions, EmbedResult, Embedding, ModelRef, embed_shards, read_embedding
    from .write import DEFAULT_ROWS_PER_SHARD, shard, shard_anndata, shard_h5ad
    from .stream import StreamOptions, shard_dataset

__getattr__, __dir__ = lazy_attributes(__name__, {
    "shard": ".write", "shard_anndata": ".write", "shard_h5ad": ".write", "DEFAULT_ROWS_PER_SHARD": ".write",
    "embed_shards": ".embed", "read_embedding": ".embed", "EmbedOptions": ".embed", "EmbedResult": ".embed",
    "Embedding": ".embed", "ModelRef": ".embed", "StreamOptions": ".stream", "shard_dataset": ".stream",
})

__all__ = [
    "DEFAULT_ROWS_PER_SHARD",
    "FORMAT_VERSION",
    "EmbedOptions",
    "EmbedResult",
    "Embedding",
    "Manifest",
    "MerlinSplit",
    "ModelRef",
    "ShardError",
    "ShardFile",
    "Source",
    "StreamOptions",
    "embed_shards",
    "is_merlin_store",
    "open_source",
    "open_split",
    "read_embedding",
    "shard",
    "shard_anndata",
    "shard_dataset",
    "shard_h5ad",
    "verify",
]
