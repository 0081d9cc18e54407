"""What each stage of the grid does, independent of how it is scheduled.

Builders turn an :class:`Artifact` into a file under the results directory; :func:`run_cell` turns a
:class:`Cell` into metric records. Both are plain functions of their inputs, so they run the same in a
Ray worker, in a test, or in a debugger. Artifacts are written atomically and rebuilt only when absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad

from ssl_st import datasets, io
from ssl_st.datasets.simulate import ortholog_table
from ssl_st.orthologs import read_orthologs, species_of, to_human
from ssl_st.genes import Vocabulary
from ssl_st.impute import ImputeConfig, holdout, impute
from ssl_st.datasets.simulate import gene_programs
from ssl_st.models import Architecture, SSLModel, pretrain
from ssl_st.pp import model_input
from ssl_st.programs import read_gmt
from ssl_st.tasks import CellTypeConfig, FineTuneConfig, fine_tune, pca_baseline, supervised, zero_shot

from .config import CLUSTERING_KINDS
from .plan import Artifact, Cell

Record = tuple[str, float]


def load_dataset(spec: dict[str, Any]) -> ad.AnnData:
    """A dataset spec (resolved, as in a data artifact) as a standard AnnData in human gene space."""
    if spec["source"] == "demo":
        adata = datasets.generate(spec["flavour"], seed=spec["seed"], n_cells=spec["n_cells"])
    else:
        options = {k: spec[k] for k in ("spatial_key", "counts_layer", "gene_symbols", "gene_ids") if spec.get(k)}
        if spec["source"] == "h5ad":
            options["label_key"] = None  # labels are checked by the task that uses them
        elif spec.get("labels"):
            options["labels"] = spec["labels"]
        adata = io.read(spec["path"], format=spec["source"], **options)
        if spec.get("n_cells") and spec["n_cells"] < adata.n_obs:
            adata = adata[: spec["n_cells"]].copy()
    seen = species_of(adata.var)
    if seen is not None and seen != spec["species"]:
        where = spec.get("path") or f"demo {spec['flavour']}"
        raise io.DataError(
            where, "var (gene IDs)", f"looks like {seen} data but the dataset is declared {spec['species']}",
            f"set species: {seen}" + (" and orthologs: a one-to-one ortholog table" if seen == "mouse" else ""),
        )
    if spec["species"] == "mouse":
        table = ortholog_table() if spec["orthologs"] == "demo" else read_orthologs(spec["orthologs"])
        adata = to_human(adata, table)
    return adata


def impute_dataset(spec: dict[str, Any], base: ad.AnnData, reference: ad.AnnData) -> ad.AnnData:
    """The base panel with unmeasured reference genes imputed, and the study's hold-out check: panel
    genes removed, imputed back and compared (Pearson r per gene) in ``uns['ssl_st_imputation']``."""
    config = ImputeConfig(**spec["impute"])
    imputed = impute(base, reference, config)
    check = holdout(base, reference, config, n_holdout=8, seed=config.seed)
    summary = dict(imputed.uns.get("ssl_st_imputation", {}))
    summary["holdout_genes"] = ",".join(map(str, check["gene"]))
    summary["holdout_pearson_r"] = check["pearson_r"].to_numpy(dtype=float)
    summary["holdout_pearson_r_mean"] = float(check["pearson_r"].mean())
    imputed.uns["ssl_st_imputation"] = summary
    return imputed


def build_data(artifact: Artifact, root: Path, inputs: dict[str, Path] | None = None, *, rebuild: bool = False) -> Path:
    path = artifact.path(root)
    if artifact.is_built(root) and not rebuild:
        return path
    if artifact.spec["source"] == "imputed":
        assert inputs is not None, "an imputed dataset needs its base and reference artifacts"
        adata = impute_dataset(artifact.spec, ad.read_h5ad(inputs["base"]), ad.read_h5ad(inputs["reference"]))
    else:
        adata = load_dataset(artifact.spec)
    return datasets.write_h5ad_atomic(adata, path)


def _programs(source: str) -> dict[str, list[str]]:
    if source == "demo":
        return gene_programs()
    return read_gmt(source)


def build_model(
    artifact: Artifact, root: Path, inputs: dict[str, Path], *, device: str = "auto", rebuild: bool = False
) -> Path:
    """Pretrain, initialise or import (checkpoint method) a model into ``<artifact>/model.ckpt``."""
    out = artifact.path(root)
    if artifact.is_built(root) and not rebuild:
        return out
    spec = artifact.spec["model"]
    method = spec["method"]
    if method == "checkpoint":
        model = SSLModel.load(spec["checkpoint"], genes=spec.get("genes"), trusted=spec["trusted"])
    else:
        vocabulary = Vocabulary.from_var(ad.read_h5ad(inputs["vocabulary"], backed="r").var)
        architecture = Architecture.from_json(spec["encoder"])
        if method == "random-init":
            model = SSLModel.random_init(vocabulary, architecture, seed=spec["seed"])
        else:
            matrix, _ = model_input(ad.read_h5ad(inputs["reference"]), vocabulary)
            model = pretrain(
                method,
                matrix,
                vocabulary,
                architecture,
                spec["pretrain"],
                programs=_programs(spec["programs"]) if method == "gp-mask" else None,
                seed=spec["seed"],
                device=device,
                log_dir=out / "tensorboard",
            )
    model.save(out)
    return out


def build_artifact(
    artifact: Artifact, root: Path, inputs: dict[str, Path], *, device: str = "auto", rebuild: bool = False
) -> Path:
    """Build ``artifact`` unless it exists (``rebuild`` replaces it, e.g. after a code change)."""
    if artifact.kind == "data":
        return build_data(artifact, root, inputs, rebuild=rebuild)
    return build_model(artifact, root, inputs, device=device, rebuild=rebuild)


def _celltype_config(cell: Cell) -> CellTypeConfig:
    task = cell.content["task"]
    return CellTypeConfig(
        label_key=cell.content["dataset"]["label_key"],
        k=task["k"],
        split=tuple(task["split"]),
        target_sum=1e4 if task["normalize"] == "cp10k" else "median",
        pca_components=task.get("pca_components", 64),
        min_coverage=task["min_coverage"],
    )


def run_cell(
    cell: Cell, paths: dict[str, Path], *, workdir: Path | None = None, device: str = "auto"
) -> list[tuple[str, float, str]]:
    """Evaluate one cell; returns ``(metric, value, kind)`` with kind ``metric`` or ``info``.

    ``workdir`` is the cell's own scratch directory (a tuning run's checkpoint lives there).
    """
    if cell.content["task"]["kind"] in CLUSTERING_KINDS:
        from .clustering import run_clustering_cell

        assert workdir is not None, "a clustering cell needs its working directory"
        return run_clustering_cell(cell, paths, workdir=workdir, device=device)
    adata = ad.read_h5ad(paths[cell.data])
    config = _celltype_config(cell)
    task = cell.content["task"]
    if cell.mode in ("zero-shot", "fine-tune"):
        model = SSLModel.load(paths[cell.trained_model])
        if cell.mode == "zero-shot":
            result = zero_shot(adata, model, config, cell.seed, device=device)
        else:
            result = fine_tune(adata, model, config, FineTuneConfig(**task["fine_tune"]), cell.seed, device=device)
    elif cell.mode in ("pca", "supervised"):
        vocabulary = Vocabulary.from_var(ad.read_h5ad(paths[cell.reference], backed="r").var)
        if cell.mode == "pca":
            result = pca_baseline(adata, vocabulary, config, cell.seed)
        else:
            architecture = Architecture.from_json(task["supervised_encoder"])
            ft = FineTuneConfig(**task["fine_tune"])
            result = supervised(adata, vocabulary, architecture, config, ft, cell.seed, device=device)
    else:
        raise ValueError(f"unknown mode '{cell.mode}'")
    rows: list[Any] = [(k, v, "metric") for k, v in result.metrics.items()]
    rows += [(k, v, "info") for k, v in result.info.items()]
    imputation = adata.uns.get("ssl_st_imputation", {})
    if "holdout_pearson_r_mean" in imputation:  # how well the imputed genes were recovered
        rows.append(("imputation_holdout_r", float(imputation["holdout_pearson_r_mean"]), "info"))
    return rows
