"""Gene programs: MSigDB GMT files and their mapping onto a model's vocabulary.

A GMT line is ``name <TAB> description-or-URL <TAB> gene <TAB> gene ...``. Programs become a boolean
(n_programs x n_genes) matrix over the vocabulary, which is what the GP-mask objective draws from.

Deliberate difference from upstream (Richter et al. 2024): upstream upper-cased the GMT but compared
it with the vocabulary's symbols as written, so mixed-case symbols such as ``C1orf112`` never matched.
Here both sides are compared case-insensitively. Symbols are kept as written when reading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .genes import Vocabulary


def read_gmt(path: str | Path) -> dict[str, list[str]]:
    """Programs of a GMT file, in file order (name -> gene symbols, duplicates removed)."""
    path = Path(path)
    programs: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            name = fields[0].strip()
            genes = [g.strip() for g in fields[2:] if g.strip()]
            if not name or len(fields) < 3 or not genes:
                raise ValueError(
                    f"{path}, line {number}: a GMT line needs a name, a description and at least one gene, "
                    f"separated by tabs; got {line[:80]!r}"
                )
            if name in programs:
                raise ValueError(f"{path}, line {number}: program {name!r} is defined twice")
            programs[name] = list(dict.fromkeys(genes))
    return programs


def write_gmt(programs: Mapping[str, Sequence[str]], path: str | Path, description: str = "") -> Path:
    """Write ``programs`` as GMT, with the same ``description`` on every line."""
    path = Path(path)

    def field(text: str) -> str:
        if any(c in text for c in "\t\r\n"):
            raise ValueError(f"{text!r} contains a tab or line break and cannot be one GMT field")
        return text

    lines = []
    for name, genes in programs.items():
        if not name.strip() or not genes:
            raise ValueError(f"program {name!r}: GMT needs a non-empty name and at least one gene")
        lines.append("\t".join([field(name), field(description), *map(field, genes)]))
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return path


def program_mask(
    programs: Mapping[str, Sequence[str]], vocabulary: Vocabulary, *, min_genes: int = 1
) -> tuple[list[str], np.ndarray]:
    """Names of the kept programs and their (n_programs x n_genes) boolean membership matrix.

    Symbols match case-insensitively; a program with fewer than ``min_genes`` genes in the vocabulary
    is dropped (it would mask nothing or almost nothing). A symbol that several vocabulary entries
    share marks all of them; empty vocabulary symbols never match.
    """
    columns: dict[str, list[int]] = {}
    for index, symbol in enumerate(vocabulary.symbols):
        if symbol:
            columns.setdefault(symbol.upper(), []).append(index)
    names: list[str] = []
    rows: list[np.ndarray] = []
    for name, genes in programs.items():
        row = np.zeros(len(vocabulary), dtype=bool)
        for gene in genes:
            row[columns.get(gene.upper(), [])] = True
        if row.sum() >= max(min_genes, 1):
            names.append(name)
            rows.append(row)
    matrix = np.vstack(rows) if rows else np.zeros((0, len(vocabulary)), dtype=bool)
    return names, matrix
