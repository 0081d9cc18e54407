"""Cross-species: mouse data in the human gene space of a human-pretrained model.

As the reusability study did for Slide-seqV2 mouse kidney, each mouse gene is mapped through a
one-to-one ortholog table (Ensembl's ``ortholog_one2one`` homology, in the layout of the study's
``ensembl_homologs.csv``: ``Mouse_Ensembl_ID``, ``Human_Ensembl_ID``, optional symbols) to its human
Ensembl ID; genes without an ortholog are dropped and counted. The study kept the *last* row of a
duplicated mouse ID; here the first one wins and duplicates are counted, so the choice is visible.

The demo's table comes from the simulator (:func:`ssl_st.datasets.simulate.ortholog_table`); for
real data use the study's file or an Ensembl BioMart export with the same columns.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .genes import gene_table

REQUIRED = ("Mouse_Ensembl_ID", "Human_Ensembl_ID")


def read_orthologs(path: str | Path) -> pd.DataFrame:
    """Read an ortholog table (CSV or TSV) and keep its one-to-one rows."""
    path = Path(path)
    table = pd.read_csv(path, sep=None, engine="python", dtype=str)
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(
            f"{path}: ortholog table lacks column(s) {', '.join(missing)} (found: {', '.join(table.columns)}); "
            "use the study's ensembl_homologs.csv layout or an Ensembl BioMart export renamed to it"
        )
    if "Homology_Type" in table.columns:
        table = table[table["Homology_Type"].fillna("ortholog_one2one") == "ortholog_one2one"]
    return table.reset_index(drop=True)


def species_of(var: pd.DataFrame) -> str | None:
    """``human`` or ``mouse`` from Ensembl ID prefixes (ENSG / ENSMUSG), None if there are no IDs."""
    ids = gene_table(var)["id"].dropna().astype(str)
    if ids.empty:
        return None
    mouse = ids.str.startswith("ENSMUSG").mean()
    human = ids.str.match(r"^ENSG\d").mean()
    return "mouse" if mouse > 0.5 else "human" if human > 0.5 else None


def to_human(adata: ad.AnnData, table: pd.DataFrame) -> ad.AnnData:
    """``adata`` restricted to genes with a one-to-one human ortholog, with human IDs and symbols in
    ``var`` (mouse ones kept as ``mouse_gene_ids`` / ``mouse_gene_symbols``); counts in
    ``uns['ssl_st_orthologs']``."""
    genes = gene_table(adata.var)
    if genes["id"].isna().all():
        raise ValueError("cross-species mapping needs mouse Ensembl IDs in var (index, gene_ids or feature_id)")
    first = table.drop_duplicates("Mouse_Ensembl_ID", keep="first")
    human_id = dict(zip(first["Mouse_Ensembl_ID"], first["Human_Ensembl_ID"]))
    symbols = first.get("Human_Gene_Symbol")
    human_symbol = dict(zip(first["Mouse_Ensembl_ID"], symbols)) if symbols is not None else {}
    mapped = genes["id"].map(human_id)
    keep = mapped.notna() & ~mapped.duplicated(keep="first")
    out = adata[:, keep.to_numpy()].copy()
    ids = mapped[keep].to_numpy().astype(str)
    names = [s if isinstance(s, str) and s else i for s, i in zip(genes["id"][keep].map(human_symbol), ids)]
    out.var = pd.DataFrame(
        {
            "gene_ids": ids,
            "gene_symbols": names,
            "mouse_gene_ids": genes["id"][keep].to_numpy().astype(str),
            "mouse_gene_symbols": genes["symbol"][keep].fillna("").to_numpy().astype(str),
        },
        index=pd.Index(np.asarray(ids), name=None),
    )
    out.uns["ssl_st_orthologs"] = {
        "mouse_genes": int(adata.n_vars),
        "mapped": int(keep.sum()),
        "without_ortholog": int(mapped.isna().sum()),
        "duplicate_targets": int((mapped.notna() & mapped.duplicated(keep="first")).sum()),
        "duplicate_rows_in_table": int(len(table) - len(first)),
    }
    return out
