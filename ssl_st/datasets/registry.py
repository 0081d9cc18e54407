"""The reusability study's datasets, as published on Hugging Face, for ``ssl-st data pull``.

Files live in the dataset repository ``ChuangyiHan/NatureMachineIntelligence-DatasetsForTransferabilityofSSLModels``
under the names the study's notebooks read from ``../../dataset/``. Checksums follow
:mod:`ssl_st.hub`: the hub announces each LFS object's sha256, the first verified download pins it in
the cache's lock file, and every later pull (on any machine given the lock) must match it.

The mouse-human ortholog table the study used (``ensembl_homologs.csv``, Ensembl one-to-one
orthologs, in its code repository CSHCY/Reusability_SSL_in_SCG) is pulled from that repository's raw
file. GitHub announces no sha256, so its first verified download is pinned in the lock (with a
warning) and every later pull must match that pin.
"""

from __future__ import annotations

from ..hub import PublishedFile

REPO = "datasets/ChuangyiHan/NatureMachineIntelligence-DatasetsForTransferabilityofSSLModels"
ORTHOLOGS_URL = (
    "https://raw.githubusercontent.com/CSHCY/Reusability_SSL_in_SCG/main/"
    "reusability_ssl_in_scg/slide_seq_mouse_kidney/ensembl_homologs.csv"
)


def _file(name: str, path: str, description: str) -> PublishedFile:
    return PublishedFile(name, REPO, path, description=description)


STUDY_DATASETS: dict[str, PublishedFile] = {
    f.name: f
    for f in (
        _file("merscope-human-neocortex", "merfish_human_neocortex_SSL.h5ad",
              "MERSCOPE human neocortex, 5 slices, 234,125 cells x 300 genes, obs cell_type and tissue"),
        _file("xenium-human-breast", "Xenium_breast_cancer_sample1_replicate1.h5ad",
              "Xenium human breast cancer, sample 1 replicate 1, 167,780 cells x 313 genes"),
        _file("slideseq-human-kidney", "Marshall2022High_human_sampled.h5ad",
              "Slide-seqV2 human kidney (Marshall et al. 2022), CELLxGENE layout"),
        _file("slideseq-mouse-kidney", "Marshall2022High_mouse_sampled.h5ad",
              "Slide-seqV2 mouse kidney (Marshall et al. 2022), mouse Ensembl IDs"),
        _file("gex-human-neocortex", "GEX_human_neocortex_filtered.h5ad",
              "single-cell human neocortex, 232,328 cells, pre-filtered to scTab genes"),
        _file("hit-ca4-dgc", "HiT_CA4_DGC_filtered.h5ad", "single-cell hippocampus CA4/DGC, 56,367 cells"),
        _file("human-great-apes", "Human_Great_Apes_filtered.h5ad", "single-cell great apes, 156,285 cells"),
        # The study's imputations of the Xenium panel (its section 7), each a dataset of its own:
        _file("xenium-human-breast-tangram", "ad_ge_imputed_Xenium_breast_cancer_sample1_replicate1.h5ad",
              "Xenium breast, Tangram-imputed: 167,780 cells x 17,693 genes, projected values (not counts)"),
        _file("xenium-human-breast-spage", "SpaGE_imputed_Xenium_breast_cancer_sample1_replicate1.h5ad",
              "Xenium breast, SpaGE-imputed: 167,780 cells x 18,085 genes, log-normalised (float16)"),
        _file("xenium-human-breast-uniport", "uniport_imputed_Xenium_breast_cancer_sample1_replicate1.h5ad",
              "Xenium breast, uniPort-imputed: 166,354 cells x 18,079 genes, batch-scaled log values (float16)"),
        PublishedFile(
            "ensembl-homologs", "CSHCY/Reusability_SSL_in_SCG",
            "reusability_ssl_in_scg/slide_seq_mouse_kidney/ensembl_homologs.csv",
            description="the study's mouse-human one-to-one orthologs (Ensembl), for `orthologs:`",
            url=ORTHOLOGS_URL,
        ),
    )
}  # fmt: skip
