"""The README's first command is what ``bench/first_run.py`` times: a fresh environment, the install,
the demo grid and its report, in one line a newcomer copies."""

from __future__ import annotations

import importlib.util

from .conftest import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("first_run", REPO / "bench" / "first_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_first_command_installs_runs_the_demo_and_writes_the_report():
    command = _bench().first_command((REPO / "README.md").read_text(encoding="utf-8"))
    steps = [step.strip() for step in command.split("&&")]
    assert steps[0] == "python3 -m venv .venv"
    # a current pip first: the one venv bundles takes twice as long to resolve the same ~100 packages
    assert steps[1] == ".venv/bin/pip install -q -U pip"
    install = steps[2]
    assert install.startswith(".venv/bin/pip install") and "torch==2.13.0" in install and install.endswith(" -e .")
    # the byte code of what a run imports is written by the run (grid.ray_exec.cache_bytecode), not
    # compiled for all 250 MB of sources at install
    assert "--no-compile" in install
    assert steps[-1] == ".venv/bin/ssl-st run --report report"
