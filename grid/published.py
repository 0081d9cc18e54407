"""The reusability study's published numbers, so that a report can mark them beside ssl-st's own.

Transcribed from ``shared/reference/reusability_study.md`` §11 ("Headline numbers (seed 42, from saved
notebook outputs)"): the cell-type table (macro-F1 / weighted-F1 / accuracy, kNN k = 5 on the test
split) and the MERSCOPE spatial-clustering table (mean ARI / mean NMI over the 5 slices, 10 clusters).
The study committed only seed 42, so each figure is one run, not a mean over seeds.

A store row is matched to the study by *what it ran on*, never by the names a config gives: the
dataset must be the study's file as ``ssl-st data pull`` names it (``{pull: merscope-human-neocortex}``)
and the model the study's checkpoint (``{pull: RandomMask}``). The demo's simulated ``merscope`` and its
own ``random-mask`` therefore never get a study marker, which would compare unlike with unlike.

Left out: the chromium breast, PBMC and Tabula Sapiens rows (no file in ssl-st's registry, so no
store row can be one of them) and the MERSCOPE BT-FT entry, which reproduces the chromium outputs
(the reference marks it invalid; the real value is unknown).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# the study's three checkpoints, as `ssl-st models pull` names them
CHECKPOINTS: dict[str, str] = {"RandomMask": "RM", "GPMask": "GP", "BarlowTwins": "BT"}
MODEL_FREE_MODES = ("supervised", "pca")


@dataclass(frozen=True)
class ClassificationScore:
    """One cell of the study's cell-type table (seed 42)."""

    macro_f1: float
    weighted_f1: float
    accuracy: float

    def metric(self, name: str) -> float | None:
        return {"macro_f1": self.macro_f1, "weighted_f1": self.weighted_f1, "accuracy": self.accuracy}.get(name)


# the study's method columns: (checkpoint short name or None, mode)
_COLUMNS: tuple[tuple[str | None, str], ...] = (
    ("RM", "zero-shot"), ("GP", "zero-shot"), ("BT", "zero-shot"),
    ("RM", "fine-tune"), ("GP", "fine-tune"), ("BT", "fine-tune"),
    (None, "supervised"), (None, "pca"),
)

_ = None  # an entry the study does not have (or that the reference marks invalid)

# §11, cell-type table; rows keyed by the registry name of the dataset's file (ssl_st.datasets.registry)
_CELL_TYPE_ROWS: dict[str, tuple[tuple[float, float, float] | None, ...]] = {
    # MERSCOPE neocortex; BT-FT left out: it is the chromium notebook's output (⚠️ in the reference)
    "merscope-human-neocortex": ((0.722, 0.734, 0.735), (0.651, 0.681, 0.686), (0.683, 0.697, 0.698),
                                 (0.791, 0.799, 0.800), (0.715, 0.736, 0.738), _,
                                 (0.869, 0.875, 0.875), (0.796, 0.808, 0.809)),
    "xenium-human-breast": ((0.730, 0.823, 0.826), (0.551, 0.706, 0.718), (0.692, 0.793, 0.799),
                            (0.776, 0.870, 0.873), (0.617, 0.754, 0.761), (0.803, 0.887, 0.889),
                            (0.861, 0.925, 0.926), (0.742, 0.870, 0.873)),
    "slideseq-human-kidney": ((0.330, 0.599, 0.628), (0.247, 0.530, 0.562), (0.271, 0.564, 0.596),
                              (0.370, 0.621, 0.647), (0.287, 0.559, 0.591), (0.352, 0.611, 0.638),
                              (0.451, 0.661, 0.675), (0.291, 0.550, 0.585)),
    "slideseq-mouse-kidney": ((0.173, 0.431, 0.461), (0.142, 0.396, 0.428), (0.136, 0.413, 0.444),
                              (0.236, 0.463, 0.487), (0.180, 0.421, 0.448), (0.188, 0.458, 0.485),
                              (0.298, 0.516, 0.537), (0.155, 0.433, 0.457)),
    "xenium-human-breast-tangram": ((0.564, 0.690, 0.694), (0.527, 0.669, 0.674), (0.499, 0.678, 0.682),
                                    (0.575, 0.699, 0.702), (0.565, 0.688, 0.691), (0.588, 0.713, 0.716),
                                    (0.619, 0.730, 0.732), (0.570, 0.708, 0.711)),
    "xenium-human-breast-spage": ((0.622, 0.782, 0.790), (0.534, 0.735, 0.748), (0.581, 0.755, 0.766),
                                  (0.672, 0.804, 0.809), (0.545, 0.735, 0.748), (0.720, 0.841, 0.845),
                                  (0.851, 0.921, 0.922), (0.738, 0.866, 0.870)),
    "xenium-human-breast-uniport": ((0.449, 0.603, 0.612), (0.451, 0.611, 0.621), (0.423, 0.595, 0.606),
                                    (0.483, 0.626, 0.636), (0.460, 0.623, 0.634), (0.619, 0.724, 0.733),
                                    (0.707, 0.818, 0.822), (0.581, 0.710, 0.720)),
    "gex-human-neocortex": ((0.709, 0.797, 0.799), (0.647, 0.749, 0.752), (0.655, 0.758, 0.761),
                            (0.747, 0.823, 0.825), (0.692, 0.782, 0.784), (0.750, 0.826, 0.827),
                            (0.796, 0.859, 0.860), (0.807, 0.869, 0.870)),
    "hit-ca4-dgc": ((0.999, 0.999, 0.999), _, (0.887, 0.999, 0.999),
                    (0.973, 1.000, 1.000), _, (0.973, 0.999, 0.999),
                    (0.939, 0.999, 0.999), _),
    "human-great-apes": ((0.980, 0.994, 0.994), _, (0.912, 0.978, 0.978),
                         (0.992, 0.997, 0.997), _, (0.983, 0.994, 0.994),
                         (0.990, 0.997, 0.997), _),
}  # fmt: skip

CELL_TYPE: dict[tuple[str, str | None, str], ClassificationScore] = {
    (dataset, model, mode): ClassificationScore(*scores)
    for dataset, row in _CELL_TYPE_ROWS.items()
    for (model, mode), scores in zip(_COLUMNS, row, strict=True)
    if scores is not None
}

# §11, spatial clustering on MERSCOPE: (method, input) -> (mean ARI, mean NMI) over the 5 slices;
# the input is None for the genes, else the checkpoint whose zero-shot embedding replaced them.
DOMAINS: dict[tuple[str, str | None], tuple[float, float]] = {
    ("stagate", None): (0.450, 0.494), ("stagate", "RM"): (0.495, 0.568), ("stagate", "BT"): (0.339, 0.457),
    ("graphst", None): (0.182, 0.272), ("graphst", "RM"): (0.378, 0.470), ("graphst", "BT"): (0.362, 0.443),
    ("cellcharter", "RM"): (0.434, 0.495), ("cellcharter", "BT"): (0.356, 0.411),
}  # fmt: skip
DOMAINS_DATASET = "merscope-human-neocortex"


def _pull(identity: Any) -> str | None:
    """The registry name in a file identity (``{"pull": NAME, ...}``), or None for a local file."""
    return identity.get("pull") if isinstance(identity, Mapping) else None


def study_inputs(config_json: str | None) -> tuple[str | None, str | None]:
    """(dataset file, checkpoint) of a cell's resolved content (the store's ``config`` column), as
    registry names: the study's short checkpoint name (RM, GP, BT) or None where it is not one."""
    try:
        content = json.loads(config_json) if config_json else {}
    except json.JSONDecodeError:
        return None, None
    dataset = _pull((content.get("dataset") or {}).get("path_file"))
    artifact = (content.get("model") or {}).get("artifact") or {}
    checkpoint = _pull((artifact.get("files") or {}).get("checkpoint"))
    return dataset, CHECKPOINTS.get(checkpoint) if checkpoint else None


def cell_type_score(config_json: str | None, mode: str, metric: str = "macro_f1") -> float | None:
    """The study's seed-42 ``metric`` for the cell whose content is ``config_json``, or None when the
    cell is not one the study ran (another file, a model other than its checkpoints, another mode)."""
    dataset, checkpoint = study_inputs(config_json)
    if dataset is None or (mode not in MODEL_FREE_MODES and checkpoint is None):
        return None
    score = CELL_TYPE.get((dataset, None if mode in MODEL_FREE_MODES else checkpoint, mode))
    return score.metric(metric) if score else None


def domain_score(config_json: str | None, method: str, metric: str = "ari") -> float | None:
    """The study's mean ARI (or NMI) of ``method`` on MERSCOPE for this cell's input, or None."""
    dataset, checkpoint = study_inputs(config_json)
    if dataset != DOMAINS_DATASET or metric not in ("ari", "nmi"):
        return None
    content_model = (json.loads(config_json or "{}").get("model") or {})
    if content_model and checkpoint is None:  # a model input that is not one of the study's checkpoints
        return None
    scores = DOMAINS.get((method, checkpoint))
    return None if scores is None else scores[0 if metric == "ari" else 1]
