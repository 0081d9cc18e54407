"""Whole folders written atomically, and a model's files found on disk: standard library only, so
``plan``, the shard readers and a Ray Data driver use them without importing torch.

- :func:`staging_dir` / :func:`replace_dir` — write a folder beside its destination, then swap it in;
- :func:`model_files` — a checkpoint path (or a folder holding ``model.ckpt``) -> the checkpoint file
  and its vocabulary, found as :meth:`ssl_st.models.SSLModel.load` finds them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

CHECKPOINT_NAME = "model.ckpt"
VOCABULARY_NAME = "var.parquet"  # the published layout's one vocabulary per folder


def staging_dir(dest: str | Path) -> Path:
    """A fresh, empty sibling of ``dest`` to write a whole folder into before :func:`replace_dir`;
    a sibling, so that the final rename stays on one file system."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))


def replace_dir(staged: str | Path, dest: str | Path) -> Path:
    """Move the complete folder ``staged`` to ``dest``, replacing any folder there.

    POSIX cannot swap two directories in one rename, so the old one is renamed aside first and removed
    last: a reader sees the old folder, then (for an instant) none, then the new one -- never a mix
    or a half-written folder. Files a reader already opened stay readable until it closes them.
    """
    staged, dest = Path(staged), Path(dest)
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
        os.rename(dest, old / dest.name)
    os.rename(staged, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest


class ModelFileError(FileNotFoundError):
    """A checkpoint or its gene list is not where it was looked for."""


def checkpoint_file(path: str | Path) -> Path:
    """``path`` itself, or ``path/model.ckpt`` for a folder (or a path without a suffix)."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() or not path.suffix else path


def vocabulary_path(checkpoint: str | Path) -> Path:
    """The vocabulary sidecar written with ``checkpoint``: ``a.ckpt`` -> ``a.var.parquet``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.{VOCABULARY_NAME}")


def model_files(path: str | Path, genes: str | Path | None = None) -> tuple[Path, Path]:
    """(checkpoint file, gene-order file). ``genes`` is the vocabulary file; without it, the one named
    after the checkpoint (:func:`vocabulary_path`), else the published layout's ``var.parquet``
    beside it. The checkpoint's existence is the loader's to check (it names the layouts)."""
    ckpt = checkpoint_file(path)
    if genes:
        genes = Path(genes)
        if not genes.is_file():
            raise ModelFileError(f"{ckpt}: no gene order file at {genes}")
        return ckpt, genes
    candidates = (vocabulary_path(ckpt), ckpt.parent / VOCABULARY_NAME)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ModelFileError(f"{ckpt}: no gene order found at {' or '.join(map(str, candidates))}; "
                             "pass the model's var.parquet (CLI: --genes)")
    return ckpt, found
