"""What each stage of the grid does, independent of how it is scheduled.

Builders turn an :class:`Artifact` into a file under the results directory; :func:`run_cell` turns a
:class:`Cell` into metric records. Both are plain functions of their inputs, so they run the same in a
Ray worker, in a test, or in a debugger. Artifacts are written atomically and rebuilt only when absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad

from ssl_st import datasets
from ssl_st.genes import Vocabulary
from ssl_st.models import Architecture, PretrainConfig, SSLModel, pretrain_random_mask
from ssl_st.pp import model_input
from ssl_st.tasks import CellTypeConfig, pca_baseline, zero_shot

from .plan import Artifact, Cell

Record = tuple[str, float]


def build_data(artifact: Artifact, root: Path, *, rebuild: bool = False) -> Path:
    path = artifact.path(root)
    if artifact.is_built(root) and not rebuild:
        return path
    spec = artifact.spec
    if spec["source"] == "demo":
        adata = datasets.generate(spec["flavour"], seed=spec["seed"], n_cells=spec["n_cells"])
    else:
        source = Path(spec["path"])
        if not source.is_file():
            raise FileNotFoundError(f"dataset '{artifact.name}': {source} does not exist; fix 'path' in the config")
        adata = ad.read_h5ad(source)
        if spec.get("n_cells") and spec["n_cells"] < adata.n_obs:
            adata = adata[: spec["n_cells"]].copy()
    return datasets.write_h5ad_atomic(adata, path)


def build_model(
    artifact: Artifact, root: Path, inputs: dict[str, Path], *, device: str = "auto", rebuild: bool = False
) -> Path:
    out = artifact.path(root)
    if artifact.is_built(root) and not rebuild:
        return out
    spec = artifact.spec["model"]
    vocabulary = Vocabulary.from_var(ad.read_h5ad(inputs["vocabulary"], backed="r").var)
    architecture = Architecture(
        units=tuple(spec["encoder"]["units"]),
        dropout=spec["encoder"]["dropout"],
        activation=spec["encoder"]["activation"],
        output_activation=spec["encoder"]["output_activation"],
    )
    if spec["method"] == "random-init":
        model = SSLModel.random_init(vocabulary, architecture, seed=spec["seed"])
    elif spec["method"] == "random-mask":
        reference = ad.read_h5ad(inputs["reference"])
        matrix, _ = model_input(reference, vocabulary)
        model = pretrain_random_mask(
            matrix, vocabulary, architecture, PretrainConfig(**spec["pretrain"]), seed=spec["seed"], device=device
        )
    else:  # the schema admits only the methods above; this guards against a stale plan
        raise ValueError(f"model '{artifact.name}': unknown method '{spec['method']}'")
    model.save(out)
    return out


def build_artifact(
    artifact: Artifact, root: Path, inputs: dict[str, Path], *, device: str = "auto", rebuild: bool = False
) -> Path:
    """Build ``artifact`` unless it exists (``rebuild`` replaces it, e.g. after a code change)."""
    if artifact.kind == "data":
        return build_data(artifact, root, rebuild=rebuild)
    return build_model(artifact, root, inputs, device=device, rebuild=rebuild)


def _celltype_config(cell: Cell) -> CellTypeConfig:
    task = cell.content["task"]
    return CellTypeConfig(
        label_key=cell.content["dataset"]["label_key"],
        k=task["k"],
        split=tuple(task["split"]),
        target_sum=1e4 if task["normalize"] == "cp10k" else "median",
        pca_components=task["pca_components"],
    )


def run_cell(cell: Cell, paths: dict[str, Path], *, device: str = "auto") -> list[tuple[str, float, str]]:
    """Evaluate one cell; returns ``(metric, value, kind)`` with kind ``metric`` or ``info``."""
    adata = ad.read_h5ad(paths[cell.data])
    config = _celltype_config(cell)
    if cell.mode == "zero-shot":
        result = zero_shot(adata, SSLModel.load(paths[cell.trained_model]), config, cell.seed, device=device)
    elif cell.mode == "pca":
        vocabulary = Vocabulary.from_var(ad.read_h5ad(paths[cell.reference], backed="r").var)
        result = pca_baseline(adata, vocabulary, config, cell.seed)
    else:
        raise ValueError(f"unknown mode '{cell.mode}'")
    rows: list[Any] = [(k, v, "metric") for k, v in result.metrics.items()]
    rows += [(k, v, "info") for k, v in result.info.items()]
    return rows
