"""ssl_st: the science of transferring single-cell SSL encoders to spatial transcriptomics.

Submodules are grouped by role, scanpy style:

- :mod:`ssl_st.datasets` — built-in demo data (a seeded simulator), its cache, the study's file registry;
- :mod:`ssl_st.io` — readers of vendor outputs (Xenium, MERSCOPE, h5ad) into one standard AnnData,
  and its cell subset and human gene space;
- :mod:`ssl_st.genes` — the gene space: mapping a dataset onto a model's vocabulary;
- :mod:`ssl_st.orthologs` — mouse data in human gene space through one-to-one orthologs;
- :mod:`ssl_st.impute` — imputation of unmeasured panel genes from a single-cell reference;
- :mod:`ssl_st.programs` — gene programs (GMT) for GP Mask;
- :mod:`ssl_st.hub` — checksummed downloads of published files;
- :mod:`ssl_st.pp` — preprocessing (mapping onto a vocabulary with a coverage check, per-cell scaling, log1p);
- :mod:`ssl_st.nn` — pure ``torch.nn`` networks with the upstream layouts;
- :mod:`ssl_st.models` — user-facing model classes, the registered pretraining methods, checkpoints;
- :mod:`ssl_st.tl` — tools that write results into an AnnData (embeddings);
- :mod:`ssl_st.tasks` — evaluation tasks (cell-type prediction) returning metric records;
- :mod:`ssl_st.metrics` — classification metrics;
- :mod:`ssl_st.registry` — name -> class registries (pretraining methods, cluster methods, ...);
- :mod:`ssl_st.threads` — one way to cap the threads of a process or a block.

Configs (``ssl_st.models``, ``ssl_st.tasks``, ``ssl_st.impute``) import no torch or scikit-learn; the
code that computes loads them on first use.

Nothing here knows about the experiment grid (``grid``) or spatial clustering (``cluster``).
"""

__version__ = "0.1.0"
