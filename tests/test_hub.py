"""``ssl_st.hub`` against a local server that lays files out and answers exactly like the hub.

The four published files are written once per module at full size (19,331 genes; the RandomMask and
GPMask checkpoints carry AdamW moments, ~250 MB each) and pulled once; every other test reuses them
or pulls a small file into a fresh cache.
"""

from __future__ import annotations

import dataclasses
import filecmp
import json
import shutil
import warnings
from collections import OrderedDict
from pathlib import Path

import pandas as pd
import pytest
import torch

from ssl_st import hub
from ssl_st.nn import BarlowTwins, MaskedAutoencoder

from . import published_fixtures as pf

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused
LAYOUT = {
    "RandomMask": "hub/TillR--sc_pretrained/Pretrained Models/RandomMask.ckpt",
    "GPMask": "hub/TillR--sc_pretrained/Pretrained Models/GPMask.ckpt",
    "BarlowTwins": "hub/TillR--sc_pretrained/Pretrained Models/BarlowTwins.ckpt",
    "var": "hub/TillR--sc_pretrained/var.parquet",
}


@pytest.fixture(scope="module", autouse=True)
def no_proxy_for_loopback():
    """urllib honours *_proxy variables; the local hub must be reached directly."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setenv("no_proxy", "127.0.0.1,localhost")
        yield


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory: pytest.TempPathFactory):
    """The repository as the hub stores it: ``<root>/TillR/sc_pretrained/<path_in_repo>``."""
    root = tmp_path_factory.mktemp("hub-root")
    repo = root / hub.REPO
    pf.write_masked_checkpoint(repo / "Pretrained Models" / "RandomMask.ckpt", seed=0)
    pf.write_masked_checkpoint(repo / "Pretrained Models" / "GPMask.ckpt", seed=1)
    pf.write_barlow_twins_checkpoint(repo / "Pretrained Models" / "BarlowTwins.ckpt", seed=2)
    pf.write_var_parquet(repo / "var.parquet")
    yield root
    shutil.rmtree(root, ignore_errors=True)  # ~600 MB: do not leave it to pytest's tmp retention


def served_file(root: Path, name: str) -> Path:
    return root / hub.REPO / hub.PUBLISHED[name].path_in_repo


@pytest.fixture(scope="module")
def served(hub_root: Path):
    with pf.serve_directory(hub_root) as url:
        yield url


@pytest.fixture
def server(served: pf.HubURL, monkeypatch: pytest.MonkeyPatch) -> pf.HubURL:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    served.reset()
    return served


@pytest.fixture(scope="module")
def pulled(served: pf.HubURL, tmp_path_factory: pytest.TempPathFactory):
    """All four files pulled once into one cache: (cache, paths)."""
    cache = tmp_path_factory.mktemp("cache")
    served.reset()
    paths = hub.pull(cache_dir=cache, endpoint=served)
    yield cache, paths
    shutil.rmtree(cache, ignore_errors=True)


def leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.endswith(".part")] if directory.is_dir() else []


# ---------------------------------------------------------------- the written files


def test_masked_checkpoint_has_the_published_layout(hub_root: Path) -> None:
    ckpt = torch.load(served_file(hub_root, "RandomMask"), map_location="cpu", weights_only=True)
    assert list(ckpt) == list(pf.LIGHTNING_KEYS) and "hyper_parameters" not in ckpt
    state = ckpt["state_dict"]
    assert {k: tuple(v.shape) for k, v in state.items()} == pf.shapes(pf.MASKED_AUTOENCODER_TABLE)
    assert len(state) == 20 and all(v.dtype == torch.float32 for v in state.values())
    assert state["encoder.0.weight"].shape == (512, 19331) and state["decoder.0.12.weight"].shape == (19331, 512)
    assert sum(v.numel() for v in state.values()) == pf.MASKED_PARAMETERS == 20_767_683
    assert ckpt["pytorch-lightning_version"] == "2.0.0"
    (callback,) = ckpt["callbacks"].values()
    assert list(ckpt["callbacks"]) == [pf.CHECKPOINT_CALLBACK] and callback["best_model_score"].ndim == 0
    adam = ckpt["optimizer_states"][0]
    assert [tuple(adam["state"][i]["exp_avg_sq"].shape) for i in range(20)] == [tuple(v.shape) for v in state.values()]
    assert adam["param_groups"][0]["betas"] == (0.9, 0.999) and adam["param_groups"][0]["amsgrad"] is False
    assert ckpt["lr_schedulers"][0]["step_size"] == 2
    with torch.device("meta"):  # shapes only: strict loading into our network proves key compatibility
        MaskedAutoencoder(19331).load_state_dict(state, strict=True, assign=True)
    encoder = pf.expected_encoder(served_file(hub_root, "RandomMask"))
    assert list(encoder) == list(pf.ENCODER_KEYS)
    assert all(torch.equal(encoder[k], state[f"encoder.{k}"]) for k in pf.ENCODER_KEYS)


def test_masked_checkpoint_without_optimizer(tmp_path: Path) -> None:
    path = pf.write_masked_checkpoint(tmp_path / "small.ckpt", n_genes=50, with_optimizer=False)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["optimizer_states"][0]["state"] == {}
    assert ckpt["state_dict"]["decoder.0.12.bias"].shape == (50,)


def test_barlow_twins_checkpoint_is_a_raw_state_dict(hub_root: Path) -> None:
    state = torch.load(served_file(hub_root, "BarlowTwins"), map_location="cpu", weights_only=True)
    assert type(state) is OrderedDict and len(state) == 32
    assert {k: tuple(v.shape) for k, v in state.items()} == pf.shapes(pf.BARLOW_TWINS_TABLE)
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert counters == [f"projector.{i}.num_batches_tracked" for i in (1, 4, 7)] + ["bn.num_batches_tracked"]
    assert all(state[k].dtype == torch.int64 and state[k].ndim == 0 for k in counters)
    assert "projector.0.bias" not in state and "bn.weight" not in state  # bias-free Linears, affine-free bn
    params = [k for k in state if not k.rsplit(".", 1)[1].startswith(("running_", "num_batches"))]
    assert sum(state[k].numel() for k in params) == pf.BARLOW_TWINS_PARAMETERS
    with torch.device("meta"):
        BarlowTwins(19331).load_state_dict(state, strict=True, assign=True)
    encoder = pf.expected_encoder(served_file(hub_root, "BarlowTwins"))
    assert all(torch.equal(encoder[k], state[f"backbone.{k}"]) for k in pf.ENCODER_KEYS)


def test_var_parquet_has_the_published_columns(hub_root: Path) -> None:
    var = pd.read_parquet(served_file(hub_root, "var"))
    assert list(var.columns) == ["feature_id", "feature_name"] and len(var) == 19331
    assert var.feature_id.is_unique and var.feature_name.is_unique
    assert var.feature_id.str.fullmatch(r"ENSG\d{11}").all()
    assert var.feature_name.iloc[0] == "OR4F5" and var.feature_name.iloc[-1] == "GET1-SH3BGR"


# ---------------------------------------------------------------- pulling


def test_pull_all_keeps_the_repo_layout_and_pins_hashes(pulled, hub_root: Path, served: pf.HubURL) -> None:
    cache, paths = pulled
    assert {name: p.relative_to(cache).as_posix() for name, p in paths.items()} == LAYOUT
    for name, path in paths.items():
        assert filecmp.cmp(path, served_file(hub_root, name), shallow=False), name
        assert path == hub.local_path(name, cache)
    lock = json.loads((cache / hub.LOCK_NAME).read_text())["files"]
    for name, path in paths.items():
        entry = lock[name]
        assert entry["sha256"] == served.sha256[f"{hub.REPO}/{hub.PUBLISHED[name].path_in_repo}"]
        assert entry["size"] == path.stat().st_size and entry["repo"] == hub.REPO
    assert not leftovers(paths["RandomMask"].parent) and not leftovers(paths["var"].parent)


def test_second_pull_downloads_nothing(pulled, server: pf.HubURL) -> None:
    cache, paths = pulled
    before = {name: p.stat().st_mtime_ns for name, p in paths.items()}
    assert hub.pull(cache_dir=cache, endpoint=server) == paths
    assert server.requests == []
    assert {name: p.stat().st_mtime_ns for name, p in paths.items()} == before


def test_pinned_files_need_no_network(pulled, tmp_path: Path) -> None:
    """Another machine given the files and the lock verifies them offline."""
    cache, paths = pulled
    shutil.copy(cache / hub.LOCK_NAME, tmp_path / hub.LOCK_NAME)
    target = hub.local_path("var", tmp_path)
    target.parent.mkdir(parents=True)
    shutil.copy(paths["var"], target)
    assert hub.pull(["var"], cache_dir=tmp_path, endpoint=UNREACHABLE) == {"var": target}


def test_force_downloads_again_and_reports_progress(server: pf.HubURL, tmp_path: Path) -> None:
    hub.pull(["var"], cache_dir=tmp_path, endpoint=server)
    calls: list[tuple[str, int, int | None]] = []
    hub.pull(["var"], cache_dir=tmp_path, endpoint=server, force=True, progress=lambda *a: calls.append(a))
    assert len(server.requests) == 2
    size = hub.local_path("var", tmp_path).stat().st_size
    assert calls[-1] == ("var", size, size) and all(c[2] == size for c in calls)


def test_corrupted_response_is_rejected_and_deleted(server: pf.HubURL, tmp_path: Path) -> None:
    server.corrupt = True
    with pytest.raises(hub.HubError) as err:
        hub.pull(["BarlowTwins"], cache_dir=tmp_path, endpoint=server)
    expected = server.sha256[f"{hub.REPO}/Pretrained Models/BarlowTwins.ckpt"]
    message = str(err.value)
    assert "BarlowTwins" in message and expected in message and "got " in message
    final = hub.local_path("BarlowTwins", tmp_path)
    assert not final.exists() and not leftovers(final.parent)
    assert hub.read_lock(tmp_path) == {}


def test_interrupted_download_leaves_no_file(server: pf.HubURL, tmp_path: Path) -> None:
    def interrupt(name: str, done: int, total: int | None) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hub.pull(["BarlowTwins"], cache_dir=tmp_path, endpoint=server, progress=interrupt)
    final = hub.local_path("BarlowTwins", tmp_path)
    assert not final.exists() and not leftovers(final.parent)


def test_unannounced_hash_is_pinned_on_first_use(server: pf.HubURL, tmp_path: Path) -> None:
    server.announce = ""  # no hash headers at all
    with pytest.warns(UserWarning, match="no sha256 known"):
        hub.pull(["var"], cache_dir=tmp_path, endpoint=server)
    assert hub.read_lock(tmp_path)["var"]["sha256"] == server.sha256[f"{hub.REPO}/var.parquet"]


def test_truncated_response_is_rejected(server: pf.HubURL, tmp_path: Path) -> None:
    server.truncate = True
    with pytest.raises(hub.HubError, match="var"):
        hub.pull(["var"], cache_dir=tmp_path, endpoint=server)
    assert not hub.local_path("var", tmp_path).exists() and not leftovers(hub.local_path("var", tmp_path).parent)


def test_wrong_pin_in_lock_raises(server: pf.HubURL, tmp_path: Path) -> None:
    wrong = "0" * 64
    entry = {"repo": hub.REPO, "revision": "main", "path_in_repo": "var.parquet", "sha256": wrong, "size": 1}
    (tmp_path / hub.LOCK_NAME).write_text(json.dumps({"version": 1, "files": {"var": entry}}))
    with pytest.raises(hub.HubError) as err:
        hub.pull(["var"], cache_dir=tmp_path, endpoint=server)
    assert wrong in str(err.value) and server.sha256[f"{hub.REPO}/var.parquet"] in str(err.value)
    assert hub.LOCK_NAME in str(err.value) and not hub.local_path("var", tmp_path).exists()


def test_lock_and_registry_win_over_the_hub_header(pulled, server: pf.HubURL, tmp_path: Path) -> None:
    server.announce = "f" * 64  # the server now lies about the hash
    with pytest.raises(hub.HubError, match="f{64}"):
        hub.pull(["var"], cache_dir=tmp_path / "trusting", endpoint=server)
    shutil.copy(pulled[0] / hub.LOCK_NAME, tmp_path / hub.LOCK_NAME)
    assert hub.pull(["var"], cache_dir=tmp_path, endpoint=server)["var"].is_file()
    good = server.sha256[f"{hub.REPO}/var.parquet"]
    registered = dataclasses.replace(hub.PUBLISHED["var"], sha256=good)
    assert hub.pull([registered], cache_dir=tmp_path / "registry", endpoint=server)["var"].is_file()
    with pytest.raises(hub.HubError, match="registry"):
        hub.pull([dataclasses.replace(registered, sha256="1" * 64)], cache_dir=tmp_path, endpoint=server, force=True)


def test_existing_unpinned_file_is_adopted_without_rewriting(hub_root: Path, server: pf.HubURL, tmp_path: Path) -> None:
    target = hub.local_path("var", tmp_path)
    target.parent.mkdir(parents=True)
    shutil.copy(served_file(hub_root, "var"), target)
    inode = target.stat().st_ino
    hub.pull(["var"], cache_dir=tmp_path, endpoint=server)
    assert target.stat().st_ino == inode and len(server.requests) == 1
    assert hub.read_lock(tmp_path)["var"]["sha256"] == server.sha256[f"{hub.REPO}/var.parquet"]


def test_unreachable_hub_explains_how_to_work_offline(tmp_path: Path) -> None:
    with pytest.raises(hub.HubError) as err:
        hub.pull(["RandomMask"], cache_dir=tmp_path, endpoint=UNREACHABLE)
    message = str(err.value)
    assert f"{UNREACHABLE}/TillR/sc_pretrained/resolve/main/Pretrained%20Models/RandomMask.ckpt" in message
    assert "unreachable" in message and "ssl-st embed" in message
    assert str(hub.local_path("RandomMask", tmp_path)) in message


def test_missing_file_gives_404(server: pf.HubURL, tmp_path: Path) -> None:
    missing = hub.PublishedFile("Missing", hub.REPO, "Pretrained Models/Missing.ckpt")
    with pytest.raises(hub.HubError, match=r"HTTP 404 .*resolve/main/Pretrained%20Models/Missing\.ckpt"):
        hub.pull([missing], cache_dir=tmp_path, endpoint=server)
    wrong_revision = dataclasses.replace(hub.PUBLISHED["var"], revision="v2")
    with pytest.raises(hub.HubError, match="HTTP 404"):
        hub.pull([wrong_revision], cache_dir=tmp_path, endpoint=server)
    with pytest.raises(ValueError, match="RandomMask"):
        hub.pull(["NoSuchModel"], cache_dir=tmp_path, endpoint=server)


def test_token_is_sent_as_bearer(server: pf.HubURL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.token = "secret"
    with pytest.raises(hub.HubError, match="HTTP 401.*HF_TOKEN"):
        hub.pull(["var"], cache_dir=tmp_path, endpoint=server)
    monkeypatch.setenv("HF_TOKEN", "secret")
    assert hub.pull(["var"], cache_dir=tmp_path, endpoint=server)["var"].is_file()


def test_hf_endpoint_env_is_honoured(server: pf.HubURL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", server)
    assert hub.resolve_url("var") == f"{server}/TillR/sc_pretrained/resolve/main/var.parquet"
    path = hub.pull(["var"], cache_dir=tmp_path)["var"]
    assert path.is_file() and [r[1] for r in server.requests] == ["/TillR/sc_pretrained/resolve/main/var.parquet"]
    assert hub.resolve_url("var", endpoint="http://mirror.example/") == "http://mirror.example/TillR/sc_pretrained/resolve/main/var.parquet"


def test_cache_dir_defaults_to_ssl_st_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SSL_ST_CACHE", str(tmp_path))
    assert hub.local_path("GPMask") == tmp_path / LAYOUT["GPMask"]
    with pytest.raises(hub.HubError, match="var.parquet"):  # a bare name means one file, not its letters
        hub.pull("var", endpoint=UNREACHABLE)


def test_redirect_like_the_hub(hub_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hash comes from the 302 (the CDN's reply has none) and the token never reaches the CDN."""
    monkeypatch.setenv("HF_TOKEN", "secret")
    with pf.serve_directory(hub_root, redirect=True) as server:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "no sha256 known" warning: the 302's header was read
            paths = hub.pull(["BarlowTwins", "var"], cache_dir=tmp_path, endpoint=server)
        for name in paths:
            assert filecmp.cmp(paths[name], served_file(hub_root, name), shallow=False)
        assert [(r[1].split("/")[1], r[2]) for r in server.requests] == [
            ("TillR", True), ("cdn", False), ("TillR", True), ("cdn", False)]
        server.reset()
        server.corrupt = True
        with pytest.raises(hub.HubError, match="sha256 mismatch for var"):
            hub.pull(["var"], cache_dir=tmp_path / "other", endpoint=server)
