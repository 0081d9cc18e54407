"""``ssl-st embed``, ``ssl-st pretrain`` and ``ssl-st models pull``: the model zoo outside a grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .cli import app, err, fail, out

models_app = typer.Typer(help="Published checkpoints: download and verify.", no_args_is_help=True)
app.add_typer(models_app, name="models")


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

    unknown = [n for n in names or [] if n not in hub.PUBLISHED]
    if unknown:
        raise fail(f"unknown file(s) {', '.join(unknown)}; choose from {', '.join(hub.PUBLISHED)}")

    def progress(name: str, done: int, total: int | None) -> None:
        if total and done == total:
            err.print(f"  {name}: {done / 1e6:.1f} MB", highlight=False)

    try:
        paths = hub.pull(names or None, cache_dir=cache_dir, endpoint=endpoint, force=force, progress=progress)
    except hub.HubError as exc:
        raise fail(str(exc)) from None
    for name, path in paths.items():
        out.print(f"{name}: {path}")

