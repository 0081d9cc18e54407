"""``ssl-st cluster``: spatial domains of one section, outside any grid."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import DeviceOpt, SeedOpt, TargetSumOpt, ValuesOpt, app, epoch_progress, fail, out, read_h5ad


@app.command("cluster")
def cluster_command(
    data: Annotated[Path, typer.Argument(help="A section (.h5ad) with obsm['spatial'] and expression: raw counts (layers['counts'] or X), or what --values declares (X).")],
    method: Annotated[str, typer.Option(help="A spatial-domain method: stagate, graphst, cellcharter, the spatial reference neighbour-average, or a baseline without space: gmm, kmeans, leiden (or a registered plugin).")],
    out_path: Annotated[Path, typer.Option("--out", help="Output .h5ad: the input plus obs[KEY] and obsm['X_<method>'].")],
    n_domains: Annotated[int | None, typer.Option("--n-domains", help="Number of domains (leiden: searched resolution).")] = None,
    input_rep: Annotated[str, typer.Option("--input", help="X (expression) or an obsm key, e.g. X_random_mask for the -RM variant.")] = "X",
    labels: Annotated[str | None, typer.Option(help="obs column of ground-truth domains: adds ARI, NMI, homogeneity, completeness.")] = None,
    head: Annotated[str | None, typer.Option(help="gmm (mclust EEE stand-in), kmeans or leiden; default per method.")] = None,
    resolution: Annotated[float | None, typer.Option(help="leiden: a fixed resolution instead of a search.")] = None,
    graph: Annotated[str | None, typer.Option(help="knn, radius or delaunay; default per method.")] = None,
    k: Annotated[int | None, typer.Option(help="knn graph: neighbours per cell (default: stagate and neighbour-average 24, graphst 12, sized to a 25-cell neighbourhood).")] = None,
    radius: Annotated[float | None, typer.Option(help="radius graph (implied): in the units of obsm['spatial'] (the study: 150).")] = None,
    library_key: Annotated[str | None, typer.Option(help="obs column of slices; graphs never cross slices, metrics are per slice.")] = None,
    epochs: Annotated[int | None, typer.Option(help="stagate (default 200) / graphst (600).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="stagate / graphst (default 1e-3).")] = None,
    n_layers: Annotated[int | None, typer.Option(help="cellcharter: neighbourhood rings (default 3).")] = None,
    key: Annotated[str, typer.Option(help="obs column to write.")] = "domain",
    values: ValuesOpt = None,
    target_sum: TargetSumOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Find spatial domains: write obs[KEY] and print spatial continuity (and label agreement) metrics."""
    from cluster import DomainConfig, find_domains, score_domains
    from ssl_st.datasets import write_h5ad_atomic

    if radius is not None and graph is None:  # --radius alone means a radius graph
        graph = "radius"
    # only the flags given: each method takes the settings it has, with its own defaults
    given = {name: value for name, value in (
        ("head", head), ("resolution", resolution), ("graph", graph), ("k", k), ("radius", radius),
        ("epochs", epochs), ("learning_rate", learning_rate), ("n_layers", n_layers),
    ) if value is not None}
    try:
        config = DomainConfig.from_name(method, n_domains=n_domains, use_rep=input_rep, library_key=library_key, **given)
    except ValueError as exc:
        raise fail(f"--method {method}: {exc}") from None
    if labels is not None and labels == key:
        raise fail(f"--labels {labels} is also the column to write (--key {key}); pass another --key so the ground truth is kept")
    # an obsm input replaces the genes: then the expression is not read, and need not be declared
    adata = read_h5ad(data, "the section to cluster", values=values, target_sum=target_sum, expression=input_rep == "X")
    for column in (labels, library_key):
        if column is not None and column not in adata.obs:
            raise fail(f"{data}: obs has no column '{column}' (it has: {', '.join(adata.obs.columns)}); fix --labels / --library-key")
    if "spatial" not in adata.obsm:
        raise fail(f"{data}: obsm['spatial'] is missing; spatial domains need cell coordinates (import the section with ssl-st data import)")
    # a method that trains (STAGATE, GraphST) has its epochs in its settings; the others show no bar
    epochs = getattr(config.settings, "epochs", None)
    with epoch_progress(method, epochs) if epochs else nullcontext() as advance:
        try:
            result = find_domains(adata, config, seed=seed, device=device, key_added=key,
                                  progress=(lambda epoch, loss: advance(epoch, loss=loss)) if advance else None)
        except (KeyError, ValueError) as exc:
            raise fail(f"{data}: {exc.args[0] if exc.args else exc}") from None
    metrics = score_domains(adata, key=key, labels=labels, library_key=library_key)
    write_h5ad_atomic(adata, out_path)
    table = Table(title=f"{data.name}: {method}, input {input_rep}, {int(result.info['n_found'])} domains", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.3f}")
    for name in ("mean_degree", "train_s", "resolution"):
        if name in result.info:
            table.add_row(name, f"{result.info[name]:.3g}")
    out.print(table)
    out.print(f"{out_path}: obs['{key}']" + (f", obsm['X_{method}']" if result.embedding is not None else ""))
