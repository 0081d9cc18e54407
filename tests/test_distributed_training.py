"""Data-parallel pretraining on Ray Train (the shared 2-CPU test Ray): one worker trains exactly as
one process does, and a worker that dies mid-run is replaced and resumes from the last checkpoint to
the very weights of an uninterrupted run. Two workers, streamed from shards through the CLI, over two
nodes one of which is lost: ``tests/test_shard_cli.py``."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ssl_st import datasets
from ssl_st.genes import Vocabulary
from ssl_st.models import Architecture, RandomMaskConfig
from ssl_st.models.distributed import Workers, train_data_parallel
from ssl_st.pp import model_input

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ARCH = Architecture(units=(32, 16))
PLAN = RandomMaskConfig(epochs=3, batch_size=64)


@pytest.fixture(scope="module")
def atlas():
    adata = datasets.generate("atlas", n_cells=400)
    vocabulary = Vocabulary.from_var(adata.var)
    inputs, _ = model_input(adata, vocabulary)
    return inputs, vocabulary


def _same_weights(a, b) -> None:
    sa, sb = a.network.state_dict(), b.network.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-6, msg=key)


def registered_epoch(storage: str | Path) -> int | None:
    """The epoch (from 0) of the last checkpoint Ray Train's controller has registered for the run
    under ``storage`` (its snapshot, written once it has taken a worker's report), else None. A run
    that loses a worker before then restarts from scratch; a report still in a dead worker's queue
    is lost with it."""
    for snapshot in Path(storage).rglob("checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
        except (OSError, ValueError):  # being written
            continue
        if latest:
            return int(latest["metrics"]["epoch"])
    return None


@dataclass(frozen=True)
class CrashOnce(RandomMaskConfig):
    """Random Mask whose worker of rank ``rank`` dies (os._exit, as a kill would) in its third
    epoch, once, as soon as the controller has registered the epoch-2 checkpoint under ``storage``
    (Ray Train's run directory): the marker file says it already did."""

    marker: str = ""
    storage: str = ""
    rank: int = 0

    def loss(self, vocabulary, programs):
        loss_fn, facts = super().loss(vocabulary, programs)
        calls = {"n": 0}

        def crashing(network, x, gen):
            calls["n"] += 1
            import ray.train

            if ray.train.get_context().get_world_rank() == self.rank and calls["n"] > 14 and not os.path.exists(self.marker):
                # the controller takes reports by polling the workers: wait for it to take epoch 2's
                # (epoch 1 from 0), no longer than a minute (a resume from an earlier one still shows)
                deadline = time.monotonic() + 60
                while (registered_epoch(self.storage) or 0) < 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
                Path(self.marker).write_text("crashed")
                os._exit(1)
            return loss_fn(network, x, gen)

        return crashing, facts


def test_one_worker_dies_resumes_and_ends_with_the_weights_of_one_process(atlas, tmp_path, ray_address):
    """One worker trains exactly as one process; killed in epoch 3, it is replaced and resumes from
    the epoch-2 checkpoint (weights, optimiser, random states), so even then the weights match."""
    inputs, vocabulary = atlas
    alone = PLAN.train(inputs, vocabulary, ARCH, seed=3, device="cpu")
    marker = tmp_path / "crashed"
    plan = CrashOnce(epochs=PLAN.epochs, batch_size=PLAN.batch_size, marker=str(marker), storage=str(tmp_path / "run"))
    ray_train = train_data_parallel(plan, inputs, vocabulary, ARCH, workers=Workers(count=1, max_failures=1), seed=3,
                                    storage=tmp_path / "run")
    assert marker.exists(), "the worker did not die"
    assert ray_train.training["resumed"], "the finishing attempt did not start from the checkpoint"
    _same_weights(alone, ray_train)
    assert ray_train.training["val_loss"] == pytest.approx(alone.training["val_loss"], rel=1e-5)
    assert ray_train.training["best_epoch"] == alone.training["best_epoch"]
    assert len(list((tmp_path / "run").rglob("loop.pt"))) >= 1  # a checkpoint per epoch, the last 2 kept
