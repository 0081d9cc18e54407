"""``ssl-st embed``, ``pretrain``, ``models pull`` and ``data import|pull|list``: models and data outside a grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .cli import app, err, fail, out

models_app = typer.Typer(help="Published checkpoints: download and verify.", no_args_is_help=True)
app.add_typer(models_app, name="models")
data_app = typer.Typer(help="Datasets: import vendor outputs, download the study's files.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _read_h5ad(path: Path, what: str):
    import anndata as ad

    if not path.is_file():
        raise fail(f"{path}: no such file ({what})")
    try:
        return ad.read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise many types for a truncated or foreign file
        raise fail(f"{path}: not a readable h5ad file ({type(exc).__name__}: {exc}); {what} must be AnnData .h5ad") from None


@app.command()
def embed(
    checkpoint: Annotated[Path, typer.Argument(help="A published or ssl-st checkpoint (.ckpt).")],
    data: Annotated[Path, typer.Argument(help="Cells to embed (.h5ad; raw counts in layers['counts'] or X).")],
    out_path: Annotated[Path, typer.Option("--out", help="Output .h5ad: the input plus obsm[KEY].")],
    genes: Annotated[Path | None, typer.Option(help="The model's gene order (default: var.parquet beside the checkpoint).")] = None,
    key: Annotated[str | None, typer.Option(help="obsm key (default X_<method>).")] = None,
    normalize: Annotated[str, typer.Option(help="cp10k (upstream) or median (the study's spatial variant).")] = "cp10k",
    trusted: Annotated[bool, typer.Option("--trusted", help="Allow unpickling objects (only for files you trust).")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Cells per forward pass.")] = 4096,
) -> None:
    """Embed cells with a model: map genes onto its vocabulary, normalise as upstream, write obsm."""
    from ssl_st.datasets import write_h5ad_atomic
    from ssl_st.models import CheckpointError, SSLModel
    from ssl_st.pp import model_input

    if normalize not in ("cp10k", "median"):
        raise fail(f"--normalize must be cp10k or median; got '{normalize}'")
    try:
        model = SSLModel.load(checkpoint, genes=genes, trusted=trusted)
    except CheckpointError as exc:
        raise fail(str(exc)) from None
    adata = _read_h5ad(data, "the cells to embed")
    inputs, coverage = model_input(adata, model.vocabulary, 1e4 if normalize == "cp10k" else "median")
    if coverage.mapped_genes == 0:
        raise fail(
            f"{data}: none of its {coverage.dataset_genes} genes matches the model's vocabulary by Ensembl ID "
            "or symbol; check var (index, gene_ids, feature_id or feature_name) and the species"
        )
    key = key or f"X_{model.method.replace('-', '_')}"
    adata.obsm[key] = model.embed(inputs, batch_size=batch_size, device=device)
    adata.uns.setdefault("ssl_st", {})[key] = {"checkpoint": str(checkpoint), **coverage.as_dict()}
    write_h5ad_atomic(adata, out_path)
    out.print(
        f"{out_path}: obsm['{key}'] {adata.obsm[key].shape}; {coverage.mapped_genes}/{coverage.dataset_genes} "
        f"genes mapped ({coverage.mapped_by_id} by ID, {coverage.mapped_by_symbol} by symbol), "
        f"{coverage.vocabulary_fraction:.1%} of the model's {coverage.vocabulary_genes} genes"
    )


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
    reference: Annotated[Path, typer.Argument(help="Reference cells (.h5ad, raw counts).")],
    method: Annotated[str, typer.Option(help="random-mask, gp-mask or barlow-twins.")],
    out_path: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.ckpt); var.parquet and a .json go beside it.")],
    programs: Annotated[Path | None, typer.Option(help="gp-mask: gene programs (GMT file).")] = None,
    genes: Annotated[Path | None, typer.Option(help="Vocabulary to train in (var.parquet); default: the reference's genes.")] = None,
    units: Annotated[str, typer.Option(help="Encoder widths, comma-separated.")] = "512,512,256,256,64",
    dropout: Annotated[float | None, typer.Option(help="Encoder dropout (default: 0.1; 0 for barlow-twins).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: the method's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: the method's).")] = None,
    settings: Annotated[list[str], typer.Option("--set", help="Other method settings, NAME=VALUE (e.g. mask_rate=0.3).")] = [],  # noqa: B006
    seed: Annotated[int, typer.Option(help="Initialisation and training seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    log_dir: Annotated[Path | None, typer.Option(help="TensorBoard directory (default: beside the checkpoint).")] = None,
) -> None:
    """Pretrain an encoder on any reference AnnData; writes a checkpoint in the published layout."""
    from ssl_st.genes import Vocabulary
    from ssl_st.models import CONFIGS, Architecture, pretrain as run_pretraining
    from ssl_st.pp import model_input
    from ssl_st.programs import read_gmt

    if method not in CONFIGS:
        raise fail(f"--method must be one of {', '.join(CONFIGS)}; got '{method}'")
    try:
        widths = tuple(int(u) for u in units.split(","))
    except ValueError:
        raise fail(f"--units expects comma-separated integers; got '{units}'") from None
    options = _parse_set(settings) | {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size)) if v is not None}
    try:
        CONFIGS[method](**options)
    except TypeError as exc:
        raise fail(f"{method}: {exc}") from None
    gene_programs = None
    if method == "gp-mask":
        if programs is None:
            raise fail("gp-mask needs --programs FILE.gmt")
        try:
            gene_programs = read_gmt(programs)
        except (OSError, ValueError) as exc:
            raise fail(str(exc)) from None
    adata = _read_h5ad(reference, "the reference")
    vocabulary = Vocabulary.from_parquet(genes) if genes else Vocabulary.from_var(adata.var)
    inputs, coverage = model_input(adata, vocabulary)
    drop = dropout if dropout is not None else (0.0 if method == "barlow-twins" else 0.1)
    architecture = Architecture(units=widths, dropout=drop)
    log_dir = log_dir or out_path.with_suffix("").parent / f"{out_path.stem}-tensorboard"
    err.print(f"pretraining {method} on {adata.n_obs} cells x {len(vocabulary)} genes ({coverage.mapped_genes} measured); curves: {log_dir}")

    def show(epoch: int, train: float, val: float) -> None:
        err.print(f"  epoch {epoch + 1}: train {train:.5f}  val {val:.5f}", highlight=False)

    try:
        model = run_pretraining(
            method, inputs, vocabulary, architecture, options, programs=gene_programs,
            seed=seed, device=device, log_dir=log_dir, on_epoch=show,
        )  # fmt: skip
    except ValueError as exc:
        raise fail(str(exc)) from None
    path = model.save(out_path)
    out.print(f"{path}: {method} checkpoint (best epoch {model.training.get('best_epoch', 0) + 1}); genes: {path.parent / 'var.parquet'}")


@models_app.command("pull")
def models_pull(
    names: Annotated[list[str] | None, typer.Argument(help="Files to fetch (default: all): RandomMask, GPMask, BarlowTwins, var.")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache", help="Cache directory (default: $SSL_ST_CACHE or ~/.cache/ssl-st).")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Hub endpoint (default: $HF_ENDPOINT or https://huggingface.co).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if a verified copy is cached.")] = False,
) -> None:
    """Download the published checkpoints and gene order, verifying sha256 checksums."""
    from ssl_st import hub

    _pull(hub.PUBLISHED, names, cache_dir, endpoint, force)



def _pull(files: dict, names: list[str] | None, cache_dir, endpoint, force) -> None:
    from ssl_st import hub

    unknown = [n for n in names or [] if n not in files]
    if unknown:
        raise fail(f"unknown name(s) {', '.join(unknown)}; choose from {', '.join(files)}")

    def progress(name: str, done: int, total: int | None) -> None:
        if total and done == total:
            err.print(f"  {name}: {done / 1e6:.1f} MB", highlight=False)

    try:
        paths = hub.pull([files[n] for n in names or files], cache_dir=cache_dir, endpoint=endpoint, force=force, progress=progress)
    except hub.HubError as exc:
        raise fail(str(exc)) from None
    for name, path in paths.items():
        out.print(f"{name}: {path}", soft_wrap=True, highlight=False)


@data_app.command("pull")
def data_pull(
    names: Annotated[list[str] | None, typer.Argument(help="Datasets to fetch (default: all); see `ssl-st data list`.")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache", help="Cache directory (default: $SSL_ST_CACHE or ~/.cache/ssl-st).")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Hub endpoint (default: $HF_ENDPOINT or https://huggingface.co).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if a verified copy is cached.")] = False,
) -> None:
    """Download the reusability study's datasets, verifying sha256 checksums."""
    from ssl_st.datasets.registry import STUDY_DATASETS

    _pull(STUDY_DATASETS, names, cache_dir, endpoint, force)


@data_app.command("list")
def data_list() -> None:
    """The study's datasets that `ssl-st data pull` knows."""
    from ssl_st.datasets.registry import STUDY_DATASETS

    for name, f in STUDY_DATASETS.items():
        out.print(f"{name:24s} {f.path_in_repo}  — {f.description}", highlight=False)


@data_app.command("import")
def data_import(
    path: Annotated[Path, typer.Argument(help="A Xenium or MERSCOPE output folder, or an .h5ad file.")],
    out_path: Annotated[Path, typer.Option("--out", help="Standard AnnData to write (.h5ad).")],
    fmt: Annotated[str | None, typer.Option("--format", help="xenium, merscope or h5ad (default: guessed).")] = None,
    labels: Annotated[Path | None, typer.Option(help="xenium/merscope: CSV of cell id -> label.")] = None,
    label_key: Annotated[str | None, typer.Option(help="h5ad: obs column of labels.")] = None,
    spatial_key: Annotated[str | None, typer.Option(help="h5ad: obsm key of coordinates.")] = None,
    counts_layer: Annotated[str | None, typer.Option(help="h5ad: layer with raw counts (or raw, X).")] = None,
) -> None:
    """Read what an instrument or portal produced into one standard AnnData (counts, coordinates, labels)."""
    from ssl_st import io
    from ssl_st.datasets import write_h5ad_atomic

    options: dict = {}
    if labels:
        options["labels"] = labels
    for key, value in (("label_key", label_key), ("spatial_key", spatial_key), ("counts_layer", counts_layer)):
        if value:
            options[key] = value
    try:
        adata = io.read(path, format=fmt, **options)
    except io.DataError as exc:
        raise fail(str(exc)) from None
    except TypeError as exc:  # an option the chosen reader does not take
        raise fail(f"{exc}; see `ssl-st data import --help` for which options apply to which format") from None
    write_h5ad_atomic(adata, out_path)
    info = adata.uns.get("ssl_st_import", {})
    dropped = {k: v for k, v in info.items() if k.startswith("dropped_") and k != "dropped_features" and v}
    out.print(
        f"{out_path}: {adata.n_obs} cells x {adata.n_vars} genes ({info.get('format', fmt)})"
        + (f"; dropped {dropped}" if dropped else ""),
        highlight=False,
    )
