"""scTab's Merlin store, read as it is (upstream_models.md §4)::

    STORE/
      var.parquet                        the 19,331 genes in input order (feature_id, feature_name)
      categorical_lookup/cell_type.parquet   code -> label (index = code, column `label`), one per coded column
      train/ val/ test/                  Parquet parts: `X` (list of 19,331 float32: log1p of each cell
                                         scaled to 10,000 over those genes), `cell_type`, `dataset_id`,
                                         `donor_id`, ... as int64 codes

A split is one logical dataset; its cells have no ids in the store, so a cell is named by its split
and position (``test:0``, ``test:1``, ...), which is stable as long as the store is. The store has no
checksums: :func:`open_split` checks that every part's footer reads, that all parts have one schema
and that ``X`` is a float list as long as var.parquet (when its type says a length); a list of
another length is caught when the batch holding it is read.

pyarrow and pandas are imported by the functions that read, so that ``plan`` can import this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..io.values import ValueType
from .format import ShardError, arrow_columns

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

SPLITS = ("train", "val", "test")
LOOKUP_DIR = "categorical_lookup"
VAR_NAME = "var.parquet"
X_COLUMN = "X"
VALUES = ValueType("log-normalized", 1e4)  # what X holds: log1p of each cell scaled to 10,000
_FLOAT_LIST = re.compile(r"^(?:large_)?(?:fixed_size_)?list<[^:]+: (?:float|double)>(?:\[(\d+)\])?$")


def is_merlin_store(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and any((path / s).is_dir() for s in SPLITS) and (path / VAR_NAME).is_file()


def _natural(path: Path) -> tuple:
    """part.2 before part.10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


@dataclass(frozen=True)
class MerlinSplit:
    """One split of a Merlin store, checked (:func:`open_split`)."""

    root: Path
    split: str
    files: tuple[Path, ...]
    rows: tuple[int, ...]  # per file
    n_genes: int
    columns: tuple[tuple[str, str], ...]

    @property
    def n_rows(self) -> int:
        return sum(self.rows)

    @property
    def obs_columns(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns if name != X_COLUMN)

    def var(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(self.root / VAR_NAME)

    def cell_ids(self, rows: np.ndarray) -> list[str]:
        return [f"{self.split}:{int(r)}" for r in rows]

    def lookup(self, column: str) -> pd.Series | None:
        """Code -> label of a coded column (``categorical_lookup/<column>.parquet``), or None."""
        import pandas as pd

        path = self.root / LOOKUP_DIR / f"{column}.parquet"
        if not path.is_file():
            return None
        try:
            table = pd.read_parquet(path)
        except Exception as exc:  # a damaged file: pyarrow raises several types
            raise ShardError(path, "lookup table", f"cannot be read ({type(exc).__name__}: {exc})",
                             "restore the store's categorical_lookup folder") from exc
        if "label" not in table.columns:
            raise ShardError(path, "column 'label'", f"is missing (columns: {list(table.columns)})",
                             "a lookup table maps each code (its index) to a `label`")
        return table["label"]

    def decode(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Integer-coded columns with a lookup table become categoricals of their labels."""
        import pandas as pd

        out = frame.copy()
        for column in frame.columns:
            labels = self.lookup(column) if pd.api.types.is_integer_dtype(frame[column]) else None
            if labels is None:
                continue
            unknown = ~frame[column].isin(labels.index)
            if unknown.any():
                bad = frame[column][unknown].iloc[0]
                raise ShardError(self.root / LOOKUP_DIR / f"{column}.parquet", f"code {bad}",
                                 f"of column '{column}' is not in the lookup table ({int(unknown.sum())} cells)",
                                 "the lookup table belongs to another store version")
            out[column] = pd.Categorical(labels.loc[frame[column].to_numpy()].to_numpy())
        return out

    def read_obs(self, columns: list[str] | None = None, *, decode: bool = True) -> pd.DataFrame:
        """Every column but X (or ``columns``), in cell order, indexed by cell id; codes decoded."""
        import numpy as np
        import pandas as pd
        import pyarrow.parquet as pq

        wanted = list(columns) if columns is not None else list(self.obs_columns)
        frame = pd.concat([pq.read_table(f, columns=wanted).to_pandas() for f in self.files], ignore_index=True)
        frame.index = pd.Index(self.cell_ids(np.arange(len(frame))))
        return self.decode(frame) if decode else frame


def open_split(root: str | Path, split: str) -> MerlinSplit:
    """A split of a Merlin store, with its layout and every part's footer and schema checked."""
    import pyarrow.parquet as pq

    root = Path(root)
    if not root.is_dir():
        raise ShardError(root, "Merlin store", "does not exist", "give the store's root (it holds var.parquet, train/, val/, test/)")
    if split not in SPLITS:
        raise ShardError(root, f"split '{split}'", "is not a Merlin split", f"choose one of {', '.join(SPLITS)}")
    var_path = root / VAR_NAME
    if not var_path.is_file():
        raise ShardError(var_path, VAR_NAME, "is missing", "a Merlin store keeps its gene order in var.parquet at its root")
    try:
        n_genes = pq.ParquetFile(var_path).metadata.num_rows
    except Exception as exc:
        raise ShardError(var_path, VAR_NAME, f"cannot be read ({type(exc).__name__}: {exc})", "restore the store's var.parquet") from exc
    folder = root / split
    files = tuple(sorted(folder.glob("*.parquet"), key=_natural)) if folder.is_dir() else ()
    if not files:
        raise ShardError(folder, f"split '{split}'", "has no Parquet parts" if folder.is_dir() else "is missing",
                         f"the store's splits are {[s for s in SPLITS if (root / s).is_dir()]}")
    rows, columns = [], None
    for path in files:
        try:
            meta = pq.ParquetFile(path).metadata
            found = arrow_columns(meta.schema.to_arrow_schema())
        except Exception as exc:  # pyarrow: ArrowInvalid / OSError for a truncated footer
            raise ShardError(path, "Parquet footer", f"cannot be read ({type(exc).__name__}: {exc}): truncated or "
                             "not Parquet", "restore the part from the store's source") from exc
        if columns is None:
            columns = found
            types = dict(found)
            if X_COLUMN not in types:
                raise ShardError(path, "column X", f"is missing (columns: {list(types)})",
                                 "a Merlin store's expression is the list column X")
            match = _FLOAT_LIST.match(types[X_COLUMN])
            if not match:
                raise ShardError(path, "column X", f"has type {types[X_COLUMN]}, not a list of floats",
                                 "X holds each cell's log1p-normalised values as a list of float32")
            if match.group(1) and int(match.group(1)) != n_genes:
                raise ShardError(path, "column X", f"holds {match.group(1)} values per cell but var.parquet lists "
                                 f"{n_genes} genes", "use the var.parquet of this store")
        elif found != columns:
            differ = sorted(set(found) ^ set(columns))
            raise ShardError(path, "schema", f"differs from {files[0].name}'s ({', '.join(f'{n}: {t}' for n, t in differ[:6])})",
                             "every part of a split has one schema: restore the part from the store's source")
        rows.append(meta.num_rows)
    return MerlinSplit(root, split, files, tuple(rows), n_genes, columns or ())
