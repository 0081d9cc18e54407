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
            store.write(c, rows + [("n_test", 100.0, "info")], duration_s=1.0)
        elif c.task == "cell-type-imputed" and c.dataset == "xenium-spage" and c.mode == "zero-shot" and c.seed != 761:
            rows = [("macro_f1", _score(c.cell_id), "metric"), ("imputation_holdout_r", 0.61 + c.seed / 1e4, "info")]
            store.write(c, rows, duration_s=1.0)
        elif c.task == "spatial-domains" and c.mode == "stagate" and c.seed != 761:
            rows = [(m, _score(c.cell_id, m), "metric") for m in ("ari", "nmi", "chaos", "pas")]
            store.write(c, rows, duration_s=1.0)
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
def rendered(results) -> tuple[Path, str, str]:
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
    assert names == {p.stem for p in (out / "figures").glob("*.svg")}
    embedded = set(re.findall(r'<img src="data:image/png;base64,([^"]+)"', page))
    for png in pngs:
        assert png.read_bytes().startswith(b"\x89PNG")
        assert base64.b64encode(png.read_bytes()).decode() in embedded, png.name
        assert ET.parse(png.with_suffix(".svg")).getroot().tag.endswith("svg")
    assert len(embedded) == len(pngs)
    kinds = {n.split("__")[0] for n in names}
    assert kinds == {"cell-type", "domains", "tuning", "imputation", "training"}, names


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
