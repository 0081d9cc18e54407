"""``ssl-st report``: a self-contained HTML page (status, failures, figures, summary) from a result store.

No Ray: the store is tests/report_store.py's (conftest's ``report_results``), rendered once a session by
``ssl-st report`` in this process (``paper_report``, which tests/test_report_browser.py opens too); the
report of a store without figure data runs in a fresh interpreter.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from grid import published
from grid.figures import groups, summary
from grid.store import ResultStore

from .conftest import REPO, run_cli, run_cli_here
from .report_store import FAILED_LABEL, PAPER, SEEDS, TYPES

@pytest.fixture(autouse=True)
def _umap_cache(monkeypatch, report_cache):
    """Reports drawn in this process share the session report's UMAP cache (``$SSL_ST_CACHE``)."""
    monkeypatch.setenv("SSL_ST_CACHE", str(report_cache))


@pytest.fixture
def results(report_results) -> Path:
    return report_results


@pytest.fixture
def umap_cache(report_cache) -> Path:
    return report_cache / "umap"


@pytest.fixture
def rendered(paper_report) -> tuple[Path, str, str]:
    return paper_report


def test_the_page_is_self_contained_and_names_no_external_resource(rendered):
    out, page, stdout = rendered
    assert stdout.strip().endswith(str(out / "index.html"))
    assert not re.search(r"https?://", page), "the page must open offline"
    assert "<script" not in page.lower() and "<link" not in page.lower()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_every_figure_is_embedded_and_written_as_png_and_svg(rendered):
    out, page, _ = rendered
    pngs = sorted((out / "figures").glob("*.png"))
    names = {p.stem for p in pngs}
    pictures = {n for n in names if n.split("__")[0] in ("confusion", "umap", "domain-maps")}
    assert names - pictures == {p.stem for p in (out / "figures").glob("*.svg")}  # charts also as SVG
    embedded = set(re.findall(r'<img src="data:image/png;base64,([^"]+)"', page))
    for png in pngs:
        assert png.read_bytes().startswith(b"\x89PNG")
        assert base64.b64encode(png.read_bytes()).decode() in embedded, png.name
        if png.stem not in pictures:
            assert ET.parse(png.with_suffix(".svg")).getroot().tag.endswith("svg")
    assert len(embedded) == len(pngs)
    kinds = {n.split("__")[0] for n in names}
    assert kinds == {"cell-type", "confusion", "umap", "domains", "domain-maps", "tuning", "imputation", "training"}, names


def test_pictures_come_from_what_the_cells_kept(rendered, results, umap_cache):
    """Confusion matrices pool the seeds' predictions, domain maps show the first seed's domains in
    the truth's colours, UMAPs are cached by content and redrawn identically from the cache."""
    from grid import detail_figures

    out, page, _ = rendered
    assert '<h2 id="embeddings">Embeddings</h2>' in page and 'id="fig-confusion__' in page
    assert "seed 42" in page and "matched one to one" in page and "No confusion matrices" not in page
    # one UMAP per model of merscope (zero-shot cells: 3 models), each cached once
    assert len(list(umap_cache.glob("*.npy"))) == 3
    before = (out / "figures" / "umap__merscope.png").read_bytes()
    store = ResultStore(results)
    frame = store.table().to_pandas()
    again = [f for f in detail_figures.umap_figures(frame, store.details, cache=umap_cache) if f.name == "umap__merscope"]
    assert [f.png for f in again] == [before]  # drawn again from the cache, byte for byte
    assert len(list(umap_cache.glob("*.npy"))) == 3
    # the matrices are the seeds' predictions pooled, each row a distribution
    pca = frame[(frame["dataset"] == "merscope") & (frame["mode"] == "pca")].drop_duplicates("cell_id")
    kept = [store.details(c, "predictions") for c in pca["cell_id"]]
    matrix = detail_figures.confusion(kept)
    assert matrix.sum(axis=1).round(9).eq(1).all() and list(matrix.index) == sorted(TYPES)
    pooled = __import__("pandas").concat(kept)
    first = pooled[pooled["true"] == TYPES[0]]
    assert matrix.loc[TYPES[0], TYPES[0]] == pytest.approx((first["predicted"] == TYPES[0]).mean())


def test_domains_are_matched_to_the_truth_one_to_one():
    import pandas as pd

    from grid.detail_figures import aligned

    truth = pd.Series(["a", "a", "b", "b", "c", "c", "c"])
    found = pd.Series([2, 2, 0, 0, 1, 1, 5])  # 5: a seventh domain with no truth left to match
    assert aligned(found, truth).tolist() == ["a", "a", "b", "b", "c", "c", "other 1"]
    # one to one: two found domains inside one true domain do not both take its name
    assert aligned(pd.Series([0, 1, 1, 2]), pd.Series(["a", "a", "a", "b"])).tolist() == ["other 1", "a", "a", "b"]


def test_the_failed_cell_is_listed_with_its_error_escaped(rendered):
    _, page, _ = rendered
    assert FAILED_LABEL in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in page
    assert "Failed cells (1)" in page


def test_status_counts_pending_against_the_config(rendered):
    from grid.config import load_config
    from grid.plan import expand

    _, page, _ = rendered
    planned = [c for c in expand(load_config(PAPER)).cells if c.task == "cell-type-spatial"]
    done = sum(1 for c in planned if c.dataset == "merscope" and c.seed in SEEDS)
    row = re.search(r"<tr><td>cell-type-spatial</td>(.*?)</tr>", page).group(1)
    counts = [int(v) for v in re.findall(r'<td class="num[^"]*">(\d+)</td>', row)]
    assert counts == [done, 1, len(planned) - done - 1, 0]  # done, failed, pending, not in config
    tune = re.search(r"<tr><td>tune-domains</td>(.*?)</tr>", page).group(1)
    assert re.findall(r">(\d+)</td>", tune) == ["0", "0", "0", "4"]  # recorded, but not a cell of the config


def test_without_a_config_the_page_says_pending_is_unknown_and_replaces_the_old_report_whole(rendered, results, tmp_path):
    import shutil

    out = tmp_path / "r"
    shutil.copytree(rendered[0], out)
    (out / "figures" / "stale.png").write_bytes(b"old")
    done = run_cli_here("report", "--results", str(results), "--out", str(out), check=True)
    page = (out / "index.html").read_text()
    assert "No config given: pending cells are unknown" in page
    assert FAILED_LABEL in page and "index.html" in done.stdout
    assert not (out / "figures" / "stale.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no staging folder left beside it


def test_the_summary_table_shows_the_summary_views_mean_and_sd(rendered, results):
    import grid
    from grid.report import format_cell

    _, page, _ = rendered
    view = grid.results(results, sql="SELECT * FROM summary WHERE dataset = 'merscope' AND mode = 'pca' "
                                     "AND metric = 'macro_f1'").iloc[0]
    assert format_cell(view["mean"], view["sd"]) in page


def test_the_study_figure_is_marked_only_for_the_studys_files_and_checkpoints(results):
    frame = ResultStore(results).table().to_pandas()
    columns = groups(frame, summary(frame), task="cell-type-spatial", dataset="merscope", metric="macro_f1",
                     label=lambda model, mode: f"{model}/{mode}",
                     study=lambda config, mode: published.cell_type_score(config, mode))
    marks = {c.label: c.study for c in columns}
    assert marks["random-mask/zero-shot"] == 0.722 and marks["-/pca"] == 0.796 and marks["-/supervised"] == 0.869
    assert marks["barlow-twins/fine-tune"] is None  # the reference marks the study's entry invalid
    assert all(len(c.seeds) == 3 for c in columns)
    # the demo's simulated merscope and its own random-mask are not the study's
    from grid.config import load_config
    from grid.plan import expand

    demo = next(c for c in expand(load_config(REPO / "experiments.yaml")).cells
                if c.dataset == "merscope" and c.mode == "zero-shot" and c.model == "random-mask")
    import json

    assert published.cell_type_score(json.dumps(demo.content), "zero-shot") is None


def test_published_numbers_are_the_references_table():
    assert published.CELL_TYPE[("xenium-human-breast", "RM", "zero-shot")] == published.ClassificationScore(0.730, 0.823, 0.826)
    assert published.CELL_TYPE[("slideseq-mouse-kidney", None, "supervised")].macro_f1 == 0.298
    assert ("merscope-human-neocortex", "BT", "fine-tune") not in published.CELL_TYPE
    assert ("hit-ca4-dgc", "GP", "zero-shot") not in published.CELL_TYPE
    assert published.DOMAINS[("stagate", "RM")] == (0.495, 0.568)
    assert len(published.CELL_TYPE) == 8 * 8 - 1 + 2 * 5


def test_a_store_without_figure_data_still_reports_its_tables(tmp_path):
    """Only a failed cell and context rows: no figure to draw, and the tables still come."""
    store = ResultStore(tmp_path / "results")
    cell = SimpleNamespace(cell_id="a" * 16, task="cell-type", dataset="xenium", model=None, mode="pca", seed=1,
                           content={})
    store.write(cell, [("n_test", 10.0, "info")], duration_s=1.0)
    store.write(SimpleNamespace(**{**vars(cell), "cell_id": "b" * 16, "seed": 2}), None, duration_s=1.0,
                error="RuntimeError: out of memory")
    # in a fresh interpreter, as a user runs it: the suite's one report outside the test process (it
    # would catch an import that only the tests' own imports provide)
    done = run_cli("report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "r"), check=True)
    assert done.stdout.strip().endswith(str(tmp_path / "r" / "index.html"))
    page = (tmp_path / "r" / "index.html").read_text()
    assert "nothing to draw" in page and "RuntimeError: out of memory" in page
    assert "cell-type/xenium/-/pca/seed=2" in page
    assert list((tmp_path / "r" / "figures").iterdir()) == []


def test_a_store_written_before_cells_kept_details_reports_its_scores_and_says_why_no_pictures(tmp_path):
    store = ResultStore(tmp_path / "results")
    for seed in (1, 2):
        cell = SimpleNamespace(cell_id=f"{seed:016x}", task="cell-type", dataset="xenium", model=None, mode="pca",
                               seed=seed, content={})
        store.write(cell, [("macro_f1", 0.5 + seed / 10, "metric")], duration_s=1.0)
    run_cli_here("report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "r"), check=True)
    page = (tmp_path / "r" / "index.html").read_text()
    assert "this store&#x27;s cells kept no details" in page or "this store's cells kept no details" in page
    assert [p.name for p in (tmp_path / "r" / "figures").glob("*.png")] == ["cell-type__cell-type__xenium__macro_f1.png"]


@pytest.mark.parametrize("case", ["missing store", "unreadable config", "out is the results", "out is a foreign folder",
                                  "unknown metric"])
def test_bad_input_exits_2_naming_the_path_and_the_fix(case, results, tmp_path):
    args = {
        "missing store": ["--results", str(tmp_path / "nope"), "--out", str(tmp_path / "r")],
        "unreadable config": [str(tmp_path / "missing.yaml"), "--results", str(results), "--out", str(tmp_path / "r")],
        "out is the results": ["--results", str(results), "--out", str(results.parent)],
        "out is a foreign folder": ["--results", str(results), "--out", str(REPO / "grid")],
        "unknown metric": ["--results", str(results), "--out", str(tmp_path / "r"), "--metric", "f1"],
    }[case]
    done = run_cli_here("report", *args)
    message = " ".join(done.stderr.split())
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    expected = {
        "missing store": (str(tmp_path / "nope"), "ssl-st run"),
        "unreadable config": ("missing.yaml", "leave CONFIG out"),
        "out is the results": ("holds the results", "--out report"),
        "out is a foreign folder": (str(REPO / "grid"), "pass a new folder"),
        "unknown metric": ("--metric f1", "macro_f1"),
    }[case]
    for part in expected:
        assert part in message, message
    assert (REPO / "grid" / "page.py").is_file()  # nothing was replaced
