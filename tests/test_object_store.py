"""Results on object storage (``--results s3://bucket/prefix``), against a real S3-compatible server
(moto in server mode) on localhost: the store, the artifacts and Tune's experiment live on it, a
run leaves no results directory on local disk, and a rerun resumes from what the store holds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from grid import lock
from grid.config import load_config
from grid.lock import LockHeld, acquire_remote
from grid.plan import expand
from grid.remote import Location, LocationError, parse, remote_state
from grid.store import ObjectResultStore

from .conftest import REPO, run_cli, run_cli_here, tiny_config

BUCKET = "ssl-st-test"

CONFIG = """\
name: objstore
seeds: [1]
reference: atlas
datasets:
  - {name: atlas, flavour: atlas, n_cells: 600}
  - {name: merscope, flavour: merscope, n_cells: 300}
models:
  - name: random-init
    method: random-init
    encoder: {units: [32, 16]}
tasks:
  - name: cell-type
    datasets: [merscope]
    modes: [zero-shot, pca]
    pca_components: 8
  - name: tuned
    kind: tune-clustering
    datasets: [merscope]
    methods: [gmm]
    n_domains: 4
    tuning:
      num_samples: 1
      max_concurrent: 1
      space:
        pca_components: {low: 4, high: 12, integer: true}
"""


# ---- fast: parsing, the store and the lock on pyarrow's in-memory filesystem -----------------------


def test_results_locations_parse_to_a_directory_or_a_location_without_credentials(tmp_path):
    assert parse(str(tmp_path / "results")) == tmp_path / "results"
    assert parse(f"file://{tmp_path}/results") == tmp_path / "results"
    found = parse("s3://KEY:SECRET@bucket/some/prefix/?region=us-east-1")
    assert isinstance(found, Location)
    assert (found.base, found.uri) == ("bucket/some/prefix", "s3://bucket/some/prefix")
    assert "SECRET" not in found.url("cells") and found.path("cells", "x.parquet") == "bucket/some/prefix/cells/x.parquet"
    for bad, why in (("nope://bucket/prefix", "Unrecognized filesystem"), ("s3://", "no bucket"),
                     ("s3://bucket/prefix?colour=blue", "colour")):
        with pytest.raises(LocationError, match=why) as info:
            parse(bad)
        assert str(info.value).startswith("--results ")


def test_a_bad_results_uri_exits_2_naming_the_option_and_the_fix():
    for command in (("status",), ("query", "SELECT 1")):
        result = run_cli(*command, "--results", "nope://KEY:SECRET@bucket/prefix", timeout=60)
        assert result.returncode == 2, result.stderr
        assert "--results nope://bucket/prefix" in result.stderr and "s3://bucket/prefix" in result.stderr
        assert "SECRET" not in result.stderr


def _memory_location() -> Location:
    filesystem, _ = pafs.FileSystem.from_uri("mock:///")
    filesystem.create_dir("bucket")
    return Location(filesystem, "bucket/results", "mock://bucket/results")


def test_the_object_store_records_reads_queries_and_quarantines_cells(tmp_path):
    from grid import details
    from grid.query import fetch

    cells = expand(load_config(tiny_config(tmp_path))).cells[:3]
    location = _memory_location()
    warnings: list[str] = []
    store = ObjectResultStore(location, warn=warnings.append)
    assert store.statuses() == {} and fetch(location, "SELECT count(*) FROM results")[1] == [(0,)]
    kept = details.predictions(["c1", "c2"], ["a", "b"], ["a", "a"])
    store.write(cells[0], [("macro_f1", 0.5, "metric"), ("n_test", 10.0, "info")], duration_s=1.0,
                details={details.PREDICTIONS: kept})
    store.write(cells[1], None, duration_s=0.0, error="boom")
    assert store.statuses() == {cells[0].cell_id: "done", cells[1].cell_id: "failed"}
    assert store.details(cells[0].cell_id, details.PREDICTIONS).equals(kept)
    assert store.details(cells[1].cell_id, details.PREDICTIONS) is None
    columns, rows = fetch(location, "SELECT cell_id, metric, value FROM results WHERE kind = 'metric'")
    assert rows == [(cells[0].cell_id, "macro_f1", 0.5)]
    # an object that is not a cell file (written by something else) is moved aside, not fatal
    location.write_bytes(store.path(cells[2].cell_id), b"not parquet")
    assert store.statuses() == {cells[0].cell_id: "done", cells[1].cell_id: "failed"}
    assert [p.rsplit("/", 1)[-1] for p in store.quarantined()] == [f"{cells[2].cell_id}.parquet"]
    assert "unreadable cell object" in warnings[0]
    assert fetch(location, "SELECT count(DISTINCT cell_id) FROM results")[1] == [(2,)]
    with pytest.raises(Exception, match="not allowed"):  # still read-only
        fetch(location, "COPY (SELECT 1) TO 'x.csv'")


def test_the_lock_on_object_storage_names_a_live_holder_and_takes_over_a_silent_one(monkeypatch):
    location = _memory_location()
    path = location.path(lock.LOCK_NAME)
    other = {"host": "elsewhere.example", "pid": 4242, "started_at": time.time(), "heartbeat_at": time.time(),
             "command": "ssl-st run", "token": "theirs"}
    location.write_bytes(path, json.dumps(other).encode())
    with pytest.raises(LockHeld) as info:
        acquire_remote(location)
    message = str(info.value)
    assert "mock://bucket/results is in use" in message and "elsewhere.example" in message
    assert f"delete {location.url(lock.LOCK_NAME)}" in message and "expires" in message
    assert lock.holder(location)["pid"] == 4242
    other["heartbeat_at"] = time.time() - lock.REMOTE_STALE_S - 1  # that run died without releasing
    location.write_bytes(path, json.dumps(other).encode())
    assert lock.holder(location) is None
    monkeypatch.setattr(lock, "REMOTE_SETTLE_S", 0.0)
    with acquire_remote(location, command="second") as taken:
        assert "elsewhere.example" in taken.note and "no heartbeat" in taken.note
        assert json.loads(location.read_bytes(path))["pid"] == os.getpid()
    assert location.read_bytes(path) is None  # released: deleted


def test_artifacts_go_up_manifest_last_and_come_down_checked_against_it(tmp_path):
    from grid.plan import check_manifest
    from grid.remote import ArtifactUnavailable, fetch, upload
    from grid.stages import build_artifact

    config = tmp_path / "experiments.yaml"
    config.write_text(CONFIG)
    artifacts = {(a.kind, a.name): a for a in expand(load_config(config)).artifacts.values()}
    atlas, model = artifacts[("data", "atlas")], artifacts[("model", "random-init")]
    built = tmp_path / "built"
    atlas_path = build_artifact(atlas, built, {})
    model_path = build_artifact(model, built, {"vocabulary": atlas_path})
    location = _memory_location()
    assert remote_state(model, location) == ("missing", "not built yet")
    for artifact, path in ((atlas, atlas_path), (model, model_path)):
        upload(artifact, path, location)
        assert remote_state(artifact, location) == ("built", "")
        cached = fetch(artifact, location, tmp_path / "cache")
        assert cached == artifact.path(tmp_path / "cache")
        assert check_manifest(cached) == ("built", "")  # the recorded mtimes too: the quick check vouches for it
    ckpt = model.path(tmp_path / "cache") / "model.ckpt"
    assert ckpt.read_bytes() == (model_path / "model.ckpt").read_bytes()
    before = ckpt.stat().st_ino
    fetch(model, location, tmp_path / "cache")
    assert ckpt.stat().st_ino == before  # the cached copy of this build is reused, not downloaded again
    # corrupted on the store (same size): a download refuses it, naming the object to delete
    key = location.path(model.path(Path()).as_posix(), "model.ckpt")
    data = location.read_bytes(key)
    location.write_bytes(key, bytes(reversed(data)))
    with pytest.raises(ArtifactUnavailable, match="sha256 differs") as info:
        fetch(model, location, tmp_path / "elsewhere")
    assert "delete mock://bucket/results/artifacts/models/random-init-" in str(info.value)
    # an upload that died before its manifest is not vouched for: the next run rebuilds it
    location.delete(location.path(model.path(Path()).as_posix(), "manifest.json"))
    assert remote_state(model, location) == ("broken", "no manifest (an interrupted upload)")


# ---- slow: a real grid on a real S3-compatible server ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on a free localhost port, with one empty bucket."""
    pytest.importorskip("moto", reason="moto[server] is in the dev extra")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)  # noqa: S310 - localhost
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.2)
        request = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")  # CreateBucket
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 - localhost
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def _cli_env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    """The driver's environment: the endpoint as the standard AWS variable, this test's cache."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "SSL_ST_CACHE": str(tmp_path / "cache")}


def _ssl_st(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "grid", *args], capture_output=True, text=True, timeout=timeout,
                          env=full, cwd=env["SSL_ST_CACHE"])


@pytest.mark.ray
@pytest.mark.slow
def test_a_grid_on_object_storage_runs_reads_back_and_resumes(tmp_path, ray_address, s3_endpoint, monkeypatch):
    config = tmp_path / "experiments.yaml"
    config.write_text(CONFIG)
    env = _cli_env(tmp_path, s3_endpoint)
    Path(env["SSL_ST_CACHE"]).mkdir()
    # credentials in the URI travel to the Ray workers with the filesystem (the shared test cluster's
    # workers do not have this test's environment); the endpoint comes from AWS_ENDPOINT_URL
    uri = f"s3://testing:testing@{BUCKET}/grids/objstore"
    shown = f"s3://{BUCKET}/grids/objstore"
    plan = expand(load_config(config))
    tuned = next(c for c in plan.cells if c.task == "tuned")

    # a bucket that is not there, or a prefix with nothing stored, is a clear exit 2 before any work
    missing = _ssl_st(env, "run", str(config), "--results", "s3://testing:testing@no-such-bucket/x", timeout=60)
    assert missing.returncode == 2 and "bucket 'no-such-bucket' does not exist" in missing.stderr, missing.stderr
    empty = _ssl_st(env, "status", "--results", uri, timeout=60)
    assert empty.returncode == 2 and f"{shown}: no results stored there" in empty.stderr, empty.stderr

    first = _ssl_st(env, "run", str(config), "--results", uri, "--address", ray_address)
    assert first.returncode == 0, first.stderr + _ssl_st(env, "status", "--results", uri, timeout=60).stdout
    assert f"-> {shown}" in first.stderr and "testing:testing" not in first.stdout + first.stderr

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    location = parse(uri)
    store = ObjectResultStore(location)
    assert store.statuses() == {c.cell_id: "done" for c in plan.cells}
    for artifact in plan.artifacts.values():  # every dataset and model is on the store, sealed by its manifest
        assert remote_state(artifact, location) == ("built", ""), artifact.name
    # Tune's experiment directory of the tuning cell is on the store, not on a node
    from ray import tune

    experiment = location.path("work", tuned.cell_id)
    assert tune.Tuner.can_restore(experiment, storage_filesystem=location.filesystem)
    selector = pafs.FileSelector(experiment, recursive=True)
    trials = [i.path for i in location.filesystem.get_file_info(selector) if i.path.endswith("/result.json")]
    assert len(trials) == 1, trials  # num_samples: 1
    # no results directory on local disk: the config, and the node cache, are all there is
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "experiments.yaml"]
    assert not list(Path(env["SSL_ST_CACHE"]).glob("s3*")) and not (REPO / "s3:").exists()
    assert list((tmp_path / "cache" / "results" / "artifacts" / "data").glob("merscope-*.h5ad"))

    # the reading commands and the resume run in this process (its environment is the driver's now,
    # its working directory the cache, as for the commands above): the run above was the separate one
    monkeypatch.chdir(env["SSL_ST_CACHE"])
    status = run_cli_here("status", config, "--results", uri)
    assert status.returncode == 0, status.stderr
    assert "done: 3  failed: 0  pending: 0" in status.stdout
    sql = "SELECT task, count(DISTINCT cell_id) AS n FROM results GROUP BY task ORDER BY task"
    query = run_cli_here("query", sql, "--results", uri, "--format", "csv")
    assert query.returncode == 0, query.stderr
    assert query.stdout.splitlines() == ["task,n", "cell-type,2", "tuned,1"]
    plan_out = run_cli_here("plan", config, "--results", uri)
    assert "artifacts: 3/3 built" in plan_out.stdout, plan_out.stdout + plan_out.stderr

    # resume: a cell lost from the store is the only one computed again; a tuning cell resumes its search
    kept = {i.path: i.mtime for i in location.list("cells") if tuned.cell_id not in i.path}
    location.delete(store.path(tuned.cell_id))
    again = run_cli_here("run", config, "--results", uri, "--address", ray_address)
    assert again.returncode == 0, again.stderr + run_cli_here("status", "--results", uri).stdout
    assert "running 1 of 3 cells" in again.stderr
    assert {i.path: i.mtime for i in location.list("cells") if tuned.cell_id not in i.path} == kept
    table = store.table().to_pandas()
    redone = table[(table["cell_id"] == tuned.cell_id) & (table["metric"] == "tune_resumed")]
    assert redone["value"].tolist() == [1.0]
    assert location.read_bytes(location.path(lock.LOCK_NAME)) is None  # each run released the store
    assert not list(Path(env["SSL_ST_CACHE"]).glob("s3*")) and not (REPO / "s3:").exists()
