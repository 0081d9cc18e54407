"""What each stage of the grid does, independent of how it is scheduled.

Builders turn an :class:`Artifact` into a file under the results directory; :func:`run_cell` runs a
:class:`Cell` through its typed spec. Both are plain functions of their inputs, so they run the same
in a Ray worker, in a test, or in a debugger. The science is imported here, not at plan time.

Artifacts are written whole and atomically (a dataset file by rename; a model folder, tensorboard
logs included, staged beside its place and renamed in), then sealed by a manifest written last (see
:mod:`grid.plan`). An artifact is reused only if its manifest vouches for it, checksums included;
a broken one is rebuilt; one without a manifest (an older ssl-st) is opened completely and adopted
if that works, rebuilt otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from .config import DatasetSpec, ModelSpec
from .plan import Artifact, Cell, manifest_path, write_manifest
from .pulled import local
from .resources import Resources
from .tasks import CellInputs, CellOutput


def load_dataset(spec: DatasetSpec):
    """A measured or simulated dataset as a standard AnnData in human gene space.

    A bad file raises :class:`ssl_st.io.DataError` spelled for experiments.yaml (``values:``, not
    ``values=``): the user fixes a key of this dataset, not a Python call.
    """
    from ssl_st import datasets, io

    # A pulled file is looked up in this machine's cache; FileNotFoundError names the pull command.
    path = local(spec.path, f"dataset '{spec.name}' path")
    orthologs = local(spec.orthologs, f"dataset '{spec.name}' orthologs")
    try:
        if spec.source == "demo":
            adata = datasets.generate(spec.flavour, seed=spec.seed, n_cells=spec.n_cells)
        else:
            keys = ("spatial_key", "counts_layer", "gene_symbols", "gene_ids", "values", "target_sum", "labels",
                    "label_column")
            options = {k: getattr(spec, k) for k in keys if getattr(spec, k) is not None}
            if spec.source == "h5ad":
                options["label_key"] = None  # labels are checked by the task that uses them (and by ssl-st plan)
            adata = io.first_cells(io.read(path, format=spec.source, **options), spec.n_cells)
        return io.to_human_space(adata, species=spec.resolved_species, orthologs=orthologs,
                                 where=path or f"demo {spec.flavour}")
    except io.DataError as err:
        raise err.spelled("yaml") from None


log = logging.getLogger(__name__)


def _reusable(artifact: Artifact, root: Path, rebuild: bool) -> bool:
    """Whether the artifact on disk can be used as it is, adopting one that has no manifest yet."""
    if rebuild:
        return False
    state, why = artifact.check(root, checksums=True)
    if state == "built":
        return True
    if state == "unverified":  # no manifest: trust it only if it opens completely
        try:
            _open_completely(artifact, root)
        except Exception as exc:  # h5py, anndata and torch raise many types for a damaged file
            log.warning("%s: %s and it does not open (%s); rebuilding it", artifact.path(root), why, exc)
            return False
        write_manifest(artifact.path(root))
        return True
    if state == "broken":
        log.warning("%s: %s; rebuilding it", artifact.path(root), why)
    return False


def _open_completely(artifact: Artifact, root: Path) -> None:
    from .sharded import is_record, open_record

    if artifact.kind == "data" and is_record(artifact.path(root)):
        open_record(artifact.path(root))
    elif artifact.kind == "data":
        import anndata as ad

        ad.read_h5ad(artifact.path(root))  # reads every array: a truncated file fails here
    elif artifact.kind == "embedding":
        from ssl_st.shards import read_embedding

        read_embedding(artifact.path(root) / EMBEDDING_DIR)
    else:
        from ssl_st.models import SSLModel

        SSLModel.load(artifact.path(root), trusted=False)


def build_data(artifact: Artifact, root: Path, inputs: dict[str, Path], *, rebuild: bool = False) -> Path:
    import anndata as ad

    from ssl_st.datasets import write_h5ad_atomic

    path = artifact.path(root)
    if _reusable(artifact, root, rebuild):
        return path
    spec: DatasetSpec = artifact.source  # type: ignore[assignment]
    if spec.sharded:
        from .sharded import write_record

        manifest_path(path).unlink(missing_ok=True)
        write_record(spec, path)  # checks every shard's checksum first
        write_manifest(path)
        return path
    if spec.source == "imputed":
        from ssl_st.impute import impute_checked

        adata = impute_checked(ad.read_h5ad(inputs["base"]), ad.read_h5ad(inputs["reference"]), spec.impute)
    else:
        adata = load_dataset(spec)
    # The old manifest goes first: a crash before the new one is written leaves an artifact without
    # a manifest (checked and adopted next time), never a new file under an old manifest.
    manifest_path(path).unlink(missing_ok=True)
    write_h5ad_atomic(adata, path)
    write_manifest(path)
    return path


def _programs(source: str) -> dict[str, list[str]]:
    if source == "demo":
        from ssl_st.datasets.simulate import gene_programs

        return gene_programs()
    from ssl_st.programs import read_gmt

    return read_gmt(source)


def _train_on_workers(spec: ModelSpec, cells, vocabulary, programs, resources: Resources, out: Path, staged: Path):
    """Pretrain on ``spec.workers`` Ray Train workers of ``resources`` each, from ``cells`` (a model
    input matrix, or shards to stream: :mod:`ssl_st.shards.stream`); their per-epoch checkpoints (a
    lost worker resumes from the last) live beside the artifact until it is built."""

    from ssl_st.models.distributed import Workers, train_data_parallel

    workers = Workers(count=spec.workers, cpus=max(resources.cpus, 1e-3), use_gpu=resources.gpus > 0,
                      resources=tuple(resources.custom.items()))
    storage = out.with_name(f".{out.name}.train")
    try:
        return train_data_parallel(spec.training, cells, vocabulary, spec.encoder, workers=workers, programs=programs,
                                   seed=spec.seed, storage=storage, name="pretrain", log_dir=staged / "tensorboard")
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def build_model(artifact: Artifact, root: Path, inputs: dict[str, Path], *, device: str = "auto",
                rebuild: bool = False, resources: Resources | None = None) -> Path:
    """Pretrain, initialise or import (checkpoint method) a model into ``<artifact>/model.ckpt``."""
    from ssl_st.files import CHECKPOINT_NAME
    from ssl_st.models import SSLModel

    from .sharded import is_record, model_inputs_of, open_record, vocabulary_of

    out = artifact.path(root)
    if _reusable(artifact, root, rebuild):
        return out
    # Everything, tensorboard logs included, goes into a sibling folder that replaces ``out`` whole.
    with _sealed_folder(out) as staged:
        spec: ModelSpec = artifact.source  # type: ignore[assignment]
        if spec.method == "checkpoint":
            model = SSLModel.load(local(spec.checkpoint, f"model '{spec.name}' checkpoint"),
                                  genes=local(spec.genes, f"model '{spec.name}' genes"), trusted=spec.trusted)
        else:
            vocabulary = vocabulary_of(inputs["vocabulary"])
            training = spec.training
            if training is None:
                model = SSLModel.random_init(vocabulary, spec.encoder, seed=spec.seed)
            else:
                programs = _programs(spec.programs) if training.needs_programs else None
                if spec.workers > 1:  # shards stream into the workers; an h5ad is read and sent once
                    cells = open_record(inputs["reference"]) if is_record(inputs["reference"]) else \
                        model_inputs_of(inputs["reference"], vocabulary)
                    model = _train_on_workers(spec, cells, vocabulary, programs, resources or Resources(), out, staged)
                else:
                    matrix = model_inputs_of(inputs["reference"], vocabulary)
                    model = training.train(matrix, vocabulary, spec.encoder, programs=programs, seed=spec.seed,
                                           device=device, log_dir=staged / "tensorboard")
        model.save(staged / CHECKPOINT_NAME)  # a file path: written in place inside the staged folder
    return out


@contextlib.contextmanager
def _sealed_folder(out: Path) -> Iterator[Path]:
    """A staging folder beside ``out``: filled by the caller, sealed by a manifest and swapped in whole
    on success, removed otherwise, so ``out`` is the old artifact or the new one, never half of one."""
    from ssl_st.files import replace_dir, staging_dir

    staged = staging_dir(out)
    try:
        yield staged
        write_manifest(staged)
        replace_dir(staged, out)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)


EMBEDDING_DIR = "embedding"  # inside an embedding artifact: the embedding shards and their own manifest


def build_embedding(artifact: Artifact, root: Path, inputs: dict[str, Path], *, resources: Resources,
                    rebuild: bool = False) -> Path:
    """A model's embedding of a sharded dataset, streamed through Ray Data (:func:`ssl_st.shards.embed_shards`)
    into ``<artifact>/embedding/``: as many encoder actors of ``resources`` as there are free, up to one
    per shard, at least one."""
    from ssl_st.files import CHECKPOINT_NAME
    from ssl_st.shards import EmbedOptions, ModelRef, embed_shards

    from .sharded import open_record

    out = artifact.path(root)
    if _reusable(artifact, root, rebuild):
        return out
    source = open_record(inputs["data"])
    settings = artifact.spec["settings"]
    options = EmbedOptions(actors=1, max_actors=max(1, min(len(source.files), _room_for(resources))),
                           cpus_per_actor=resources.cpus, gpus_per_actor=resources.gpus,
                           resources=tuple(resources.custom.items()),
                           target_sum=settings["target_sum"], min_coverage=settings["min_coverage"],
                           lean_memory=True)  # ~0.3 GiB less per actor for ~30 % of an embedding that kNN dwarfs
    with _sealed_folder(out) as staged:
        embed_shards(ModelRef(str(inputs["model"] / CHECKPOINT_NAME)), source, staged / EMBEDDING_DIR, options=options)
    return out


def _room_for(resources: Resources) -> int:
    """How many encoder actors of ``resources`` the cluster's free resources hold now, keeping one CPU
    for the driver, which writes the embedding (it asks Ray for none, but runs all the same), and for
    Ray Data's own actors: each encoder actor is a torch and a model (~0.5 GiB); on 2 cores a second
    one bought ~5 % more cells/s for ~0.9 GiB more memory at 1M cells (bench/grid_scale.py)."""
    import ray

    free = dict(ray.available_resources())
    free["CPU"] = free.get("CPU", 0) - 1
    room = [int(free.get(name, 0) // amount) for name, amount in resources.request().items() if amount > 0]
    return min(room) if room else 1


def build_artifact(artifact: Artifact, root: Path, inputs: dict[str, Path], *, device: str = "auto",
                   rebuild: bool = False, resources: Resources | None = None) -> Path:
    """Build ``artifact`` unless it exists (``rebuild`` replaces it, e.g. after a code change);
    ``resources``: what each of the workers an embedding starts asks for."""
    if artifact.kind == "data":
        return build_data(artifact, root, inputs, rebuild=rebuild)
    if artifact.kind == "embedding":
        return build_embedding(artifact, root, inputs, resources=resources or Resources(), rebuild=rebuild)
    return build_model(artifact, root, inputs, device=device, rebuild=rebuild, resources=resources)


def run_cell(cell: Cell, inputs: CellInputs) -> CellOutput:
    """Evaluate one cell: its ``(metric, value, kind)`` records (kind ``metric`` or ``info``) and the
    details the report draws (:mod:`grid.details`); a kind may return the records alone."""
    output = cell.spec.run(cell, inputs)
    return output if isinstance(output, CellOutput) else CellOutput(list(output))
