"""Progress display for ``ssl-st run``: a live bar on a terminal, one line per cell otherwise (CI, logs)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, TextColumn

from .cli.common import progress_columns
from .plan import Cell
from .store import FAILED


class LiveProgress:
    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task = None
        self._failed = 0

    def start(self, total: int, artifacts: int) -> None:
        note = f" (building {artifacts} artifacts first)" if artifacts else ""
        self._task = self._progress.add_task(f"cells{note}", total=total, failed="")

    def advance(self, cell: Cell, status: str, duration_s: float) -> None:
        self._failed += status == FAILED
        failed = f"[red]{self._failed} failed[/]" if self._failed else ""
        self._progress.update(self._task, advance=1, description="cells", failed=failed)
        if status == FAILED:
            self._progress.console.print(f"[red]failed[/] {cell.label()}  (`ssl-st status` shows why)")

    def note(self, message: str) -> None:
        self._progress.console.print(message, highlight=False, markup=False)


class LineProgress:
    def __init__(self, console: Console) -> None:
        self._console = console
        self._total = 0
        self._seen = 0

    def start(self, total: int, artifacts: int) -> None:
        self._total = total
        if artifacts:
            self._console.print(f"building {artifacts} artifacts (datasets, models) as cells need them")

    def advance(self, cell: Cell, status: str, duration_s: float) -> None:
        self._seen += 1
        why = "  (`ssl-st status` shows why)" if status == FAILED else ""
        self._console.print(f"[{self._seen}/{self._total}] {status:6s} {cell.label()}  {duration_s:.1f}s{why}",
                            highlight=False, markup=False)

    def note(self, message: str) -> None:
        self._console.print(message, highlight=False, markup=False)


@contextmanager
def make_progress(console: Console) -> Iterator[LiveProgress | LineProgress]:
    if not console.is_terminal:
        yield LineProgress(console)
        return
    with Progress(*progress_columns(TextColumn("{task.fields[failed]}")), console=console) as progress:
        yield LiveProgress(progress)
