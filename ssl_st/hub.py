"""Download Richter et al.'s published checkpoints and the scTab gene order from the Hugging Face hub:
``pull()`` saves the files of :data:`PUBLISHED` as ``<cache>/hub/<owner>--<repo>/<path_in_repo>``
(``<cache>``: ``$SSL_ST_CACHE`` or ``~/.cache/ssl-st``) and checks each sha256 against, by precedence:
the registry (``PublishedFile.sha256``; None for now, since the hub was unreachable when this was
written and an invented hash is worse than none); the lock ``<cache>/ssl-st-hub.lock.json``, which
pins the first verified hash for later pulls and for machines given the lock; else the hub's word:
for LFS files ``resolve`` redirects with the sha256 in ``X-Linked-Etag``/``ETag`` (the CDN's reply lacks
it, so the whole redirect chain is read). Only urllib; ``HF_ENDPOINT``, ``HF_TOKEN`` as in huggingface_hub.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from http.client import HTTPException, HTTPResponse
from pathlib import Path

DEFAULT_ENDPOINT = "https://huggingface.co"
REPO = "TillR/sc_pretrained"
LOCK_NAME = "ssl-st-hub.lock.json"
CHUNK = 1 << 20
TIMEOUT_S = 60.0
DownloadCallback = Callable[[str, int, "int | None"], None]
"""Called as bytes arrive: file name, bytes so far, total bytes (None when unannounced)."""
_SHA256 = re.compile(r'^(?:w/)?"?([0-9a-f]{64})"?$')


class HubError(Exception):
    """A published file could not be fetched, or its bytes failed verification."""


@dataclass(frozen=True)
class PublishedFile:
    name: str
    repo: str
    path_in_repo: str
    revision: str = "main"
    sha256: str | None = None  # None: take it from the lock, else from the hub's X-Linked-Etag
    size: int | None = None
    description: str = ""
    url: str | None = None  # a file outside the hub (e.g. a repository's raw file); its server sends no hash


PUBLISHED: dict[str, PublishedFile] = {
    "RandomMask": PublishedFile("RandomMask", REPO, "Pretrained Models/RandomMask.ckpt",
                                description="Random Mask (p=0.5) autoencoder; Lightning checkpoint"),
    "GPMask": PublishedFile("GPMask", REPO, "Pretrained Models/GPMask.ckpt",
                            description="Gene-program (MSigDB C8) mask autoencoder; Lightning checkpoint"),
    "BarlowTwins": PublishedFile("BarlowTwins", REPO, "Pretrained Models/BarlowTwins.ckpt",
                                 description="Barlow Twins; raw state_dict (backbone.*, projector.*, bn.*)"),
    "var": PublishedFile("var", REPO, "var.parquet",
                         description="scTab input gene order: 19,331 rows of feature_id, feature_name"),
}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir`` if given, else ``$SSL_ST_CACHE``, else ``~/.cache/ssl-st``."""
    return Path(cache_dir or os.environ.get("SSL_ST_CACHE") or Path.home() / ".cache" / "ssl-st")


def _lookup(file: str | PublishedFile) -> PublishedFile:
    if isinstance(file, PublishedFile):  # lets callers pull a file the registry does not list
        return file
    if file not in PUBLISHED:
        raise ValueError(f"unknown published file '{file}'; choose from {', '.join(PUBLISHED)}")
    return PUBLISHED[file]


def local_path(file: str | PublishedFile, cache_dir: str | Path | None = None) -> Path:
    """Where :func:`pull` puts ``file`` (and where to place it by hand when offline)."""
    f = _lookup(file)
    return cache_root(cache_dir) / "hub" / f.repo.replace("/", "--") / f.path_in_repo


def resolve_url(file: str | PublishedFile, endpoint: str | None = None) -> str:
    f, base = _lookup(file), (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    if f.url is not None:
        return f.url
    revision = urllib.parse.quote(f.revision, safe="")  # refs/pr/1 is one path segment, as on the hub
    return f"{base}/{f.repo}/resolve/{revision}/{urllib.parse.quote(f.path_in_repo)}"


def read_lock(cache_dir: str | Path | None = None) -> dict[str, dict]:
    path = cache_root(cache_dir) / LOCK_NAME
    return json.loads(path.read_text())["files"] if path.is_file() else {}


def _pinned(f: PublishedFile, cache: Path) -> tuple[str, str] | None:
    if f.sha256:
        return f.sha256.lower(), "the ssl_st.hub registry"
    entry = read_lock(cache).get(f.name)
    # A lock entry for another repo, revision or path says nothing about this file.
    if entry and (entry["repo"], entry["revision"], entry["path_in_repo"]) == (f.repo, f.revision, f.path_in_repo):
        return entry["sha256"], f"the lock file {cache / LOCK_NAME}"
    return None


def _record(f: PublishedFile, cache: Path, sha256: str, size: int) -> None:
    files = read_lock(cache)
    files[f.name] = dict(repo=f.repo, revision=f.revision, path_in_repo=f.path_in_repo, sha256=sha256, size=size)
    # Replace atomically so a reader never sees half a lock (concurrent writers: last one wins).
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{LOCK_NAME}.", suffix=".part")
    with os.fdopen(fd, "w") as out:
        json.dump({"version": 1, "files": files}, out, indent=2)
    os.replace(tmp, cache / LOCK_NAME)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def pull(names: Iterable[str | PublishedFile] | None = None, *, cache_dir: str | Path | None = None,
         endpoint: str | None = None, force: bool = False, progress: DownloadCallback | None = None) -> dict[str, Path]:
    """Download published files (default: all of :data:`PUBLISHED`); return their local paths.

    A file on disk whose hash matches the registry or lock is kept with no request (unless ``force``).
    ``progress(name, bytes_done, bytes_total or None)`` is called after every chunk."""
    cache = cache_root(cache_dir)
    names = [names] if isinstance(names, (str, PublishedFile)) else names  # pull("var") is one file
    files = [_lookup(n) for n in (PUBLISHED if names is None else names)]
    return {f.name: _pull_one(f, cache, endpoint, force, progress) for f in files}


def _pull_one(f: PublishedFile, cache: Path, endpoint: str | None, force: bool, progress: DownloadCallback | None) -> Path:
    dest = local_path(f, cache)
    local = sha256_file(dest) if dest.is_file() and not force else None
    pinned = _pinned(f, cache)
    if pinned and local == pinned[0]:
        return dest
    url = resolve_url(f, endpoint)
    with _open(url, f, cache) as (response, announced):
        expected = pinned or ((announced, "the hub's X-Linked-Etag/ETag header") if announced else None)
        if expected and local == expected[0]:
            actual = local  # the copy on disk is the announced file: skip the body
        else:
            actual = _download(response, f, url, dest, expected, progress)
    _record(f, cache, actual, dest.stat().st_size)
    return dest


class _KeepRedirectHeaders(urllib.request.HTTPRedirectHandler):
    """Remembers every redirect's headers: the hub puts the sha256 on its 302, not on the CDN reply."""

    def __init__(self) -> None:
        super().__init__()
        self.chain: list[Message] = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        self.chain.append(headers)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        token = req.unredirected_hdrs.get("Authorization")
        same_host = urllib.parse.urlsplit(newurl).netloc == urllib.parse.urlsplit(req.full_url).netloc
        if new is not None and token and same_host:  # the token is for the hub, never for the CDN
            new.add_unredirected_header("Authorization", token)
        return new


def _announced_sha256(chain: list[Message]) -> str | None:
    for header in ("X-Linked-Etag", "ETag"):
        for headers in chain:
            match = _SHA256.match((headers.get(header) or "").strip().lower())
            if match:
                return match.group(1)
    return None  # non-LFS files carry a git sha1 ETag, which is no sha256


@contextmanager
def _open(url: str, f: PublishedFile, cache: Path) -> Iterator[tuple[HTTPResponse, str | None]]:
    request = urllib.request.Request(url, headers={"User-Agent": "ssl-st"})
    if token := os.environ.get("HF_TOKEN"):
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    redirects = _KeepRedirectHeaders()
    try:
        response = urllib.request.build_opener(redirects).open(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        err.close()
        raise HubError(_http_message(err.code, url, f)) from err
    except OSError as err:  # URLError, timeouts, refused connections
        raise HubError(_offline_message(url, f, cache, getattr(err, "reason", err))) from err
    with response:
        yield response, _announced_sha256([*redirects.chain, response.headers])


def _http_message(status: int, url: str, f: PublishedFile) -> str:
    hints = {401: f"authentication required: set HF_TOKEN to a token with access to {f.repo}",
             403: f"access denied: check that HF_TOKEN grants access to {f.repo}",
             404: f"not found: check repo '{f.repo}', revision '{f.revision}' and path '{f.path_in_repo}'"}
    return f"HTTP {status} for {f.name} at {url}: {hints.get(status, 'unexpected response from the hub')}"


def _offline_message(url: str, f: PublishedFile, cache: Path, reason: object) -> str:
    return (f"Cannot download {f.name}: the Hugging Face hub is unreachable at {url} ({reason}). "
            f"To proceed offline, download '{f.path_in_repo}' from {f.repo} on a machine that reaches the "
            f"hub and place it at {local_path(f, cache)} (copy that machine's {LOCK_NAME} to "
            f"{cache / LOCK_NAME} to verify it without the network), or pass local file paths to `ssl-st embed`.")


def _download(response: HTTPResponse, f: PublishedFile, url: str, dest: Path,
              expected: tuple[str, str] | None, progress: DownloadCallback | None) -> str:
    """Stream into a temporary file beside ``dest``; only verified bytes ever get the final name."""
    length = response.headers.get("Content-Length")
    total = int(length) if length else f.size
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest, done = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            try:
                while chunk := response.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(f.name, done, total)
            except (OSError, HTTPException) as err:
                raise HubError(f"download of {f.name} from {url} broke off after {done} bytes: {err}") from err
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        _verify(f, url, done, total, actual, expected)
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)  # also on Ctrl-C; a SIGKILL leaves only a hidden .part file
        raise
    return actual


def _verify(f: PublishedFile, url: str, done: int, total: int | None, actual: str,
            expected: tuple[str, str] | None) -> None:
    if total is not None and done != total:
        raise HubError(f"download of {f.name} from {url} is incomplete: {done} of {total} bytes")
    if expected is None:
        warnings.warn(f"{f.name}: no sha256 known (registry, lock or hub header); pinning {actual} "
                      "in the lock on first use", stacklevel=4)
    elif actual != expected[0]:
        raise HubError(f"sha256 mismatch for {f.name} ({url}): expected {expected[0]} from {expected[1]}, "
                       f"got {actual}. The downloaded bytes were deleted. If the file changed upstream on "
                       f"purpose, unpin it (registry or {LOCK_NAME}) and pull again.")
