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
    assert steps[1].startswith(".venv/bin/pip install") and "torch==2.13.0" in steps[1] and steps[1].endswith(" -e .")
    assert steps[-1] == ".venv/bin/ssl-st run --report report"
