"""The demo config's cell ids and artifact keys, pinned: a refactor must not renew them by accident.

A cell's id hashes its resolved content, so stored results are found again only while it stays the
same. ``tests/golden/demo_ids.json`` holds the ids of the larger demo, ``experiments/demo-full.yaml``
(``experiments.yaml`` until the quick demo took its place): every artifact (dataset,
pretrained model) as it was before the typed task kinds (ssl-st 0.1), the clustering cells as their
kinds' version 2 defines them, and the cell-type cells as version 2 of their kind does (the study's
literal split and an exact PCA baseline, issue 11). If a change is meant to alter what a kind's cells
compute, bump that kind's ``version`` and regenerate the file (README: "Results").
"""

from __future__ import annotations

import json

from grid.config import load_config
from grid.plan import expand

from .conftest import REPO

GOLDEN = REPO / "tests" / "golden" / "demo_ids.json"


def test_the_demo_keeps_its_cell_ids_and_artifact_keys():
    golden = json.loads(GOLDEN.read_text())
    plan = expand(load_config(REPO / "experiments" / "demo-full.yaml"))
    artifacts = {a.name: key for key, a in plan.artifacts.items()}
    assert artifacts == golden["artifacts"], "an artifact key changed: every model would be retrained"
    cells = {c.label(): c.cell_id for c in plan.cells}
    renewed = sorted(label for label in cells if golden["cells"].get(label) != cells[label])
    assert not renewed, f"{len(renewed)} cell ids changed, e.g. {renewed[:3]}"
    assert cells.keys() == golden["cells"].keys()
