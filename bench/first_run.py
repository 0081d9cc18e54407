"""The README's first command, timed as a newcomer meets it: in a clean clone, from nothing.

Usage: python bench/first_run.py [--repo .] [--workdir DIR] [--keep]

Clones ``--repo`` (its committed HEAD) into a fresh folder, takes the first command of the README's
quick start (the line after ``# 1.``, the same text a user copies) and runs it there with bash:
a virtual environment, the install, the demo grid and its report. Prints the wall time of the whole
command, of the grid (``ssl-st run``'s own "finished in" line) and of the report, and the ratio of
the whole to the five-minute budget (issue 13). Measure alone: the machine's two cores are the budget.
The clone is deleted afterwards unless ``--keep`` (its ``report/`` is the README's screenshot source).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 300.0


def first_command(readme: str) -> str:
    """The command under ``# 1.`` in the README's first bash block (its continuation lines joined)."""
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    if block is None:
        raise SystemExit("README.md: no ```bash block")
    lines = block.group(1).splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("# 1.")), None)
    if start is None:
        raise SystemExit("README.md: the quick start has no '# 1.' command")
    command = []
    for line in lines[start + 1:]:
        command.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    return " ".join(command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the clone (and its report/)")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ssl-st-first-run-"))
    clone = workdir / "ssl-st"
    if clone.exists():
        shutil.rmtree(clone)
    subprocess.run(["git", "clone", "-q", str(args.repo), str(clone)], check=True)
    command = first_command((clone / "README.md").read_text(encoding="utf-8"))
    print(f"$ {command}\n(in {clone})", flush=True)
    started = time.perf_counter()
    # a newcomer's caches are empty: the simulated datasets and the UMAPs are made afresh (pip's own
    # download cache is the machine's, as it is for anyone who has installed a package before)
    env = {**os.environ, "SSL_ST_CACHE": str(workdir / "cache")}
    done = subprocess.run(["bash", "-c", command], cwd=clone, capture_output=True, text=True, env=env)
    total = time.perf_counter() - started
    output = done.stdout + done.stderr
    grid = re.search(r"finished in ([\d.]+) s", output)
    report = re.search(r"report: \d+ figure\(s\), \d+ failed cell\(s\), ([\d.]+) s", output)
    where = re.search(r"report: (\S+index\.html)", output)
    print(output[-1500:] if done.returncode else "", end="")
    print(f"exit status: {done.returncode}")
    print(f"whole command: {total:.0f} s ({total / 60:.1f} min), {total / BUDGET_S:.2f}x the {BUDGET_S / 60:.0f}-minute budget")
    if grid:
        print(f"  grid (ssl-st run's own clock): {grid.group(0)}")
    if report:
        print(f"  report: {float(report.group(1)):.1f} s")
    if where:
        print(f"  the report: {where.group(1)}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
