"""``ssl-st report``: a self-contained HTML page (status, failures, figures, summary) from a result store.

No Ray: the store is written with :meth:`ResultStore.write` from the real cells of
``experiments/paper.yaml`` (so that their content names the study's files and checkpoints, and the
study's published figures apply), stand-ins for tuned cells, one failed cell whose error holds
``<script>``, and a real TensorBoard log beside a model.
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

PAPER = REPO / "experiments" / "paper.yaml"
SEEDS = (42, 476, 761)
FAILED_LABEL = "cell-type-spatial/xenium/-/pca/seed=42"
ERROR = "ValueError: genes <script>alert('x')</script> & co do not overlap\nTraceback (most recent call last):\n  File \"x.py\"\n"


def _score(*parts: object) -> float:
    """A made-up but stable score in [0.3, 0.9) for a cell (a hash of its coordinates)."""
    import hashlib

    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return 0.3 + 0.6 * digest[0] / 256


def write_tensorboard_log(folder: Path, epochs: int = 6) -> None:
    """A TensorBoard event file as ssl-st's trainer writes it (``loss/train``, ``loss/val`` per
    epoch), through TensorBoard's own writer (the one torch's SummaryWriter wraps)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder))
    for epoch in range(1, epochs + 1):
        values = [Summary.Value(tag="loss/train", simple_value=1.0 / epoch),
                  Summary.Value(tag="loss/val", simple_value=1.2 / epoch + 0.05)]
        writer.add_event(Event(step=epoch, wall_time=1.7e9 + epoch, summary=Summary(value=values)))
    writer.close()


TYPES = ("L2/3 IT", "L5 ET", "PVALB", "SST", "astrocyte", "microglia")
LAYERS = ("L1", "L2/3", "L4", "L5", "L6", "WM")


def cell_details(cell_id: str, mode: str, n: int = 240) -> dict:
    """Stand-in details of a cell-type cell: test predictions right ~70 % of the time, and for a
    frozen encoder an embedding in which each type is a cloud (so that a UMAP has shape)."""
    import numpy as np

    from grid import details

    rng = np.random.default_rng(int(cell_id[:8], 16) % 2**32)
    obs = np.array([f"cell{i}" for i in range(n)])
    truth = np.array(TYPES)[np.arange(n) % len(TYPES)]
    test = np.arange(0, n, 5)  # every type among them
    predicted = np.where(rng.random(len(test)) < 0.7, truth[test], rng.choice(TYPES, len(test)))
    out = {details.PREDICTIONS: details.predictions(obs[test], truth[test], predicted)}
    if mode == "zero-shot":
        centres = np.random.default_rng(0).normal(size=(len(TYPES), 16)) * 3
        values = centres[np.arange(n) % len(TYPES)] + rng.normal(size=(n, 16))
        out[details.EMBEDDING] = details.embedding_sample(obs, truth, values)
    return out


def domain_details(cell_id: str, side: int = 20) -> dict:
    """Stand-in domains of a spatial-clustering cell: six layers on a grid, found as numbered
    domains (in another order) with 10 % of the cells wrong."""
    import numpy as np

    from grid import details

    rng = np.random.default_rng(int(cell_id[:8], 16) % 2**32)
    xy = np.array([(x, y) for y in range(side) for x in range(side)], dtype=float) * 10
    layer = np.minimum(xy[:, 1] // (10 * side / len(LAYERS)), len(LAYERS) - 1).astype(int)
    found = (layer + 3) % len(LAYERS)
    found = np.where(rng.random(len(found)) < 0.1, rng.integers(0, len(LAYERS), len(found)), found)
    return {details.DOMAINS: details.domains([f"spot{i}" for i in range(len(xy))], xy, found,
                                             np.array(LAYERS)[layer])}


def build_store(root: Path) -> Path:
    """A small store of every kind the report draws, plus one failed cell; returns ``root``."""
    from grid.config import load_config
    from grid.plan import expand

    store = ResultStore(root)
    cells = expand(load_config(PAPER)).cells
    for c in cells:
        if c.seed not in SEEDS:
            continue
        if c.task == "cell-type-spatial" and c.dataset == "merscope":
            rows = [(m, _score(c.cell_id, m), "metric") for m in ("macro_f1", "weighted_f1", "accuracy")]
            store.write(c, rows + [("n_test", 100.0, "info")], duration_s=1.0, details=cell_details(c.cell_id, c.mode))
        elif c.task == "cell-type-imputed" and c.dataset == "xenium-spage" and c.mode == "zero-shot" and c.seed != 761:
            rows = [("macro_f1", _score(c.cell_id), "metric"), ("imputation_holdout_r", 0.61 + c.seed / 1e4, "info")]
            store.write(c, rows, duration_s=1.0)
        elif c.task == "spatial-domains" and c.mode == "stagate" and c.seed != 761:
            rows = [(m, _score(c.cell_id, m), "metric") for m in ("ari", "nmi", "chaos", "pas")]
            store.write(c, rows, duration_s=1.0, details=domain_details(c.cell_id))
        elif c.label() == FAILED_LABEL:
            store.write(c, None, duration_s=1.0, error=ERROR)
    # tuned domain maps (the paper grid has none): label-free and oracle searches
    for i, (objective, seed) in enumerate([(o, s) for o in ("label-free", "oracle") for s in (42, 476)]):
        cell = SimpleNamespace(cell_id=f"tune{i:012x}", task="tune-domains", dataset="cortex", model=None,
                               mode=f"stagate/{objective}", seed=seed, content={"seed": seed})
        rows = [("ari", 0.4 + 0.1 * i, "metric"), ("tune_score", 0.2 + 0.05 * i, "info"),
                ("oracle", float(objective == "oracle"), "info")]
        store.write(cell, rows, duration_s=1.0)
    log = root / "artifacts" / "models" / "random-init-0123abcd" / "tensorboard"
    log.mkdir(parents=True)
    write_tensorboard_log(log)
    return root


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("report") / "results")


@pytest.fixture(scope="module")
def umap_cache(tmp_path_factory) -> Path:
    """``$SSL_ST_CACHE`` of this module's reports (UMAPs are cached there), not the user's."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_ST_CACHE", str(cache))
        yield cache / "umap"


@pytest.fixture(scope="module")
def rendered(results, umap_cache) -> tuple[Path, str, str]:
    """The report of ``results`` against the paper's config: (folder, HTML, CLI stdout)."""
    out = results.parent / "report"
    done = run_cli("report", str(PAPER), "--results", str(results), "--out", str(out), check=True)
    return out, (out / "index.html").read_text(encoding="utf-8"), done.stdout


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
    again = results.parent / "again"
    run_cli_here("report", "--results", results, "--out", again, check=True)
    assert (again / "figures" / "umap__merscope.png").read_bytes() == before
    assert len(list(umap_cache.glob("*.npy"))) == 3
    # the matrices are the seeds' predictions pooled, each row a distribution
    store = ResultStore(results)
    frame = store.table().to_pandas()
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
    run_cli_here("report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "r"), check=True)
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
