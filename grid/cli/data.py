"""``ssl-st data import | pull | list``: datasets outside a grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import CacheOpt, EndpointOpt, ForceOpt, app, fail, out, pull_files

data_app = typer.Typer(help="Datasets: import vendor outputs, download the study's files.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("pull")
def data_pull(
    names: Annotated[list[str] | None, typer.Argument(help="Datasets to fetch (default: all); see `ssl-st data list`.")] = None,
    cache_dir: CacheOpt = None,
    endpoint: EndpointOpt = None,
    force: ForceOpt = False,
) -> None:
    """Download the reusability study's datasets, verifying sha256 checksums."""
    from ssl_st.datasets.registry import STUDY_DATASETS

    pull_files(STUDY_DATASETS, names, cache_dir, endpoint, force)


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
