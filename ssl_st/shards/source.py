"""One entry point over both on-disk layouts: :func:`open_source` checks a cell shard directory
(:mod:`.format`) or a split of a Merlin store (:mod:`.merlin`) and returns a :class:`Source`, the
files to stream and what their rows hold. ``plan`` calls it with ``checksums=False`` (footers and
schemas only); the embedding calls it with checksums before anything runs.

Light at import (the standard library and ssl_st.io.values): ``plan`` imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..io.values import ValueType
from .format import MANIFEST_NAME, VAR_NAME, Manifest, ShardError, verify
from .merlin import VALUES as MERLIN_VALUES, MerlinSplit, is_merlin_store, open_split

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Source:
    """A checked dataset on disk, ready to stream: ``files`` in row order."""

    kind: Literal["shards", "merlin"]
    path: Path
    files: tuple[Path, ...]
    n_rows: int
    n_genes: int
    values: ValueType
    manifest: Manifest | None = None  # shards
    merlin: MerlinSplit | None = None  # merlin

    @property
    def dense(self) -> bool:
        return self.kind == "merlin"

    @property
    def file_rows(self) -> tuple[int, ...]:
        """Rows of each of ``files`` (the manifest's, or the Merlin footers' read when opened)."""
        return self.merlin.rows if self.merlin is not None else tuple(s.rows for s in self.manifest.shards)

    def var(self) -> pd.DataFrame:
        import pandas as pd

        return self.merlin.var() if self.merlin is not None else pd.read_parquet(self.path / VAR_NAME)

    def read_obs(self, columns: list[str] | None = None) -> pd.DataFrame:
        """obs columns (default: all) in cell order, indexed by cell id; Merlin codes decoded to labels.
        Reads only those columns (the expression stays on disk)."""
        if self.merlin is not None:
            return self.merlin.read_obs(columns)
        import pandas as pd
        import pyarrow.parquet as pq

        names = dict(self.manifest.obs_columns)  # shard column -> obs column
        by_obs = {obs: stored for stored, obs in names.items()}
        wanted = list(names) if columns is None else [by_obs.get(c, c) for c in columns]
        missing = [c for c in wanted if c not in names]
        if missing:
            raise ShardError(self.path, f"obs column '{missing[0]}'", f"is not in the shards (they have {list(by_obs)})",
                             "name one of the dataset's obs columns")
        frames = [pq.read_table(f, columns=["cell_id", *wanted]).to_pandas() for f in self.files]
        frame = pd.concat(frames, ignore_index=True).set_index("cell_id")
        frame.index.name = None
        return frame.rename(columns=names)

    def describe(self) -> str:
        what = f"split '{self.merlin.split}' of a Merlin store" if self.merlin else "shards"
        return (f"{self.path}: {what}, {len(self.files)} file(s), {self.n_rows:,} cells x {self.n_genes:,} genes "
                f"({self.values})")


def open_source(path: str | Path, *, split: str | None = None, checksums: bool = True) -> Source:
    """Check ``path`` (a shard directory, or a Merlin store with ``split``) and return it as a
    :class:`Source`; raises :class:`ShardError` naming the file at fault."""
    path = Path(path)
    if is_merlin_store(path) and not (path / MANIFEST_NAME).exists():
        if split is None:
            raise ShardError(path, "split", "is not named, and a Merlin store has several",
                             "name one of train, val, test (split:, --split)")
        merlin = open_split(path, split)
        return Source("merlin", path, merlin.files, merlin.n_rows, merlin.n_genes, MERLIN_VALUES, merlin=merlin)
    if split is not None:
        raise ShardError(path, "split", f"'{split}' was named, but this is not a Merlin store",
                         "leave split out for a shard directory")
    manifest = verify(path, checksums=checksums)
    values = ValueType(manifest.values, manifest.target_sum)  # type: ignore[arg-type]
    files = tuple(path / s.name for s in manifest.shards)
    return Source("shards", path, files, manifest.n_rows, manifest.n_genes, values, manifest=manifest)
