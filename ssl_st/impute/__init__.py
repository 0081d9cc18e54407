"""Gene imputation: unmeasured genes of a spatial panel predicted from a reference single-cell dataset.

The reusability study (§7) imputed the 313-gene Xenium panel to the whole transcriptome with SpaGE,
Tangram and uniPort, validated by holding out 8 panel genes (Pearson r per gene against the measured
values), and fed the imputed sections to the cell-type tasks. Two of those methods are here:

- ``spage`` (:mod:`.spage`; Abdelaal et al. 2020, *Nucleic Acids Res.* 48:e107): principal vectors
  shared by both domains, cosine kNN of each spatial cell among the reference cells, weighted average;
- ``tangram`` (:mod:`.tangram`; Biancalani et al. 2021, *Nat. Methods* 18:1352), "cells" mode: a
  probabilistic mapping of reference cells onto spatial cells fitted by gradient descent.

Both reduce to one (spatial cell x reference cell) weight matrix with rows summing to one; every
imputed quantity is that weighted average of the reference cells.

Value scale
-----------
Imputation runs on log1p(CP10k): the reference is normalised over all its genes, the spatial panel
over the shared genes it uses for training (as SpaGE's and uniPort's notebooks normalise; the study's
Tangram run used raw counts). Imputed values are therefore on the reference's scale:
log1p(10,000 x share of the cell's whole-transcriptome counts).

The returned AnnData must nevertheless hold a count-like matrix in ``layers["counts"]`` and ``X``: the
cell-type tasks (and upstream preprocessing, see :mod:`ssl_st.pp`) read raw counts, scale each cell to
10,000 over the model's genes and apply log1p. Feeding them log values would log-transform twice, and
feeding CP10k values next to raw panel counts would let the ~3,000 imputed genes swamp the ~300
measured ones. So:

- measured genes keep their **original counts** (the measured value wins over an imputed one);
- imputed genes get **pseudo-counts** (floats, not integers), the back-transformed imputed profile
  ``expm1(y_cg)`` rescaled so that it sums to ``g_c * D_c``. ``D_c = L_c / f_c`` is a pseudo
  whole-transcriptome depth: ``L_c`` the cell's measured counts over the training genes, ``f_c`` and
  ``g_c`` the shares of a cell's counts on the training and on the imputed genes, imputed like any
  other gene (the weighted average of the matched reference cells' shares).

Closing the profile to ``g_c * D_c``, rather than using ``expm1(y) * D_c / 10,000`` directly, undoes
the shrinkage of averaging log values (Jensen): on the demo data the back-transformed profile covers
only ~53 % of a cell instead of ~87 %, which after the tasks' per-cell scaling would give the measured
genes ~20 % of every cell instead of the reference's ~13 %. With it, per-cell scaling downstream sees
measured and imputed genes in the proportions of the matched reference cells, and the imputed genes
in the ratios of the imputed values. ``D_c`` is stored in ``obs["imputation_pseudo_depth"]``.
``layers["log1p"]`` holds the method's imputed log values for imputed genes (what :func:`holdout`
validates) and ``log1p(10,000 x counts / D_c)`` for measured genes, the same reference scale.

Deviations from the published tools
-----------------------------------
SpaGE: PCA axes from ``eigh`` of the genes x genes scatter matrix instead of PRECISE's sklearn PCA
(same axes up to sign, which changes nothing downstream); projection onto the reference-side principal
vectors, as SpaGE's code does (it projects on ``source_components_`` and its source is the scRNA-seq
data); genes constant in either dataset are left out of training (SpaGE's z-score would be NaN); when
at most one neighbour has cosine distance < 1, equal weights over the valid neighbours (or all k)
replace SpaGE's 0/0 or all-zero row; at least one principal vector is kept. The study ran SpaGE with
n_pv=5; the default here is 30 (hold-out r 0.24 with 5, 0.31 with 30 on the demo).
Tangram: log-normalised inputs (the study used raw counts); Tangram's training-gene selection
(``pp_adatas``) is replaced by the shared genes minus those constant in either dataset; the
``rna_count_based`` density is each spatial cell's share of the raw counts over the training genes
(Tangram sums whatever ``X`` holds); at most ``max_reference_cells`` reference cells (seeded choice) to
bound the dense mapping matrix (mini-batching over spatial cells would break the softmax over spatial
cells); a private seeded torch generator for the initial matrix instead of the global NumPy seed;
imputed expression normalised per spatial cell (a weighted average) instead of Tangram's unnormalised
``M^T X``; ``lambda_g2`` (per-cell cosine term) is 0 by default, as in Tangram.
Both: measured genes win over imputed ones (the study's SpaGE convention; its Tangram and uniPort
outputs dropped the measured genes).

On the demo data (atlas, 3,000 cells, as reference; MERSCOPE-like section, 1,500 cells; 8 held-out
genes) the mean hold-out r is 0.31 for SpaGE and 0.22 for Tangram; predicting each spatial cell by the
mean of its *true* cell type reaches only 0.31, because ~250 counts per cell make single-cell
measurements noisy. A reference whose held-out genes are shuffled across cells gives r ~ 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from .config import ImputeConfig

if TYPE_CHECKING:
    from .core import holdout, impute, impute_checked
    from .matching import shared_genes

__getattr__, __dir__ = lazy_attributes(
    __name__, {"impute": ".core", "holdout": ".core", "impute_checked": ".core", "shared_genes": ".matching"}
)

__all__ = ["ImputeConfig", "holdout", "impute", "impute_checked", "shared_genes"]
