"""Training curves from the TensorBoard logs a grid writes beside each model it trains.

``ssl-st run`` pretrains a model into ``<results>/artifacts/models/<name>-<key>/`` with its event
files under ``tensorboard/`` (``loss/train`` and ``loss/val`` per epoch, ``lr`` per step). Read here
with TensorBoard's own event reader, so the report needs no TensorFlow and no server.
"""

from __future__ import annotations

from pathlib import Path

CURVE_TAGS = ("loss/train", "loss/val")  # per epoch; ``lr`` is per step and would flatten the plot

Curves = dict[str, list[tuple[int, float]]]  # tag -> (step, value), in step order


def log_dirs(results: Path) -> dict[str, Path]:
    """Model folder name -> its TensorBoard folder, for every model under ``results`` that has one."""
    models = Path(results) / "artifacts" / "models"
    if not models.is_dir():
        return {}
    return {d.name: d / "tensorboard" for d in sorted(models.iterdir())
            if (d / "tensorboard").is_dir() and any((d / "tensorboard").rglob("events.out.tfevents.*"))}


def read_log(log_dir: Path, tags: tuple[str, ...] = CURVE_TAGS) -> Curves:
    """The scalar series ``tags`` of one TensorBoard folder (all its event files; the last value of a
    step wins, as TensorBoard shows it). A damaged file yields what could be read before it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: Curves = {}
    for run in sorted({p.parent for p in log_dir.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(run), size_guidance={"scalars": 0})  # 0: every point, not a sample
        acc.Reload()
        for tag in tags:
            if tag in acc.Tags().get("scalars", []):
                series = {e.step: float(e.value) for e in acc.Scalars(tag)}
                curves.setdefault(tag, []).extend(sorted(series.items()))
    return {tag: sorted(points) for tag, points in curves.items()}


def read_curves(results: Path) -> dict[str, Curves]:
    """Every trained model's curves under ``results`` (model folder name -> tag -> points)."""
    return {name: read_log(path) for name, path in log_dirs(results).items()}
