"""Artifacts under faults: a model folder is replaced whole, never half-written; a truncated or
corrupted artifact is shown as broken by `plan` and rebuilt by `run`; one from an older ssl-st
(no manifest) is adopted if it opens completely and rebuilt otherwise."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from grid.config import load_config
from grid.plan import expand
from grid.stages import build_artifact
from grid.store import ResultStore
from ssl_st.genes import Vocabulary
from ssl_st.models import SSLModel, checkpoints
from ssl_st.models.architecture import Architecture

from .conftest import run_cli, run_cli_here, tiny_config


def _vocabulary(n: int, tag: str) -> Vocabulary:
    return Vocabulary.from_var(pd.DataFrame({"gene_ids": [f"ENSG{i:011d}" for i in range(n)]},
                                            index=[f"{tag}{i}" for i in range(n)]))


def test_a_model_folder_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    SSLModel.random_init(_vocabulary(30, "A"), Architecture(units=(8, 4)), seed=0).save(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def dies_mid_write(*args, **kwargs):
        raise OSError("disk full")

    newer = SSLModel.random_init(_vocabulary(40, "B"), Architecture(units=(8, 4)), seed=1)
    monkeypatch.setattr(checkpoints, "write", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        newer.save(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the old model, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left behind
    monkeypatch.undo()
    newer.save(folder)
    assert len(SSLModel.load(folder).vocabulary) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _build_all(plan, root):
    paths = {}
    for artifact in plan.needed_artifacts(plan.cells):
        inputs = {role: paths[key] for role, key in artifact.inputs.items()}
        paths[artifact.key] = build_artifact(artifact, root, inputs, device="cpu")
    return paths


def _truncate(path):
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def test_truncated_artifacts_are_shown_broken_and_rebuilt(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    plan = expand(load_config(config))
    results = tmp_path / "results"
    _build_all(plan, results)
    artifacts = {a.name: a for a in plan.artifacts.values()}
    model, data = artifacts["random-mask"], artifacts["merscope"]
    _truncate(model.path(results) / "model.ckpt")
    _truncate(data.path(results))
    shown = run_cli("plan", str(config), "--results", str(results), check=True).stdout
    assert "artifacts: 3/5 built, 2 broken:" in shown
    assert f"models/{model.path(results).name} (model.ckpt: " in shown and f"data/{data.path(results).name}" in shown
    assert {a.name: a.state(results) for a in artifacts.values() if a.state(results) != "built"} == {
        "random-mask": "broken", "merscope": "broken"}
    assert (model.path(results) / "manifest.json").is_file() and (model.path(results) / "tensorboard").is_dir()

    # same size, other bytes: only the checksum sees it, and `run` (is_built) checks checksums
    atlas = artifacts["atlas"].path(results)
    raw = bytearray(atlas.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    atlas.write_bytes(bytes(raw))
    assert artifacts["atlas"].state(results) == "unverified" and not artifacts["atlas"].is_built(results)

    _build_all(plan, results)
    assert all(a.is_built(results) for a in artifacts.values())
    assert len(SSLModel.load(model.path(results)).vocabulary) > 1000
    assert "5/5 built" in run_cli_here("plan", config, "--results", results, check=True).stdout


def test_artifacts_without_a_manifest_are_adopted_if_whole_and_rebuilt_if_not(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    plan = expand(load_config(config))
    results = tmp_path / "results"
    _build_all(plan, results)
    artifacts = {a.name: a for a in plan.artifacts.values()}
    for artifact in artifacts.values():  # as an older ssl-st left them
        artifact.manifest_path(results).unlink()
    assert {a.state(results) for a in artifacts.values()} == {"unverified"}
    whole, cut = artifacts["random-init"], artifacts["random-mask"]
    kept = (whole.path(results) / "model.ckpt").stat().st_mtime_ns
    _truncate(cut.path(results) / "model.ckpt")

    _build_all(plan, results)
    assert all(a.is_built(results) for a in artifacts.values())
    assert (whole.path(results) / "model.ckpt").stat().st_mtime_ns == kept  # adopted, not rebuilt
    SSLModel.load(cut.path(results))  # rebuilt


@pytest.mark.ray
def test_run_rebuilds_a_truncated_model_instead_of_failing_its_cells(tmp_path, ray_address, tiny_run):
    config = tiny_run.config
    results = tiny_run.copy_results(tmp_path / "results")  # a finished run of the tiny grid (epochs 2)
    plan = expand(load_config(config))
    model = next(a for a in plan.artifacts.values() if a.name == "random-mask")
    _truncate(model.path(results) / "model.ckpt")
    store = ResultStore(results)
    users = [c for c in plan.cells if c.trained_model == model.key]
    for cell in users:  # these cells have to run again, on the damaged model
        os.unlink(store.path(cell.cell_id))
    # `ssl-st run` in this process: what it finds on disk is the point, not the process
    again = run_cli_here("run", config, "--results", results, "--address", ray_address)
    assert again.returncode == 0, again.stderr
    assert f"running {len(users)} of" in again.stderr
    assert set(store.statuses().values()) == {"done"}
    assert model.is_built(results)
