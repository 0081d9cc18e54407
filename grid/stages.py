"""What each stage of the grid does, independent of how it is scheduled.

Builders turn an :class:`Artifact` into a file under the results directory; :func:`run_cell` runs a
:class:`Cell` through its typed spec. Both are plain functions of their inputs, so they run the same
in a Ray worker, in a test, or in a debugger. Artifacts are written atomically and rebuilt only when
absent. The science is imported here, not at plan time.
"""

from __future__ import annotations

from pathlib import Path

from .config import DatasetSpec, ModelSpec
from .plan import Artifact, Cell
from .tasks import CellInputs, Row


def load_dataset(spec: DatasetSpec):
    """A measured or simulated dataset as a standard AnnData in human gene space."""
    from ssl_st import datasets, io

    if spec.source == "demo":
        adata = datasets.generate(spec.flavour, seed=spec.seed, n_cells=spec.n_cells)
    else:
        options = {k: getattr(spec, k) for k in ("spatial_key", "counts_layer", "gene_symbols", "gene_ids") if getattr(spec, k)}
        if spec.source == "h5ad":
            options["label_key"] = None  # labels are checked by the task that uses them
        elif spec.labels:
            options["labels"] = spec.labels
        adata = io.first_cells(io.read(spec.path, format=spec.source, **options), spec.n_cells)
    return io.to_human_space(adata, species=spec.resolved_species, orthologs=spec.orthologs,
                             where=spec.path or f"demo {spec.flavour}")


def build_data(artifact: Artifact, root: Path, inputs: dict[str, Path], *, rebuild: bool = False) -> Path:
    import anndata as ad

    from ssl_st.datasets import write_h5ad_atomic

    path = artifact.path(root)
    if artifact.is_built(root) and not rebuild:
        return path
    spec: DatasetSpec = artifact.source  # type: ignore[assignment]
    if spec.source == "imputed":
        from ssl_st.impute import impute_checked

        adata = impute_checked(ad.read_h5ad(inputs["base"]), ad.read_h5ad(inputs["reference"]), spec.impute)
    else:
        adata = load_dataset(spec)
    return write_h5ad_atomic(adata, path)


def _programs(source: str) -> dict[str, list[str]]:
    if source == "demo":
        from ssl_st.datasets.simulate import gene_programs

        return gene_programs()
    from ssl_st.programs import read_gmt

    return read_gmt(source)


def build_model(artifact: Artifact, root: Path, inputs: dict[str, Path], *, device: str = "auto",
                rebuild: bool = False) -> Path:
    """Pretrain, initialise or import (checkpoint method) a model into ``<artifact>/model.ckpt``."""
    import anndata as ad

    from ssl_st.genes import Vocabulary
    from ssl_st.models import SSLModel
    from ssl_st.pp import model_input

    out = artifact.path(root)
    if artifact.is_built(root) and not rebuild:
        return out
    spec: ModelSpec = artifact.source  # type: ignore[assignment]
    if spec.method == "checkpoint":
        model = SSLModel.load(spec.checkpoint, genes=spec.genes, trusted=spec.trusted)
    else:
        vocabulary = Vocabulary.from_var(ad.read_h5ad(inputs["vocabulary"], backed="r").var)
        training = spec.training
        if training is None:
            model = SSLModel.random_init(vocabulary, spec.encoder, seed=spec.seed)
        else:
            matrix, _ = model_input(ad.read_h5ad(inputs["reference"]), vocabulary)
            model = training.train(
                matrix, vocabulary, spec.encoder, programs=_programs(spec.programs) if training.needs_programs else None,
                seed=spec.seed, device=device, log_dir=out / "tensorboard",
            )
    model.save(out)
    return out


def build_artifact(artifact: Artifact, root: Path, inputs: dict[str, Path], *, device: str = "auto",
                   rebuild: bool = False) -> Path:
    """Build ``artifact`` unless it exists (``rebuild`` replaces it, e.g. after a code change)."""
    if artifact.kind == "data":
        return build_data(artifact, root, inputs, rebuild=rebuild)
    return build_model(artifact, root, inputs, device=device, rebuild=rebuild)


def run_cell(cell: Cell, inputs: CellInputs) -> list[Row]:
    """Evaluate one cell: ``(metric, value, kind)`` records, kind ``metric`` or ``info``."""
    return cell.spec.run(cell, inputs)
