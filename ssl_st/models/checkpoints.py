"""Reading and writing checkpoints in the published layouts, recognised by content.

Layouts (see ``upstream_models.md`` §3):

- ``masked-autoencoder`` — a Lightning checkpoint whose ``state_dict`` holds ``encoder.*`` and
  ``decoder.0.*`` (``RandomMask.ckpt``, ``GPMask.ckpt``; no saved hyper-parameters);
- ``barlow-twins`` — a *raw* ``state_dict`` with ``backbone.*``, ``projector.*`` and ``bn.*``
  (``BarlowTwins.ckpt``), or the Lightning ``MLPBarlowTwins`` dict (``inner_model.*`` plus
  ``barlow_twins.*``);
- ``classifier`` — an ``MLPClassifier`` state (``classifier.*``, ``class_weights``, ``child_lookup``).

The file name is never consulted. Widths are read off the weight shapes. ssl-st's own metadata
(method, activation, training history) lives in a JSON sidecar, ``<checkpoint>.json``, so that the
checkpoint itself stays byte-compatible with upstream loaders.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

Layout = Literal["masked-autoencoder", "barlow-twins", "classifier"]
_LINEAR = re.compile(r"^(\d+)\.weight$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the network it is loaded into."""


@dataclass(frozen=True)
class Shape:
    """What the weights say about the network."""

    layout: Layout
    n_genes: int
    units: tuple[int, ...]  # encoder widths, the last one is the embedding
    projector: tuple[int, ...] | None = None  # Barlow Twins only
    n_classes: int | None = None  # classifier only


def read(path: str | Path, *, trusted: bool = False) -> tuple[Layout, dict[str, torch.Tensor]]:
    """The layout and the network state dict of a checkpoint file.

    Files are opened with ``weights_only=True``: no arbitrary objects are unpickled. ``trusted=True``
    lifts that for legacy files (e.g. Lightning checkpoints carrying pickled hyper-parameter classes).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with path.open("rb") as handle:
        magic = handle.read(4)
    # torch.save writes a zip archive (legacy: a raw pickle, protocol byte 0x80)
    if not (zipfile.is_zipfile(path) or magic[:1] == b"\x80"):
        raise CheckpointError(f"{path}: not a torch checkpoint (neither a torch.save archive nor a pickle); check the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: holds pickled Python objects besides tensors ({str(err).splitlines()[0]}); "
            "load it with trusted=True (CLI: --trusted) only if you trust where it came from"
        ) from None
    except (RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({err}); is the download complete?") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors or a Lightning checkpoint, found {type(payload).__name__}")
    state = payload.get("state_dict", payload)
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    keys = set(state)
    layout: Layout | None = None
    if any(k.startswith("barlow_twins.backbone.") for k in keys):  # Lightning MLPBarlowTwins
        state = {k[len("barlow_twins.") :]: v for k, v in state.items() if k.startswith("barlow_twins.")}
        layout = "barlow-twins"
    elif any(k.startswith("backbone.") for k in keys) and any(k.startswith("projector.") for k in keys):
        layout = "barlow-twins"
    elif any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.") for k in keys):
        layout = "masked-autoencoder"
    elif any(k.startswith("classifier.") for k in keys):
        layout = "classifier"
    if layout is not None:
        _check_chains(path, layout, state)
        return layout, state
    sample = ", ".join(sorted(keys)[:6])
    raise CheckpointError(
        f"{path}: unrecognised checkpoint layout (keys: {sample}, ...); expected encoder.*/decoder.* "
        "(Random/GP Mask), backbone.*/projector.*/bn.* (Barlow Twins) or classifier.* (supervised)"
    )


def _linears(state: dict[str, torch.Tensor], prefix: str) -> list[tuple[str, tuple[int, int]]]:
    """(key, (out, in)) of each Linear weight under ``prefix``, in layer order."""
    layers = []
    for key, value in state.items():
        if key.startswith(prefix) and (m := _LINEAR.match(key[len(prefix) :])) and value.ndim == 2:
            layers.append((int(m.group(1)), key, tuple(value.shape)))
    return [(key, shape) for _, key, shape in sorted(layers)]


def _widths(state: dict[str, torch.Tensor], prefix: str) -> list[tuple[int, int]]:
    """(out, in) of each Linear under ``prefix``, in layer order."""
    return [shape for _, shape in _linears(state, prefix)]


_CHAINS: dict[str, tuple[str, ...]] = {
    "masked-autoencoder": ("encoder.", "decoder.0."),
    "barlow-twins": ("backbone.", "projector."),
    "classifier": ("classifier.",),
}


def _check_chains(path: Path, layout: Layout, state: dict[str, torch.Tensor]) -> None:
    """Refuse a chain of Linears whose widths disagree, naming the tensor at fault.

    The network is built from widths read off the weights, so one mis-shaped weight would otherwise
    build a network around it and surface as several *other* keys being mis-shaped. A Linear's bias
    tells which side of a disagreement is wrong: it agrees with the weight's intended output width.
    """
    problems = []
    for prefix in _CHAINS[layout]:
        linears = _linears(state, prefix)
        for (key, (out, _)), (next_key, (_, next_in)) in zip(linears, linears[1:]):
            if out == next_in:
                continue
            bias = state.get(key[: -len("weight")] + "bias")
            bias_out = int(bias.shape[0]) if bias is not None and bias.ndim == 1 else None
            shape, next_shape = tuple(state[key].shape), tuple(state[next_key].shape)
            if bias_out == next_in:
                problems.append(f"{key} is {shape}: it outputs {out} but its bias has {bias_out} entries and "
                                f"{next_key} {next_shape} reads {next_in}")
            elif bias_out == out:
                problems.append(f"{next_key} is {next_shape}: it reads {next_in} but {key} {shape} and its "
                                f"bias output {out}")
            else:
                problems.append(f"{key} {shape} outputs {out} but {next_key} {next_shape} reads {next_in}: "
                                "one of the two is mis-shaped")
    if problems:
        raise CheckpointError(
            f"{path}: inconsistent layer widths: " + "; ".join(problems)
            + ". The file is damaged or was edited; download or export it again"
        )


def shape_of(layout: Layout, state: dict[str, torch.Tensor]) -> Shape:
    prefix = {"masked-autoencoder": "encoder.", "barlow-twins": "backbone.", "classifier": "classifier."}[layout]
    linears = _widths(state, prefix)
    if not linears:
        raise CheckpointError(f"no Linear weights under '{prefix}'")
    n_genes = linears[0][1]
    if layout == "classifier":
        return Shape(layout, n_genes, tuple(o for o, _ in linears[:-1]), n_classes=linears[-1][0])
    units = tuple(o for o, _ in linears)
    projector = tuple(o for o, _ in _widths(state, "projector.")) if layout == "barlow-twins" else None
    return Shape(layout, n_genes, units, projector)


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``load_state_dict(strict=True)`` with one error that lists every missing, unexpected and
    mis-shaped key, instead of torch's first-failure message."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k}: file {tuple(state[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or misshaped:
        lines = [f"{source}: checkpoint does not match the network"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:12]) + (" ..." if len(items) > 12 else ""))
        raise CheckpointError("\n".join(lines))
    module.load_state_dict(state, strict=True)


def write(path: str | Path, module: torch.nn.Module, layout: Layout, *, epoch: int = 0, global_step: int = 0) -> None:
    """Write ``module`` in its published layout, atomically."""
    path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    if layout == "barlow-twins":
        payload: dict = state  # the published BarlowTwins.ckpt is a bare state dict
    else:  # what upstream loaders read from a Lightning checkpoint
        payload = {"epoch": epoch, "global_step": global_step, "state_dict": state}
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
