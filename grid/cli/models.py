"""``ssl-st embed``, ``pretrain`` and ``models pull``: models outside a grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    CacheOpt,
    DeviceOpt,
    EndpointOpt,
    ForceOpt,
    SeedOpt,
    TargetSumOpt,
    ValuesOpt,
    app,
    epoch_progress,
    err,
    fail,
    out,
    pull_files,
    read_h5ad,
)

models_app = typer.Typer(help="Published checkpoints: download and verify.", no_args_is_help=True)
app.add_typer(models_app, name="models")

@app.command()
def embed(
    checkpoint: Annotated[Path, typer.Argument(help="A published or ssl-st checkpoint (.ckpt).")],
    data: Annotated[Path, typer.Argument(help="Cells to embed: an .h5ad (raw counts in layers['counts'] or X, or what --values declares), a shard directory (`ssl-st data shard`) or a Merlin store (with --split).")],
    out_path: Annotated[Path, typer.Option("--out", help="Output: an .h5ad (the input plus obsm[KEY]); for shards, a directory of Parquet shards (cell id + embedding).")],
    genes: Annotated[Path | None, typer.Option(help="The model's gene order (default: <checkpoint>.var.parquet, else var.parquet beside the checkpoint).")] = None,
    key: Annotated[str | None, typer.Option(help="obsm key (default X_<method>).")] = None,
    normalize: Annotated[str, typer.Option(help="cp10k (upstream) or median (the study's spatial variant).")] = "cp10k",
    trusted: Annotated[bool, typer.Option("--trusted", help="Allow unpickling objects (only for files you trust).")] = False,
    values: ValuesOpt = None,
    target_sum: TargetSumOpt = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int | None, typer.Option(help="Cells per forward pass (default 4096; shards: 8192 sparse, 1024 dense).")] = None,
    split: Annotated[str | None, typer.Option(help="Merlin store: the split to embed (train, val, test).")] = None,
    actors: Annotated[int, typer.Option(help="Shards: encoder actors of the Ray Data pipeline (each loads the model once).")] = 1,
    address: Annotated[str | None, typer.Option(help="Shards: a Ray cluster to join (default: RAY_ADDRESS, else a local Ray).")] = None,
) -> None:
    """Embed cells with a model: map genes onto its vocabulary, normalise as upstream, write obsm
    (an .h5ad), or stream a shard directory through Ray Data into embedding shards."""
    from ssl_st.datasets import write_h5ad_atomic
    from ssl_st.models import CheckpointError, SSLModel
    from ssl_st.pp import CoverageError
    from ssl_st.tl import embed as embed_cells, embedding_key

    if normalize not in ("cp10k", "median"):
        raise fail(f"--normalize must be cp10k or median; got '{normalize}'")
    if data.is_dir():
        if key is not None or values is not None or target_sum is not None:
            raise fail("--key, --values and --target-sum apply to an .h5ad; shards carry their value type in their manifest")
        return _embed_shards(checkpoint, data, out_path, genes=genes, trusted=trusted, normalize=normalize,
                             device=device, batch_size=batch_size, split=split, actors=actors, address=address)
    if split is not None:
        raise fail(f"--split names a split of a Merlin store; {data} is a file")
    batch_size = batch_size or 4096
    try:
        model = SSLModel.load(checkpoint, genes=genes, trusted=trusted)
    except CheckpointError as exc:
        raise fail(str(exc)) from None
    adata = read_h5ad(data, "the cells to embed", values=values, target_sum=target_sum)
    key = key or embedding_key(model.method)
    try:
        coverage = embed_cells(adata, model, key=key, target_sum=1e4 if normalize == "cp10k" else "median",
                               device=device, batch_size=batch_size)
    except CoverageError as exc:
        raise fail(f"{data}: {exc}") from None
    adata.uns["ssl_st"][key]["checkpoint"] = str(checkpoint)
    write_h5ad_atomic(adata, out_path)
    out.print(
        f"{out_path}: obsm['{key}'] {adata.obsm[key].shape}; {coverage.mapped_genes}/{coverage.dataset_genes} "
        f"genes mapped ({coverage.mapped_by_id} by ID, {coverage.mapped_by_symbol} by symbol), "
        f"{coverage.vocabulary_fraction:.1%} of the model's {coverage.vocabulary_genes} genes"
    )



def _embed_shards(checkpoint: Path, data: Path, out_path: Path, *, genes: Path | None, trusted: bool, normalize: str,
                  device: str, batch_size: int | None, split: str | None, actors: int, address: str | None) -> None:
    """``ssl-st embed`` on a shard directory or a Merlin split: Ray Data, one model per actor."""
    from ssl_st.models import CheckpointError
    from ssl_st.models.base import resolve_device
    from ssl_st.pp import CoverageError
    from ssl_st.shards import EmbedOptions, ModelRef, ShardError, embed_shards

    if normalize != "cp10k":
        raise fail("--normalize median needs every cell at once (the median library size); shards are embedded "
                   "with cp10k, upstream's normalisation")
    gpus = 1.0 if resolve_device(device).type == "cuda" else 0.0
    try:
        options = EmbedOptions(actors=actors, gpus_per_actor=gpus, batch_size=batch_size, progress=True)
        result = embed_shards(ModelRef(str(checkpoint), str(genes) if genes else None, trusted), data, out_path,
                              split=split, options=options, address=address)
    except (ShardError, CoverageError, CheckpointError, FileNotFoundError) as exc:
        raise fail(str(exc)) from None
    except ValueError as exc:  # bad options
        raise fail(f"{data}: {exc}") from None
    c = result.coverage
    out.print(f"{out_path}: {result.manifest.n_rows:,} cells x {result.latent_dim}-d embedding in "
              f"{len(result.manifest.shards)} shard(s); {c.mapped_genes}/{c.dataset_genes} genes mapped, "
              f"{c.vocabulary_fraction:.1%} of the model's {c.vocabulary_genes} genes", highlight=False)


def _connect(address: str | None) -> None:
    """Join ``address`` (else RAY_ADDRESS) or start an embedded Ray, as ``ssl-st run`` does; the
    workers' lines (epochs, progress) are shown."""
    from .. import ray_exec

    try:
        ray_exec.connect(address, log_to_driver=True)
    except ConnectionError as exc:
        raise fail(str(exc)) from None


def _parse_set(items: list[str]) -> dict[str, float | int]:
    settings: dict[str, float | int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise fail(f"--set expects NAME=VALUE; got '{item}'")
        try:
            settings[name.replace("-", "_")] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            raise fail(f"--set {name}: '{value}' is not a number") from None
    return settings


@app.command()
def pretrain(
    reference: Annotated[Path, typer.Argument(help="Reference cells: an .h5ad (raw counts, or what --values declares), a shard directory (`ssl-st data shard`) or a Merlin store (with --split).")],
    method: Annotated[str, typer.Option(help="A pretraining method: random-mask, gp-mask, barlow-twins (or a registered plugin).")],
    out_path: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.ckpt); <name>.var.parquet and <name>.json go beside it.")],
    programs: Annotated[Path | None, typer.Option(help="gp-mask: gene programs (GMT file).")] = None,
    genes: Annotated[Path | None, typer.Option(help="Vocabulary to train in (var.parquet); default: the reference's genes.")] = None,
    units: Annotated[str, typer.Option(help="Encoder widths, comma-separated.")] = "512,512,256,256,64",
    dropout: Annotated[float | None, typer.Option(help="Encoder dropout (default: 0.1; 0 for barlow-twins).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: the method's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: the method's).")] = None,
    settings: Annotated[list[str], typer.Option("--set", help="Other method settings, NAME=VALUE (e.g. mask_rate=0.3).")] = [],  # noqa: B006
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    log_dir: Annotated[Path | None, typer.Option(help="TensorBoard directory (default: beside the checkpoint).")] = None,
    values: ValuesOpt = None,
    target_sum: TargetSumOpt = None,
    workers: Annotated[int, typer.Option(help="Ray Train workers (data parallel; a checkpoint per epoch under <out>-train/, from which a lost worker resumes); 0: train in this process.")] = 0,
    cpus_per_worker: Annotated[float, typer.Option(help="With --workers: CPUs (torch threads) per worker.")] = 1.0,
    split: Annotated[str | None, typer.Option(help="Merlin store: the split to train on (train, val, test).")] = None,
    address: Annotated[str | None, typer.Option(help="With --workers: a Ray cluster to join (default: RAY_ADDRESS, else a local Ray).")] = None,
    stream: Annotated[bool | None, typer.Option("--stream/--in-memory", help="Shards or Merlin with --workers: stream them through Ray Data (each worker reads its share: files reshuffled every epoch, a shuffle buffer; the default) or read every cell into memory first (exact random batches, as without --workers).")] = None,
    shuffle_buffer: Annotated[int, typer.Option(help="With --stream: rows each worker shuffles at a time.")] = 16_384,
) -> None:
    """Pretrain an encoder on any reference AnnData or shard directory; writes a checkpoint in the
    published layout. With --workers N, on N Ray Train workers; shards then stream by default (no
    process holds the whole matrix), --in-memory reads them whole as an .h5ad is."""
    from ssl_st.models import PRETRAINING

    if method not in PRETRAINING:
        raise fail(f"--method: {PRETRAINING.unknown(method)}")
    try:
        widths = tuple(int(u) for u in units.split(","))
    except ValueError:
        raise fail(f"--units expects comma-separated integers; got '{units}'") from None
    options = _parse_set(settings) | {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v is not None}
    try:
        training = PRETRAINING[method](**options)
    except (TypeError, ValueError) as exc:
        raise fail(f"{method}: {exc}") from None
    gene_programs = None
    if training.needs_programs:
        from ssl_st.programs import read_gmt

        if programs is None:
            raise fail(f"{method} needs --programs FILE.gmt")
        try:
            gene_programs = read_gmt(programs)
        except (OSError, ValueError) as exc:
            raise fail(str(exc)) from None
    from ssl_st.genes import Vocabulary
    from ssl_st.models import Architecture
    from ssl_st.pp import model_input

    if workers < 0:
        raise fail(f"--workers must be 0 (this process) or more; got {workers}")
    streaming = _streaming(reference, stream, workers)
    options = None
    if streaming:
        from ssl_st.shards.stream import StreamOptions

        try:
            options = StreamOptions(shuffle_buffer=shuffle_buffer)
        except ValueError as exc:
            raise fail(f"--shuffle-buffer: {exc}") from None
        inputs, vocabulary, coverage = _shard_stream(reference, genes, split, values, target_sum)
        n_cells = inputs.n_rows
    elif reference.is_dir():
        inputs, vocabulary, coverage = _shard_inputs(reference, genes, split, values, target_sum)
    else:
        if split is not None:
            raise fail(f"--split names a split of a Merlin store; {reference} is a file")
        adata = read_h5ad(reference, "the reference", values=values, target_sum=target_sum)
        vocabulary = Vocabulary.from_parquet(genes) if genes else Vocabulary.from_var(adata.var)
        inputs, coverage = model_input(adata, vocabulary)
    if not streaming:
        n_cells = inputs.shape[0]
    drop = dropout if dropout is not None else (0.0 if training.network == "barlow-twins" else 0.1)
    architecture = Architecture(units=widths, dropout=drop)
    log_dir = log_dir or out_path.with_suffix("").parent / f"{out_path.stem}-tensorboard"
    how = f", streamed from {len(inputs.files)} file(s)" if streaming else ""
    err.print(f"pretraining {method} on {n_cells} cells x {len(vocabulary)} genes ({coverage.mapped_genes} measured{how}); curves: {log_dir}")
    if workers:
        model = _pretrain_on_workers(training, inputs, vocabulary, architecture, gene_programs, seed=seed,
                                     workers=workers, cpus=cpus_per_worker, device=device, address=address,
                                     storage=out_path.with_suffix("").parent / f"{out_path.stem}-train", log_dir=log_dir,
                                     stream=options)
        path = model.save(out_path)
        from ssl_st.files import vocabulary_path

        out.print(f"{path}: {method} checkpoint from {workers} worker(s) (best epoch "
                  f"{model.training.get('best_epoch', 0) + 1}); genes: {vocabulary_path(path)}")
        return

    with epoch_progress(f"pretraining {method}", training.epochs) as advance:
        def show(epoch: int, total: int, train: float, val: float) -> None:  # epoch counts from 0
            advance(epoch + 1, train=train, val=val)

        try:
            model = training.train(inputs, vocabulary, architecture, programs=gene_programs, seed=seed, device=device,
                                   log_dir=log_dir, on_epoch=show)
        except ValueError as exc:
            raise fail(str(exc)) from None
    path = model.save(out_path)
    from ssl_st.files import vocabulary_path

    out.print(f"{path}: {method} checkpoint (best epoch {model.training.get('best_epoch', 0) + 1}); genes: {vocabulary_path(path)}")



def _shard_inputs(path: Path, genes: Path | None, split: str | None, values: str | None, target_sum: float | None):
    """A shard directory or Merlin split as pretraining input: (inputs, vocabulary, coverage)."""
    from ssl_st.genes import Vocabulary
    from ssl_st.shards import ShardError, open_source
    from ssl_st.shards.inputs import read_inputs

    if values is not None or target_sum is not None:
        raise fail("--values and --target-sum apply to an .h5ad; shards carry their value type in their manifest")
    try:
        source = open_source(path, split=split)
        vocabulary = Vocabulary.from_parquet(genes) if genes else Vocabulary.from_var(source.var())
        inputs, coverage = read_inputs(source, vocabulary)
    except (ShardError, ValueError) as exc:
        raise fail(str(exc)) from None
    return inputs, vocabulary, coverage


def _streaming(reference: Path, stream: bool | None, workers: int) -> bool:
    """Whether ``pretrain`` streams its input. By default it does for shards and Merlin stores
    whenever Ray Train runs (``--workers`` 1 or more): the point of shards is data larger than
    memory, and in memory every worker would hold a copy of the whole matrix. Without workers, and
    for an .h5ad, it reads into memory (no Ray in the process; the file is in memory anyway)."""
    if stream is None:
        return reference.is_dir() and workers > 0
    if stream and not reference.is_dir():
        raise fail(f"--stream reads a shard directory or Merlin store; {reference} is a file: write it as shards "
                   "first (`ssl-st data shard`), or leave --stream out")
    if stream and workers == 0:
        raise fail("--stream trains on Ray Train workers: add --workers N (1 or more), or use --in-memory")
    return stream


def _shard_stream(path: Path, genes: Path | None, split: str | None, values: str | None, target_sum: float | None):
    """A shard directory or Merlin split to stream: (source, vocabulary, coverage); checks its files
    and the gene mapping before Ray starts, reading no cell."""
    from ssl_st.genes import Vocabulary
    from ssl_st.shards import ShardError, open_source
    from ssl_st.shards.inputs import plan_inputs

    if values is not None or target_sum is not None:
        raise fail("--values and --target-sum apply to an .h5ad; shards carry their value type in their manifest")
    try:
        source = open_source(path, split=split)
        vocabulary = Vocabulary.from_parquet(genes) if genes else Vocabulary.from_var(source.var())
        _, coverage = plan_inputs(source.var(), vocabulary, values=source.values, dense=source.dense)
    except (ShardError, ValueError) as exc:
        raise fail(str(exc)) from None
    return source, vocabulary, coverage


def _pretrain_on_workers(training, inputs, vocabulary, architecture, programs, *, seed: int, workers: int, cpus: float,
                         device: str, address: str | None, storage: Path, log_dir: Path, stream=None):
    """``ssl-st pretrain --workers N``: Ray Train, a checkpoint per epoch under <out>-train/; ``inputs``
    a matrix in memory, or a shard :class:`~ssl_st.shards.Source` to stream with ``stream``'s options."""
    from ssl_st.models.base import resolve_device
    from ssl_st.models.distributed import Workers, train_data_parallel

    use_gpu = resolve_device(device).type == "cuda"
    _connect(address)
    import hashlib
    from dataclasses import asdict

    # Ray Train's run directory is named after what it trains, so two different runs into the same
    # --out never share checkpoints.
    if stream is None:
        what = repr((type(training).__name__, asdict(training), seed, asdict(architecture), workers, inputs.shape, inputs.nnz))
    else:
        data = (str(inputs.path.resolve()), inputs.merlin.split if inputs.merlin else None, inputs.n_rows,
                [f.name for f in inputs.files], asdict(stream))
        what = repr((type(training).__name__, asdict(training), seed, asdict(architecture), workers, "stream", data))
    name = f"{training.name}-{hashlib.sha256(what.encode()).hexdigest()[:12]}"
    try:
        return train_data_parallel(training, inputs, vocabulary, architecture, programs=programs, seed=seed,
                                   workers=Workers(count=workers, cpus=cpus, use_gpu=use_gpu), storage=storage,
                                   name=name, log_dir=log_dir, stream=stream)
    except ValueError as exc:
        raise fail(str(exc)) from None

@models_app.command("pull")
def models_pull(
    names: Annotated[list[str] | None, typer.Argument(help="Files to fetch (default: all): RandomMask, GPMask, BarlowTwins, var.")] = None,
    cache_dir: CacheOpt = None,
    endpoint: EndpointOpt = None,
    force: ForceOpt = False,
) -> None:
    """Download the published checkpoints and gene order, verifying sha256 checksums."""
    from ssl_st import hub

    pull_files(hub.PUBLISHED, names, cache_dir, endpoint, force)
