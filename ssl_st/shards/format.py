"""The on-disk layout of a sharded dataset and of its embedding, and the checks that run before either
is read.

A **cell shard directory** (written by :mod:`.write`) holds::

    manifest.json          what is there: format version, source, rows and sha256 of every file, schema
    var.parquet            the dataset's genes (the AnnData's var, index kept): what `indices` point into
    part-00000.parquet     one row per cell: row, cell_id, indices, counts, x, y, obs columns
    part-00001.parquet     ...

``indices`` (list<int32>) and ``counts`` (list<float32>) are a CSR row: the dataset genes a cell
expresses and their values (raw counts, or the normalised values the manifest's ``values`` declares).
``row`` is the cell's position in the dataset, so any reader (Ray Data reads shards in no fixed order)
can put cells back in order. An **embedding directory** (:mod:`.embed`) has the same manifest, no
var.parquet, and part files of ``row``, ``cell_id``, ``embedding`` (fixed_size_list<float32>).

:func:`verify` is what ``plan`` and every reader run first: a missing manifest, a shard missing,
truncated, of another schema or row count, or whose sha256 differs, raises :class:`ShardError` naming
the shard and the fix, before any cell is read: nothing runs on a half-read dataset.

This module imports only the standard library at import time (``plan`` reads it); pyarrow is imported
by the functions that open Parquet files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
VAR_NAME = "var.parquet"
PART_PREFIX = "part-"
# Columns of a cell shard that are not obs columns; an obs column with one of these names is stored
# as "obs_<name>" (the manifest's obs_columns says which obs column each shard column holds).
RESERVED_COLUMNS = ("row", "cell_id", "indices", "counts", "x", "y")
Kind = Literal["cells", "embedding"]


class ShardError(ValueError):
    """A shard directory (or Merlin store) that cannot be read as it is: ``path`` (the shard or file),
    ``field`` (what about it), ``problem`` and ``fix`` are kept apart, as :class:`ssl_st.io.DataError` does."""

    def __init__(self, path: str | Path, field: str, problem: str, fix: str) -> None:
        self.path, self.field, self.problem, self.fix = str(path), field, problem, fix
        super().__init__(f"{path}: {field} {problem}; {fix}")

    def __reduce__(self):  # keep the parts when pickled (Ray ships exceptions between processes)
        return (type(self), (self.path, self.field, self.problem, self.fix))


@dataclass(frozen=True)
class ShardFile:
    """One file of a shard directory as it was written."""

    name: str  # relative to the directory
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a shard directory holds; written last, so its presence means the directory is complete."""

    kind: Kind
    n_rows: int
    columns: tuple[tuple[str, str], ...]  # (name, Arrow type) of every part file, in order
    shards: tuple[ShardFile, ...]
    source: str = ""  # where the cells came from (a path), for the record
    source_format: str = ""  # h5ad, xenium, merscope, anndata; for an embedding: the cells' directory
    values: str = "counts"  # what `counts` holds (ssl_st.io.values): counts, normalized, log-normalized
    target_sum: float | None = None  # the sum each cell was scaled to, when declared
    n_genes: int = 0
    var: ShardFile | None = None
    obs_columns: tuple[tuple[str, str], ...] = ()  # (shard column, obs column)
    spatial: bool = False  # x, y hold obsm['spatial']
    info: Mapping[str, Any] = field(default_factory=dict)  # kind-specific facts (an embedding's model, coverage)
    format_version: int = FORMAT_VERSION
    ssl_st_version: str = ""

    @property
    def schema(self) -> dict[str, str]:
        return dict(self.columns)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        var = data.get("var")
        return cls(
            **{
                **data,
                "columns": tuple((str(n), str(t)) for n, t in data["columns"]),
                "shards": tuple(ShardFile(**s) for s in data["shards"]),
                "var": ShardFile(**var) if var else None,
                "obs_columns": tuple((str(c), str(o)) for c, o in data.get("obs_columns", ())),
                "info": dict(data.get("info", {})),
            }
        )


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically (a reader sees none or all of it)."""
    target = directory / MANIFEST_NAME
    tmp = directory / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(manifest.to_json())
    tmp.replace(target)
    return target


def describe_file(path: Path) -> ShardFile:
    """The manifest entry of a Parquet file just written: rows from its footer, size, sha256."""
    import pyarrow.parquet as pq

    from ..hub import sha256_file

    return ShardFile(path.name, pq.ParquetFile(path).metadata.num_rows, path.stat().st_size, sha256_file(path))


def arrow_columns(schema: Any) -> tuple[tuple[str, str], ...]:
    """A pyarrow schema as the manifest records it."""
    return tuple((f.name, str(f.type)) for f in schema)


def read_manifest(directory: str | Path) -> Manifest:
    """The manifest of a shard directory, or a :class:`ShardError` saying why there is none to read."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ShardError(directory, "shard directory", "does not exist" if not directory.exists() else "is a file",
                         "give the directory that `ssl-st data shard` wrote (it holds manifest.json)")
    target = directory / MANIFEST_NAME
    if not target.is_file():
        parts = sorted(p.name for p in directory.glob("*.parquet"))
        hint = (f" It has {len(parts)} Parquet file(s) but no manifest: an interrupted write, or not a directory "
                "written by `ssl-st data shard`" if parts else "")
        if (directory / "train").is_dir() or (directory / "categorical_lookup").is_dir():
            hint = " It looks like a scTab/Merlin store: read it with source: merlin (and a split)"
        raise ShardError(target, MANIFEST_NAME, "is missing", f"write the directory again with `ssl-st data shard`.{hint}")
    try:
        data = json.loads(target.read_text())
        manifest = Manifest.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ShardError(target, MANIFEST_NAME, f"cannot be read ({type(exc).__name__}: {exc})",
                         "the directory is damaged: write it again with `ssl-st data shard`") from exc
    if manifest.format_version > FORMAT_VERSION:
        raise ShardError(target, "format_version", f"is {manifest.format_version}; this ssl-st reads up to {FORMAT_VERSION}",
                         "upgrade ssl-st")
    return manifest


def _check_file(directory: Path, entry: ShardFile, schema: dict[str, str] | None, checksums: bool) -> None:
    """Footer first, then schema, rows, size, sha256: each problem is named by what shows it best (a
    file of another dataset has another schema whatever its size; a cut-off file has no footer)."""
    import pyarrow.parquet as pq

    path = directory / entry.name
    rewrite = "write the directory again with `ssl-st data shard` (or restore the file)"
    if not path.is_file():
        raise ShardError(path, "shard", "is missing (listed in manifest.json)", rewrite)
    size = path.stat().st_size
    try:
        meta = pq.ParquetFile(path).metadata
        found = arrow_columns(meta.schema.to_arrow_schema())
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a damaged footer
        raise ShardError(path, "Parquet footer", f"cannot be read: {size} bytes, {entry.bytes} when written "
                         f"(truncated?) ({type(exc).__name__}: {exc})", rewrite) from exc
    if schema is not None and dict(found) != schema:
        differ = sorted(set(dict(found).items()) ^ set(schema.items()))
        raise ShardError(path, "schema", f"differs from manifest.json ({', '.join(f'{n}: {t}' for n, t in differ[:6])})",
                         "a file of another dataset or version was copied in: " + rewrite)
    if meta.num_rows != entry.rows:
        raise ShardError(path, "row count", f"is {meta.num_rows}, {entry.rows} when written", rewrite)
    if size != entry.bytes:
        raise ShardError(path, "shard", f"has {size} bytes, {entry.bytes} when written (truncated or overwritten)", rewrite)
    if checksums:
        from ..hub import sha256_file

        if sha256_file(path) != entry.sha256:
            raise ShardError(path, "sha256", "differs from manifest.json (corrupted or overwritten)", rewrite)


def verify(directory: str | Path, *, checksums: bool = True, kind: Kind | None = "cells") -> Manifest:
    """Check a shard directory against its manifest and return the manifest (see the module doc).

    Every listed file must exist with its recorded size, footer row count and schema (``checksums``:
    and sha256, which reads every byte; ``plan`` skips it, readers do not). Parquet files that the
    manifest does not list are an error too: they are what an interrupted rewrite leaves.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if kind is not None and manifest.kind != kind:
        raise ShardError(directory / MANIFEST_NAME, "kind", f"is '{manifest.kind}', expected '{kind}'",
                         "give a directory of cells (`ssl-st data shard`)" if kind == "cells"
                         else "give a directory written by `ssl-st embed`")
    listed = {s.name for s in manifest.shards} | ({manifest.var.name} if manifest.var else set())
    strays = sorted(p.name for p in directory.glob("*.parquet") if p.name not in listed)
    if strays:
        raise ShardError(directory / strays[0], "shard", f"is not in manifest.json ({len(strays)} such file(s))",
                         "remove it, or write the directory again with `ssl-st data shard`")
    if sum(s.rows for s in manifest.shards) != manifest.n_rows:
        raise ShardError(directory / MANIFEST_NAME, "n_rows", "does not match the sum of its shards' rows",
                         "the manifest was edited: write the directory again")
    for entry in manifest.shards:
        _check_file(directory, entry, manifest.schema, checksums)
    if manifest.var is not None:
        _check_file(directory, manifest.var, None, checksums)
        if manifest.var.rows != manifest.n_genes:
            raise ShardError(directory / manifest.var.name, "row count", f"is {manifest.var.rows} genes, "
                             f"the manifest says {manifest.n_genes}", "write the directory again")
    return manifest
