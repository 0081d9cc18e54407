"""A small result store of every kind the report draws, written without Ray: the real cells of
``experiments/paper.yaml`` (so that their content names the study's files and checkpoints, and the
study's published figures apply) with made-up scores and details, stand-ins for tuned cells, one
failed cell whose error holds ``<script>``, and a real TensorBoard log beside a model. Shared by
tests/test_report.py and tests/test_report_browser.py through conftest's session fixtures."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from grid.store import ResultStore

REPO = Path(__file__).resolve().parents[1]
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
