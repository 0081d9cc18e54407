"""``ssl-st report``: one self-contained HTML page of a result store, plus its figures as files.

The page must open anywhere, offline and years later: CSS inline, every figure a base64 ``data:``
URI, no JavaScript, no external URL. Everything on it comes from the store's rows (and, with a
config, from the cells the config plans), so it is regenerated in seconds whenever the store grows.
Text from the store (errors are tracebacks, which may hold ``<`` and ``&``) is always escaped.

The folder is written whole or not at all: into a staging sibling of ``--out`` that is then renamed
over it (:func:`ssl_st.files.replace_dir`), so a reader never sees half a report.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .figures import CELL_TYPE_METRICS, DOMAIN_METRICS, Figure, all_figures
from .store import DONE, FAILED

if TYPE_CHECKING:
    import pandas as pd

    from .detail_figures import ReadDetails
    from .plan import Cell

INDEX = "index.html"
FIGURES = "figures"
PENDING = "pending"


@dataclass(frozen=True)
class TaskStatus:
    """Counts of one task's cells; ``pending`` is None without a config (the store cannot know what
    it has not run), ``stale`` counts recorded cells the config no longer plans."""

    task: str
    done: int
    failed: int
    pending: int | None
    stale: int = 0


@dataclass(frozen=True)
class Failure:
    label: str
    cell_id: str
    headline: str  # the error's first non-empty line
    error: str  # the whole stored error (a traceback)


@dataclass(frozen=True)
class Report:
    """What one page shows, gathered before any HTML is written."""

    title: str
    config_name: str | None
    results: str
    generated: datetime
    statuses: list[TaskStatus]
    failures: list[Failure]
    figures: list[Figure]
    summary: pd.DataFrame
    notes: tuple[str, ...] = ()  # said above the figures: what the store could not draw, and why


# -- gathering --------------------------------------------------------------------------------------------

def cell_label(task: str, dataset: str, model: str | None, mode: str, seed: int) -> str:
    """A cell as ``ssl-st`` names it everywhere (:meth:`grid.plan.Cell.label`)."""
    return f"{task}/{dataset}/{model or '-'}/{mode}/seed={seed}"


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per recorded cell: its id, task and status."""
    return frame.drop_duplicates("cell_id")[["cell_id", "task", "status"]]


def statuses(frame: pd.DataFrame, planned: Sequence[Cell] | None) -> list[TaskStatus]:
    """Done / failed / pending per task. With ``planned`` (a config's cells) pending is what it plans
    and the store lacks; recorded cells it does not plan (an earlier config's) are counted apart."""
    cells = _cells(frame)
    recorded = dict(zip(cells["cell_id"], cells["status"]))
    if planned is None:
        tasks = list(dict.fromkeys(cells["task"]))
        return [TaskStatus(t, int(((cells["task"] == t) & (cells["status"] == DONE)).sum()),
                           int(((cells["task"] == t) & (cells["status"] == FAILED)).sum()), None) for t in tasks]
    planned_ids = {c.cell_id for c in planned}
    out = []
    for task in dict.fromkeys([c.task for c in planned] + list(cells["task"])):
        mine = [recorded.get(c.cell_id, PENDING) for c in planned if c.task == task]
        stale = int(((cells["task"] == task) & ~cells["cell_id"].isin(planned_ids)).sum())
        out.append(TaskStatus(task, mine.count(DONE), mine.count(FAILED), mine.count(PENDING), stale))
    return out


def failures(frame: pd.DataFrame) -> list[Failure]:
    """Every failed cell with its error, in task / dataset / model / mode / seed order."""
    failed = frame[frame["status"] == FAILED].drop_duplicates("cell_id")
    failed = failed.assign(_model=failed["model"].fillna("")).sort_values(["task", "dataset", "_model", "mode", "seed", "cell_id"])
    out = []
    for row in failed.itertuples():
        error = row.error if isinstance(row.error, str) else ""
        headline = next((line.strip() for line in error.splitlines() if line.strip()), "(no error recorded)")
        out.append(Failure(cell_label(row.task, row.dataset, row.model if isinstance(row.model, str) else None,
                                      row.mode, int(row.seed)), row.cell_id, headline, error))
    return out


def gather(
    frame: pd.DataFrame,
    *,
    results: str,
    config_name: str | None = None,
    planned: Sequence[Cell] | None = None,
    metrics: Iterable[str] = ("macro_f1",),
    results_dir: Path | None = None,
    generated: datetime | None = None,
    read: ReadDetails | None = None,
    umap_cells: int | None = None,
    umap_cache: Path | None = None,
    note: Callable[[str], None] | None = None,
) -> Report:
    """Everything one page shows, from store rows (``frame``), the config's cells, the figures and,
    with ``read`` (the store's ``details``), the pictures of what cells kept."""
    from .report import summarize

    name = config_name or "ssl-st results"
    figures = all_figures(frame, metrics=tuple(metrics), results=results_dir, read=read, umap_cells=umap_cells,
                          umap_cache=umap_cache, note=note)
    notes = []
    pictures = {"confusion", "umap", "domain-maps"}
    if read is not None and not frame.empty and not any(f.name.split("__")[0] in pictures for f in figures):
        notes.append("No confusion matrices, domain maps or UMAPs: this store's cells kept no details (a store written "
                     "before ssl-st kept them, or cells whose kinds keep none). Cells run from now on keep them; "
                     "<code>ssl-st run --force</code> reruns the old ones.")
    return Report(
        title=f"ssl-st report: {name}", config_name=config_name, results=results,
        generated=generated or datetime.now(timezone.utc), statuses=statuses(frame, planned),
        failures=failures(frame), figures=figures, summary=summarize(frame), notes=tuple(notes),
    )


# -- rendering --------------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1150px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
.meta { color: #666; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.4em 0.8em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.failed, .failed { color: #b00020; font-weight: 600; }
pre { white-space: pre-wrap; font-size: 0.8em; background: #f8f8f8; padding: 0.5em; margin: 0.3em 0; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.9em; max-width: 60em; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], *, raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (cells already HTML)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(c if raw else f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(value: object, cls: str = "num") -> str:
    return f'<td class="{cls}">{_e(value)}</td>'


def status_section(report: Report) -> str:
    rows = []
    for s in report.statuses:
        pending = "?" if s.pending is None else s.pending
        cells = [f"<td>{_e(s.task)}</td>", _num(s.done), _num(s.failed, "num failed" if s.failed else "num"), _num(pending)]
        if report.config_name is not None:
            cells.append(_num(s.stale))
        rows.append(cells)
    header = ["task", "done", "failed", "pending"] + (["not in config"] if report.config_name is not None else [])
    out = "<h2 id=\"status\">Grid status</h2>"
    if report.config_name is None:
        out += ('<p class="note">No config given: pending cells are unknown (the store records only what ran). '
                "Pass the experiment config (<code>ssl-st report CONFIG</code>) to count them.</p>")
    if not rows:
        return out + "<p>The store holds no cells yet.</p>"
    return out + _table(header, rows, raw=True)


def failures_section(report: Report) -> str:
    out = f'<h2 id="failures">Failed cells ({len(report.failures)})</h2>'
    if not report.failures:
        return out + "<p>None.</p>"
    rows = []
    for f in report.failures:
        detail = (f"<details><summary>{_e(f.headline)}</summary><pre>{_e(f.error)}</pre></details>"
                  if f.error.strip() != f.headline else _e(f.headline))
        rows.append([f'<td class="failed">{_e(f.label)}</td>', f"<td><code>{_e(f.cell_id)}</code></td>", f"<td>{detail}</td>"])
    return (out + "<p>Rerun them with <code>ssl-st run --retry-failed</code> once the cause is fixed.</p>"
            + _table(["cell", "cell id", "error"], rows, raw=True))


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(figure: Figure) -> str:
    files = f"<code>{FIGURES}/{_e(figure.name)}.png</code>" + (", <code>.svg</code>" if figure.svg is not None else "")
    return (f'<figure id="fig-{_e(figure.name)}"><img src="{_data_uri(figure.png)}" alt="{_e(figure.title)}">'
            f"<figcaption>{_e(figure.caption)} (File: {files}.)</figcaption></figure>")


SECTIONS = (
    ("cell-type", "Cell-type transfer"),
    ("embeddings", "Embeddings"),
    ("domains", "Spatial domains"),
    ("tuning", "Tuning"),
    ("imputation", "Imputation"),
    ("training", "Training curves"),
)


def figures_section(report: Report) -> str:
    if not report.figures:
        return '<h2 id="figures">Figures</h2><p>No scores recorded yet: nothing to draw.</p>'
    out = [f'<p class="note">{note}</p>' for note in report.notes]  # notes are ours: HTML, nothing from the store
    for prefix, title in SECTIONS:  # a section of no known kind would be dropped: keep SECTIONS whole
        mine = [f for f in report.figures if f.section == prefix]
        if mine:
            out.append(f'<h2 id="{prefix}">{_e(title)}</h2>' + "".join(figure_html(f) for f in mine))
    return "".join(out)


def summary_section(report: Report) -> str:
    from .report import format_cell

    frame = report.summary
    out = '<h2 id="summary">Summary: mean ± sd over seeds</h2>'
    if frame.empty:
        return out + "<p>No scores recorded yet.</p>"
    metrics = [m for m in (*CELL_TYPE_METRICS, *DOMAIN_METRICS) if f"{m}_mean" in frame.columns]
    rows = []
    for r in frame.to_dict("records"):
        cells = [r["task"], r["dataset"], r["model"], r["mode"], str(int(r["n_seeds"]))]
        for m in metrics:
            mean = r[f"{m}_mean"]
            cells.append("" if mean != mean else format_cell(mean, r[f"{m}_sd"]))
        rows.append(cells)
    return out + _table(["task", "dataset", "model", "mode", "seeds", *metrics], rows)


def render(report: Report) -> str:
    """The whole page as one HTML string (no script, no external reference)."""
    config = _e(report.config_name) if report.config_name else "none given"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(report.title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_e(report.title)}</h1>"
        f'<p class="meta">Config: <b>{config}</b> · results: <code>{_e(report.results)}</code> · generated '
        f"{_e(report.generated.strftime('%Y-%m-%d %H:%M:%S %Z'))}</p>"
        + status_section(report) + failures_section(report) + figures_section(report) + summary_section(report)
        + "</body></html>\n"
    )


# -- writing ----------------------------------------------------------------------------------------------

def write(report: Report, out: str | Path) -> Path:
    """``out/index.html`` and ``out/figures/<name>.png|.svg``, swapped in whole; the index's path."""
    import shutil

    from ssl_st.files import replace_dir, staging_dir

    out = Path(out)
    staged = staging_dir(out)
    try:
        staged.chmod(0o755)  # mkdtemp's 0700 would hide the report from the group once renamed in
        (staged / FIGURES).mkdir()
        for figure in report.figures:
            (staged / FIGURES / f"{figure.name}.png").write_bytes(figure.png)
            if figure.svg is not None:
                (staged / FIGURES / f"{figure.name}.svg").write_text(figure.svg, encoding="utf-8")
        (staged / INDEX).write_text(render(report), encoding="utf-8")
        replace_dir(staged, out)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return out / INDEX
