"""``ssl-st data import | shard | pull | list``: datasets outside a grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    CacheOpt,
    CountsLayerOpt,
    EndpointOpt,
    ForceOpt,
    FormatOpt,
    LabelColumnOpt,
    LabelKeyOpt,
    LabelsOpt,
    SpatialKeyOpt,
    TargetSumOpt,
    ValuesOpt,
    app,
    fail,
    out,
    pull_files,
)

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
    fmt: FormatOpt = None,
    labels: LabelsOpt = None,
    label_column: LabelColumnOpt = None,
    label_key: LabelKeyOpt = None,
    spatial_key: SpatialKeyOpt = None,
    counts_layer: CountsLayerOpt = None,
    gene_symbols: Annotated[str | None, typer.Option(help="h5ad: var column of gene symbols.")] = None,
    gene_ids: Annotated[str | None, typer.Option(help="h5ad: var column of Ensembl ids.")] = None,
    values: ValuesOpt = None,
    target_sum: TargetSumOpt = None,
) -> None:
    """Read what an instrument or portal produced into one standard AnnData (expression, coordinates, labels).

    The expression's type (--values) is recorded in the file, so later commands need not be told again.
    """
    from ssl_st import io
    from ssl_st.datasets import write_h5ad_atomic

    given = {"labels": labels, "label_column": label_column, "label_key": label_key, "spatial_key": spatial_key,
             "counts_layer": counts_layer, "gene_symbols": gene_symbols, "gene_ids": gene_ids, "values": values,
             "target_sum": target_sum}
    options = {key: value for key, value in given.items() if value is not None}
    if (fmt or io.guess_format(path)) == "h5ad":
        options.setdefault("label_key", None)  # no --label-key: no label column is required
    try:
        adata = io.read(path, format=fmt, **options)
    except io.DataError as exc:
        raise fail(str(exc.spelled("cli"))) from None
    write_h5ad_atomic(adata, out_path)
    info = adata.uns.get("ssl_st_import", {})
    dropped = {k: v for k, v in info.items() if k.startswith("dropped_") and k != "dropped_features" and v}
    kind = io.ValueType.recorded(adata.uns)
    out.print(
        f"{out_path}: {adata.n_obs} cells x {adata.n_vars} genes ({info.get('format', fmt)}, {kind or 'counts'})"
        + (f"; dropped {dropped}" if dropped else ""),
        highlight=False,
    )


@data_app.command("shard")
def data_shard(
    path: Annotated[Path, typer.Argument(help="What `ssl-st data import` reads: an .h5ad file (read backed: it never has to fit in memory), a Xenium or MERSCOPE folder.")],
    out_path: Annotated[Path, typer.Option("--out", help="Shard directory to write (replaced whole when complete).")],
    rows_per_shard: Annotated[int | None, typer.Option("--rows-per-shard", help="Cells per Parquet shard (default 32,768).")] = None,
    fmt: FormatOpt = None,
    labels: LabelsOpt = None,
    label_column: LabelColumnOpt = None,
    label_key: LabelKeyOpt = None,
    spatial_key: SpatialKeyOpt = None,
    counts_layer: CountsLayerOpt = None,
    values: ValuesOpt = None,
    target_sum: TargetSumOpt = None,
) -> None:
    """Write a dataset as Parquet shards (sparse rows, obs columns, coordinates, var.parquet and a
    manifest with checksums), which `ssl-st embed` and grid datasets with `source: shards` stream."""
    from ssl_st import io
    from ssl_st.shards import DEFAULT_ROWS_PER_SHARD, ShardError, shard

    options = {"labels": labels, "label_column": label_column, "label_key": label_key, "spatial_key": spatial_key,
               "counts_layer": counts_layer, "values": values, "target_sum": target_sum}
    try:
        manifest = shard(path, out_path, format=fmt, rows_per_shard=DEFAULT_ROWS_PER_SHARD if rows_per_shard is None else rows_per_shard,
                         **options)
    except io.DataError as exc:
        raise fail(str(exc.spelled("cli"))) from None
    except (ShardError, ValueError) as exc:
        raise fail(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from None
    out.print(f"{out_path}: {manifest.n_rows:,} cells x {manifest.n_genes:,} genes in {len(manifest.shards)} shard(s) "
              f"({manifest.source_format}, {manifest.values})", highlight=False)
