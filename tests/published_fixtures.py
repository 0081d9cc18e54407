"""Stand-ins for the files published on Hugging Face (``TillR/sc_pretrained``), in their exact layouts.

The hub cannot be reached from the test machines, so tests write look-alikes at full size (19,331
genes) and serve them from a local server that answers like the hub:

- :func:`write_var_parquet` -- ``var.parquet``: ``feature_id`` (ENSG + 11 digits), ``feature_name``;
- :func:`write_masked_checkpoint` -- ``RandomMask.ckpt`` / ``GPMask.ckpt``: a Lightning checkpoint
  (no ``hyper_parameters``: the published masked models never called ``save_hyperparameters``);
- :func:`write_barlow_twins_checkpoint` -- ``BarlowTwins.ckpt``: a raw ``BarlowTwins.state_dict()``;
- :func:`expected_encoder` -- the ten encoder tensors of a written checkpoint;
- :func:`serve_directory` -- a local HTTP server with the hub's ``resolve`` URLs and hash headers.

The key/shape tables below are copied from ``shared/reference/upstream_models.md`` §3.1 and §3.4 and
are the source of truth: writers generate from them and assert the result against them, so a drift
in ``ssl_st.nn`` cannot silently change what "published layout" means in tests.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import torch

N_GENES = 19331
G = "n_genes"  # placeholder in the tables for the input width
Shape = tuple[int | str, ...]

# §3.1: MLPAutoEncoder with units_encoder [512,512,256,256,64] and --decoder; 20 tensors.
MASKED_AUTOENCODER_TABLE: dict[str, Shape] = {
    "encoder.0.weight": (512, G), "encoder.0.bias": (512,),
    "encoder.3.weight": (512, 512), "encoder.3.bias": (512,),
    "encoder.6.weight": (256, 512), "encoder.6.bias": (256,),
    "encoder.9.weight": (256, 256), "encoder.9.bias": (256,),
    "encoder.12.weight": (64, 256), "encoder.12.bias": (64,),
    "decoder.0.0.weight": (256, 64), "decoder.0.0.bias": (256,),
    "decoder.0.3.weight": (256, 256), "decoder.0.3.bias": (256,),
    "decoder.0.6.weight": (512, 256), "decoder.0.6.bias": (512,),
    "decoder.0.9.weight": (512, 512), "decoder.0.9.bias": (512,),
    "decoder.0.12.weight": (G, 512), "decoder.0.12.bias": (G,),
}  # fmt: skip

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# §3.4: raw BarlowTwins.state_dict(); projector Linears have no bias, bn is affine-free; 32 tensors.
BARLOW_TWINS_TABLE: dict[str, Shape] = {
    "backbone.0.weight": (512, G), "backbone.0.bias": (512,),
    "backbone.3.weight": (512, 512), "backbone.3.bias": (512,),
    "backbone.6.weight": (256, 512), "backbone.6.bias": (256,),
    "backbone.9.weight": (256, 256), "backbone.9.bias": (256,),
    "backbone.12.weight": (64, 256), "backbone.12.bias": (64,),
    "projector.0.weight": (256, 64),
    **{f"projector.1.{k}": (256,) if k != "num_batches_tracked" else () for k in _BN},
    "projector.3.weight": (256, 256),
    **{f"projector.4.{k}": (256,) if k != "num_batches_tracked" else () for k in _BN},
    "projector.6.weight": (512, 256),
    **{f"projector.7.{k}": (512,) if k != "num_batches_tracked" else () for k in _BN},
    "projector.9.weight": (512, 512),
    "bn.running_mean": (512,), "bn.running_var": (512,), "bn.num_batches_tracked": (),
}  # fmt: skip

ENCODER_KEYS = tuple(f"{i}.{p}" for i in (0, 3, 6, 9, 12) for p in ("weight", "bias"))
MASKED_PARAMETERS = 20_767_683  # §3.1, at 19,331 genes
BARLOW_TWINS_PARAMETERS = 10_851_392  # §3.4, trainable parameters only (BN buffers excluded)
LIGHTNING_KEYS = ("epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops", "callbacks",
                  "optimizer_states", "lr_schedulers")
CHECKPOINT_CALLBACK = ("ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, "
                       "'every_n_epochs': 1, 'train_time_interval': None}")


def shapes(table: dict[str, Shape], n_genes: int = N_GENES) -> dict[str, tuple[int, ...]]:
    """A table with the gene placeholder filled in."""
    return {k: tuple(n_genes if d == G else int(d) for d in shape) for k, shape in table.items()}


def _assert_layout(state: dict[str, torch.Tensor], table: dict[str, Shape], n_genes: int) -> None:
    got = {k: tuple(v.shape) for k, v in state.items()}
    assert got == shapes(table, n_genes), f"written layout differs from the reference table: {got}"


# ---------------------------------------------------------------- var.parquet

_FIRST = ["OR4F5", "OR4F29", "OR4F16", "SAMD11", "NOC2L"]  # the real head and tail of scTab's order
_LAST = ["WASH6P", "PDCD6-AHRR", "GET1-SH3BGR"]


def gene_table(n_genes: int = N_GENES, seed: int = 0) -> pd.DataFrame:
    """Unique Ensembl-like IDs and unique symbols, in the published column order."""
    rng = np.random.default_rng(seed)
    ids = pd.unique(rng.integers(0, 10**6, size=2 * n_genes + 16))[:n_genes]  # like ENSG00000186092
    assert len(ids) == n_genes
    letters = np.array(list("ABCDEFGHIKLMNOPRSTUVWXYZ"))
    # letters + running number: unique by construction, whatever the letters
    names = ["".join(rng.choice(letters, size=rng.integers(2, 6))) + str(i + 1) for i in range(n_genes)]
    if n_genes >= len(_FIRST) + len(_LAST):
        names[: len(_FIRST)], names[-len(_LAST):] = _FIRST, _LAST
    names_s = pd.Series(names)
    while names_s.duplicated().any():  # a real symbol may collide with a made-up one
        names_s[names_s.duplicated()] += "X"
    return pd.DataFrame({"feature_id": [f"ENSG{i:011d}" for i in ids], "feature_name": names_s.to_list()})


def write_var_parquet(path: str | Path, n_genes: int = N_GENES, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gene_table(n_genes, seed).to_parquet(path, index=False)
    return path


# ---------------------------------------------------------------- checkpoints


def _uniform(shape: tuple[int, ...], bound: float, g: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=g) * 2 - 1) * bound


def _random_state(table: dict[str, Shape], n_genes: int, g: torch.Generator) -> OrderedDict[str, torch.Tensor]:
    """Values scaled like PyTorch's default init: Linear in U(+-1/sqrt(fan_in)), BN near identity."""
    table_shapes = shapes(table, n_genes)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, shape in table_shapes.items():
        layer, kind = key.rsplit(".", 1)
        weight_shape = table_shapes.get(f"{layer}.weight", ())
        if kind == "num_batches_tracked":
            state[key] = torch.tensor(123_456, dtype=torch.int64)
        elif kind == "running_var":
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif kind == "running_mean" or (len(weight_shape) == 1 and kind == "bias"):
            state[key] = 0.1 * torch.randn(shape, generator=g)
        elif len(weight_shape) == 1:  # batch-norm scale
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:  # Linear weight or bias: fan_in is the weight's second dimension
            state[key] = _uniform(shape, 1 / math.sqrt(weight_shape[1]), g)
    return state


def _adamw_state(params: list[torch.Tensor], step: int, lr: float, g: torch.Generator | None) -> dict:
    """``torch.optim.AdamW(lr=1e-3, weight_decay=0.01).state_dict()`` after ``step`` steps (None: unstepped)."""
    state = {} if g is None else {
        i: {"step": torch.tensor(float(step)),
            "exp_avg": torch.randn(p.shape, generator=g) * 1e-4,
            "exp_avg_sq": torch.rand(p.shape, generator=g) * 1e-8}
        for i, p in enumerate(params)
    }  # fmt: skip
    group = {"lr": lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False,
             "foreach": None, "maximize": False, "capturable": False, "differentiable": False,
             "fused": None, "initial_lr": 1e-3, "params": list(range(len(params)))}
    return {"state": state, "param_groups": [group]}


def write_masked_checkpoint(path: str | Path, n_genes: int = N_GENES, seed: int = 0,
                            with_optimizer: bool = True) -> Path:
    """A Lightning checkpoint laid out like the published RandomMask / GPMask files (§3.1, §3.6)."""
    g = torch.Generator().manual_seed(seed)
    state = _random_state(MASKED_AUTOENCODER_TABLE, n_genes, g)
    _assert_layout(state, MASKED_AUTOENCODER_TABLE, n_genes)
    epoch, steps_per_epoch = 41, 1860
    step = (epoch + 1) * steps_per_epoch
    lr = 1e-3 * 0.9 ** ((epoch + 1) // 2)  # StepLR(step_size=2, gamma=0.9), stepped per epoch
    progress = {"ready": epoch + 1, "started": epoch + 1, "processed": epoch + 1, "completed": epoch + 1}
    ckpt = {
        "epoch": epoch,
        "global_step": step,
        "pytorch-lightning_version": "2.0.0",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": progress, "current": progress},
                               "epoch_loop.state_dict": {"_batches_that_stepped": step}}},
        "callbacks": {CHECKPOINT_CALLBACK: {"best_model_score": torch.tensor(0.0421),
                                            "best_model_path": "/checkpoints/CN_MLP_50p/best_checkpoint_val.ckpt"}},
        "optimizer_states": [_adamw_state(list(state.values()), step, lr, g if with_optimizer else None)],
        "lr_schedulers": [{"step_size": 2, "gamma": 0.9, "base_lrs": [1e-3], "last_epoch": epoch + 1,
                           "verbose": False, "_step_count": epoch + 2, "_get_lr_called_within_step": False,
                           "_last_lr": [lr]}],
    }  # fmt: skip
    return _save(ckpt, path)


def write_barlow_twins_checkpoint(path: str | Path, n_genes: int = N_GENES, seed: int = 0) -> Path:
    """A raw ``BarlowTwins.state_dict()`` (an OrderedDict, no Lightning wrapper), as published (§3.4)."""
    state = _random_state(BARLOW_TWINS_TABLE, n_genes, torch.Generator().manual_seed(seed))
    _assert_layout(state, BARLOW_TWINS_TABLE, n_genes)
    return _save(state, path)


def _save(obj: object, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def expected_encoder(path: str | Path) -> dict[str, torch.Tensor]:
    """The ten encoder tensors (``0.weight`` ... ``12.bias``) of a checkpoint written above."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state, prefix = (obj["state_dict"], "encoder.") if "state_dict" in obj else (obj, "backbone.")
    return {k: state[prefix + k] for k in ENCODER_KEYS}


# ---------------------------------------------------------------- a local hub

_SHA_CACHE: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256, across servers


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


class HubURL(str):
    """The base URL of a :func:`serve_directory` server; its attributes steer the server while it runs.

    ``corrupt`` flips a byte mid-body, ``truncate`` stops after half the body, ``announce`` replaces
    the sha256 in the hash headers ("" sends none, like a non-LFS file), ``token`` demands ``Authorization: Bearer <token>`` (else 401).
    ``requests`` logs ``(method, path, had_authorization)`` for every request.
    """

    corrupt: bool
    truncate: bool
    announce: str | None
    token: str | None
    requests: list[tuple[str, str, bool]]
    sha256: dict[str, str]  # "<repo>/<path_in_repo>" -> sha256 of the served file

    def reset(self) -> None:
        self.corrupt, self.truncate, self.announce, self.token, self.requests = False, False, None, None, []


class _HubHandler(BaseHTTPRequestHandler):
    timeout = 30  # a stalled client cannot hold a server thread for ever
    server: _HubServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        hub = self.server.hub
        auth = self.headers.get("Authorization")
        hub.requests.append((self.command, self.path, auth is not None))
        try:
            self._route(hub, auth, send_body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading (e.g. it already had the file): nothing to do

    def _route(self, hub: HubURL, auth: str | None, send_body: bool) -> None:
        parts = self.path.split("?")[0].lstrip("/").split("/")
        if parts[0] == "cdn" and len(parts) == 2 and parts[1] in self.server.by_sha:
            return self._send_file(self.server.by_sha[parts[1]], hash_headers=False, send_body=send_body)
        repo_parts = 3 if parts[0] in ("datasets", "spaces") else 2  # the hub's repo-type prefixes
        if len(parts) < repo_parts + 3 or parts[repo_parts] != "resolve" or unquote(parts[repo_parts + 1]) != self.server.revision:
            return self._status(404)
        if hub.token is not None and auth != f"Bearer {hub.token}":
            return self._status(401)
        rel = unquote("/".join(parts[:repo_parts])) + "/" + "/".join(unquote(p) for p in parts[repo_parts + 2 :])
        if rel not in hub.sha256:
            return self._status(404)
        if self.server.redirect:  # like the hub for LFS files: hash headers on the 302, bytes from a CDN
            self.send_response(302)
            self._hash_headers(rel)
            self.send_header("X-Linked-Size", str(self.server.files[rel].stat().st_size))
            self.send_header("Location", f"http://localhost:{self.server.server_port}/cdn/{hub.sha256[rel]}")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        self._send_file(rel, hash_headers=True, send_body=send_body)

    def _status(self, code: int) -> None:
        body = f"{code}\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _hash_headers(self, rel: str) -> None:
        announce = self.server.hub.announce
        if announce == "":
            return
        sha = announce or self.server.hub.sha256[rel]
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("ETag", f'W/"{sha}"')

    def _send_file(self, rel: str, hash_headers: bool, send_body: bool) -> None:
        path, hub = self.server.files[rel], self.server.hub
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        if hash_headers:
            self._hash_headers(rel)
        self.end_headers()
        if send_body:
            self._stream(path, size // 2 if hub.truncate else size, flip_at=size // 2 if hub.corrupt else None)

    def _stream(self, path: Path, n_bytes: int, flip_at: int | None) -> None:
        sent = 0
        with open(path, "rb") as fh:
            while sent < n_bytes and (chunk := fh.read(min(1 << 20, n_bytes - sent))):
                if flip_at is not None and sent <= flip_at < sent + len(chunk):
                    buf = bytearray(chunk)
                    buf[flip_at - sent] ^= 0xFF
                    chunk = bytes(buf)
                self.wfile.write(chunk)
                sent += len(chunk)


class _HubServer(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubURL
    files: dict[str, Path]
    by_sha: dict[str, str]
    revision: str
    redirect: bool


@contextmanager
def serve_directory(root: str | Path, *, revision: str = "main", redirect: bool = False) -> Iterator[HubURL]:
    """Serve ``root/<owner>/<repo>/<path>`` at ``/<owner>/<repo>/resolve/<revision>/<path>`` on 127.0.0.1.

    Every file gets ``Content-Length``, ``X-Linked-Etag: "<sha256>"`` and ``ETag`` (hashed once at
    start); unknown paths or revisions get 404. With ``redirect`` the resolve URL answers 302 with the
    hash headers and points at ``http://localhost:<port>/cdn/<sha256>`` (another host name, as the
    hub's CDN is), whose reply has no hash headers -- exactly the hub's split for LFS files.
    """
    root = Path(root)
    files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
    server = _HubServer(("127.0.0.1", 0), _HubHandler)
    server.files, server.revision, server.redirect = files, revision, redirect
    hub = HubURL(f"http://127.0.0.1:{server.server_port}")
    hub.reset()
    hub.sha256 = {rel: _sha256(p) for rel, p in files.items()}
    server.by_sha = {sha: rel for rel, sha in hub.sha256.items()}
    server.hub = hub
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
