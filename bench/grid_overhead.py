"""What scheduling a grid through Ray costs, against running the same stages serially in-process.

Usage: python bench/grid_overhead.py [--cells-per-dataset-seed N] [--num-cpus 2]

Both runs build the same artifacts and evaluate the same cells (fresh results directories), in the
same process, so the ratio is robust to how busy the machine is. Ray's start-up is reported apart.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from grid.config import load_config
from grid.plan import expand
from grid.ray_exec import connect, execute
from grid.stages import build_artifact, run_cell
from grid.store import ResultStore
from grid.tasks import CellInputs
from ssl_st.threads import limit_threads

CONFIG = """\
name: bench
seeds: [1, 2, 3, 4]
reference: atlas
datasets:
  - {{name: atlas, flavour: atlas, n_cells: 2000}}
  - {{name: merscope, flavour: merscope, n_cells: {n}}}
  - {{name: xenium, flavour: xenium, n_cells: {n}}}
  - {{name: slideseq, flavour: slideseq, n_cells: {n}}}
models:
  - {{name: random-mask, method: random-mask, encoder: {{units: [128, 64, 32]}}, pretrain: {{epochs: 3}}}}
  - {{name: random-init, method: random-init, encoder: {{units: [128, 64, 32]}}}}
tasks:
  - {{name: cell-type, modes: [zero-shot, pca], pca_components: 32}}
"""


class Silent:
    def start(self, total: int, artifacts: int) -> None: ...
    def advance(self, cell, status: str, duration_s: float) -> None: ...
    def note(self, message: str) -> None: ...


def serial(plan, root: Path) -> float:
    limit_threads(1)  # what a 1-CPU Ray task gets
    started = time.perf_counter()
    paths: dict[str, Path] = {}
    for artifact in plan.needed_artifacts(plan.cells):
        paths[artifact.key] = build_artifact(artifact, root, {r: paths[k] for r, k in artifact.inputs.items()}, device="cpu")
    store = ResultStore(root)
    for cell in plan.cells:
        t = time.perf_counter()
        inputs = CellInputs.of(cell, paths, workdir=root / "work" / cell.cell_id, device="cpu")
        output = run_cell(cell, inputs)
        store.write(cell, output.rows, duration_s=time.perf_counter() - t, details=output.details)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1000, help="cells per spatial section")
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(CONFIG.format(n=args.cells))
        plan = expand(load_config(path))
        t_serial = serial(plan, Path(tmp) / "serial")

        t0 = time.perf_counter()
        connect(num_cpus=args.num_cpus)
        t_start = time.perf_counter() - t0
        root = Path(tmp) / "ray"
        summary = execute(plan, plan.cells, root, ResultStore(root), Silent())
        assert summary.failed == 0, "a cell failed; run `ssl-st status` on the bench config"
    n = len(plan.cells)
    print(f"grid: {n} cells + {len(plan.artifacts)} artifacts, sections of {args.cells} cells")
    print(f"serial in-process   : {t_serial:7.2f} s")
    print(f"ray ({args.num_cpus} CPUs)        : {summary.wall_s:7.2f} s  (+ {t_start:.2f} s to start Ray)")
    print(f"ratio ray / serial  : {summary.wall_s / t_serial:7.2f}")
    print(f"ray cost per cell   : {(summary.wall_s * args.num_cpus - t_serial) / n * 1000:7.1f} ms of CPU time beyond the work itself (approx.)")


if __name__ == "__main__":
    main()
