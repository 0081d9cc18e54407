"""Tuning of spatial-domain settings: Ray Tune + Optuna, label-free vs oracle, interrupted runs resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cluster import DOMAIN_METHODS, DomainConfig
from cluster.tune import Parameter, TuneSettings, label_free_score, tune_domains
from ssl_st import datasets

from .conftest import REPO

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def section_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tune") / "section.h5ad"
    datasets.write_h5ad_atomic(datasets.generate("merscope", seed=3, n_cells=600), path)
    return path


def _section(path: Path):
    import anndata as ad

    return ad.read_h5ad(path)


BASE = DomainConfig(DOMAIN_METHODS["gmm"](), n_domains=6)
SPACE = TuneSettings(space={"pca_components": Parameter(low=2, high=30, integer=True)}, num_samples=3, max_concurrent=1)


def test_label_free_score_prefers_true_domains_over_noise():
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 100, (800, 2))
    bands = (coords[:, 1] // 25).astype(int)
    reference = np.c_[bands + rng.normal(0, 0.3, 800), rng.normal(0, 1, 800)]
    good = label_free_score(coords, bands, reference, 4)
    noise = label_free_score(coords, rng.permutation(bands), reference, 4)
    assert good["label_free_score"] > noise["label_free_score"] + 0.3
    merged = label_free_score(coords, np.minimum(bands, 1), reference, 4)  # 2 of 4 domains found
    assert merged["count_fit"] == pytest.approx(0.5)


def test_bad_search_spaces_are_refused(tmp_path):
    stagate = DOMAIN_METHODS["stagate"]
    TuneSettings(space={"epochs": Parameter(low=10, high=20), "k": Parameter(low=4, high=12)}).check(stagate)
    with pytest.raises(ValueError, match="cannot tune 'colour' of stagate; its tunable settings: .*epochs, learning_rate"):
        TuneSettings(space={"colour": Parameter(low=1, high=2)}).check(stagate)
    with pytest.raises(ValueError, match="cannot tune 'epochs' of gmm"):  # a setting of another method
        TuneSettings(space={"epochs": Parameter(low=10, high=20)}).check(DOMAIN_METHODS["gmm"])
    with pytest.raises(ValueError, match="cannot tune 'graph'"):  # not a number
        TuneSettings(space={"graph": Parameter(choices=(1.0, 2.0))}).check(stagate)
    with pytest.raises(ValueError, match="cannot tune 'epochs' of gmm"):  # refused before Ray starts
        tune_domains(None, BASE, TuneSettings(space={"epochs": Parameter(low=10, high=20)}), storage=tmp_path)
    with pytest.raises(ValueError, match="oracle"):  # the oracle needs labels, refused before Ray starts
        tune_domains(None, BASE, SPACE, objective="oracle", storage=tmp_path / "x")
    with pytest.raises(ValueError, match="empty"):
        TuneSettings(space={})
    with pytest.raises(ValueError, match="low < high"):
        Parameter(low=3, high=1)
    with pytest.raises(ValueError, match="low > 0"):
        Parameter(low=0, high=1, log=True)


_DRIVER = """
import sys, ray
sys.path.insert(0, {repo!r})
import anndata as ad
from cluster import DOMAIN_METHODS, DomainConfig
from cluster.tune import Parameter, TuneSettings, tune_domains
ray.init(address={address!r}, log_to_driver=False)
space = TuneSettings(space={{"pca_components": Parameter(low=2, high=30, integer=True)}}, num_samples=2, max_concurrent=1)
tune_domains(ad.read_h5ad({data!r}), DomainConfig(DOMAIN_METHODS["gmm"](), n_domains=6), space, storage={storage!r}, labels="layer")
"""


def _finished_trials(storage: Path) -> dict[str, float]:
    """The trials the run's saved state marks finished, with their scores: what a resume keeps.

    A trial's result.json can reach ``storage`` before the state that marks it finished does; a
    resume trusts the state and reruns such a trial, so the state is what counts here.
    """
    states = sorted(storage.glob("experiment_state-*.json"))  # one per session; a resume reads the newest
    try:
        trials = json.loads(states[-1].read_text())["trial_data"] if states else []
    except json.JSONDecodeError:  # being copied into storage: nothing known yet
        return {}
    done = {}
    for trial_json, runtime_json in trials:
        trial = json.loads(trial_json)
        if trial["status"] == "TERMINATED":
            done[trial["trial_id"]] = json.loads(runtime_json)["last_result"]["score"]
    return done


def test_an_interrupted_tuning_run_resumes_without_redoing_trials(section_path, tmp_path, ray_address):
    storage = tmp_path / "run"
    script = _DRIVER.format(repo=str(REPO), address=ray_address, data=str(section_path), storage=str(storage))
    # Tune saves the run's state on the driver and copies it into ``storage`` at most every 10 s by
    # default; a trial here is quicker, so the first copy can already show both trials finished (CI saw
    # this). A 1 s period shows the first alone for seconds; a kill is safe between two copies, as a
    # kill during one can leave the searcher's state behind the trials' (seen with a period of 0).
    env = {**os.environ, "PYTHONPATH": str(REPO), "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    driver = subprocess.Popen([sys.executable, "-c", script], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 180
    # killed once a trial has finished (of 2, one at a time): the resume must keep it and run the other
    while not _finished_trials(storage) and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # the copy that showed it ends in milliseconds; the next starts ~1 s after it
    if driver.poll() is not None:
        pytest.fail(f"the tuning driver ended before it could be interrupted: {driver.stderr.read().decode()[-2000:]}")
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = _finished_trials(storage)
    assert len(before) == 1, before

    outcome = tune_domains(
        _section(section_path), BASE,
        TuneSettings(space={"pca_components": Parameter(low=2, high=30, integer=True)}, num_samples=2, max_concurrent=1),
        storage=storage, labels="layer",
    )
    assert outcome.resumed
    after = _finished_trials(storage)
    assert len(outcome.trials) == 2 and len(after) == 2
    for trial, score in before.items():  # finished trials were kept, not rerun
        assert after[trial] == score
