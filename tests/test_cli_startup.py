"""``ssl-st --help``, ``plan``, ``status`` and ``query`` import none of the science.

Validation, planning, status and queries read a YAML file and Parquet files; torch, Ray, sklearn
and torch-geometric cost seconds to import and are imported where cells run. The commands run in a
fresh interpreter (this one has imported everything) and report what they loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import REPO

HEAVY = {"torch", "ray", "sklearn", "torch_geometric", "optuna", "anndata"}

RUN_AND_REPORT = """
import json, sys
from grid.cli import app
try:
    app(sys.argv[1:], prog_name="ssl-st")
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [
    ["--help"],
    ["plan", "experiments.yaml"],
    ["plan", "experiments.yaml", "--list"],
    ["status", "experiments.yaml"],
    ["query", "SELECT task, count(*) FROM results GROUP BY task"],
])
def test_read_only_commands_import_no_science(tmp_path, args):
    (tmp_path / "experiments.yaml").write_text((REPO / "experiments.yaml").read_text())
    done = subprocess.run([sys.executable, "-c", RUN_AND_REPORT, *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    loaded = set(json.loads(done.stderr.strip().splitlines()[-1]))
    assert not loaded & HEAVY, f"ssl-st {' '.join(args)} imported {sorted(loaded & HEAVY)}"
    assert "Traceback" not in done.stderr, done.stderr
