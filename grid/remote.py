"""Results on object storage: ``--results s3://bucket/prefix`` (or any URI a pyarrow filesystem reads).

A cluster whose nodes share no disk cannot hand its tasks a results directory. With a URI:

- the driver writes each cell's Parquet file as one object (a PUT is whole or absent, as the local
  rename is) and reads the store by listing ``cells/`` (:class:`grid.store.ObjectResultStore`);
- a build task builds its artifact in its node's cache (:func:`cache_root`), then uploads it: the
  old manifest is deleted first and the new one is uploaded last, so a half-uploaded artifact is
  never vouched for; the driver decides what to build from the manifests on the store;
- a cell task downloads the artifacts it needs into its node's cache, each file checked against the
  manifest's sha256; a cached copy that matches the store's manifest is reused without a download;
- a tuning cell keeps its Tune experiment under ``work/<cell_id>`` on the store, so an interrupted
  search resumes on whichever node runs the cell next.

Credentials and endpoint are what the filesystem reads: for S3 the standard AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``),
``~/.aws``, an instance role, or the URI itself (``s3://KEY:SECRET@bucket/prefix?endpoint_override=
host:port&scheme=http``). The driver resolves the URI once; the filesystem's options (endpoint,
region, credentials written in the URI) travel to the tasks with it, while credentials from the
driver's environment do not: each node uses its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow.fs as pafs

    from .plan import Artifact, ArtifactState, Cell
    from .resources import Resources
    from .tasks import CellInputs

CACHE_ENV = "SSL_ST_CACHE"
URI_HINT = ("pass a local directory or an object-store URI such as s3://bucket/prefix (S3-compatible "
            "servers: set AWS_ENDPOINT_URL, or add ?endpoint_override=host:port&scheme=http)")


class LocationError(ValueError):
    """``--results`` names no usable location; the message names the option and the fix."""


@dataclass(frozen=True, eq=False)
class Location:
    """A results root on a pyarrow filesystem: ``base`` is its path there (``bucket/prefix``), ``uri``
    the form shown to people (scheme, bucket and prefix; never credentials or query options)."""

    filesystem: pafs.FileSystem
    base: str
    uri: str
    cache: str | None = None  # the driver's $SSL_ST_CACHE: the same cache path on every node, if set

    def __str__(self) -> str:
        return self.uri

    def path(self, *parts: str) -> str:
        """The filesystem path of ``parts`` under the root."""
        return posixpath.join(self.base, *parts)

    def url(self, *parts: str) -> str:
        """``parts`` under the root as a URI, for messages."""
        return posixpath.join(self.uri, *parts)

    def info(self, path: str) -> pafs.FileInfo:
        return self.filesystem.get_file_info(path)

    def exists(self) -> bool:
        """Whether anything is stored under the root (object stores have no empty directories)."""
        import pyarrow.fs as pafs

        return self.info(self.base).type != pafs.FileType.NotFound

    def list(self, *parts: str) -> list[pafs.FileInfo]:
        """The files directly under ``parts`` (none if it does not exist), sorted by path."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted((i for i in self.filesystem.get_file_info(selector) if i.is_file), key=lambda i: i.path)

    def read_bytes(self, path: str) -> bytes | None:
        """The object at ``path``, or None if there is none."""
        try:
            with self.filesystem.open_input_stream(path) as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def write_bytes(self, path: str, data: bytes) -> None:
        """One PUT of the whole object: readers see the old object or the new one, never a part."""
        with self.open_output(path) as stream:
            stream.write(data)

    def open_output(self, path: str) -> Any:
        """An output stream to ``path``. Object stores need no parent folders; a filesystem with
        folders (GCS's emulation, HDFS, pyarrow's in-memory one) gets them when it asks for them."""
        try:
            return self.filesystem.open_output_stream(path)
        except FileNotFoundError:
            self.filesystem.create_dir(posixpath.dirname(path), recursive=True)
            return self.filesystem.open_output_stream(path)

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_file(path)

    def delete_tree(self, path: str) -> None:
        """Every object under ``path`` (nothing if there is none)."""
        import pyarrow.fs as pafs

        if self.info(path).type == pafs.FileType.Directory:
            self.filesystem.delete_dir_contents(path, missing_dir_ok=True)


def is_uri(text: str) -> bool:
    return "://" in text


def parse(text: str | Path) -> Path | Location:
    """``--results`` as a local directory (a plain path or ``file://``) or a :class:`Location`;
    :class:`LocationError` naming ``--results`` and the fix for a URI no filesystem reads."""
    if isinstance(text, Path) or not is_uri(text):
        return Path(text)
    import pyarrow.fs as pafs

    shown = display(text)
    try:
        filesystem, path = pafs.FileSystem.from_uri(text)
    except (ValueError, OSError, TypeError) as exc:  # ArrowInvalid is a ValueError
        first = (str(exc).splitlines()[0] if str(exc) else type(exc).__name__).replace(text, shown)
        raise LocationError(f"--results {shown}: {first}; {URI_HINT}") from None
    if isinstance(filesystem, pafs.LocalFileSystem):
        return Path(path)
    base = path.strip("/")
    scheme = text.split("://", 1)[0]
    if not base:
        raise LocationError(f"--results {shown}: no bucket; name a bucket and a prefix, e.g. {scheme}://bucket/results")
    return Location(filesystem, base, f"{scheme}://{base}", os.environ.get(CACHE_ENV) or None)


def display(uri: str) -> str:
    """``uri`` without credentials (``user:secret@``) and query options, for messages."""
    scheme, _, rest = uri.partition("://")
    rest = rest.split("?", 1)[0]
    head, sep, tail = rest.partition("/")
    return f"{scheme}://{head.rsplit('@', 1)[-1]}{sep}{tail}"


def check_reachable(location: Location) -> None:
    """Raise :class:`LocationError` unless the bucket (the first part of the root) can be listed:
    checked before Ray starts, as a local results directory is checked for write access."""
    import pyarrow.fs as pafs

    bucket = location.base.split("/", 1)[0]
    try:
        found = location.info(bucket).type
    except OSError as exc:
        first = str(exc).splitlines()[0]
        raise LocationError(f"--results {location}: cannot reach the store ({first}); check the credentials "
                            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws) and the endpoint (AWS_ENDPOINT_URL)") from None
    if found == pafs.FileType.NotFound:
        scheme = location.uri.split("://", 1)[0]
        raise LocationError(f"--results {location}: bucket '{bucket}' does not exist; create it first "
                            f"(e.g. aws s3 mb {scheme}://{bucket}) or name another bucket")


def cache_root(cache: str | None = None) -> Path:
    """This node's cache of downloaded and built artifacts and of cells' scratch folders:
    ``<cache>/results``, where ``cache`` is the driver's ``$SSL_ST_CACHE`` (a location carries it to
    the tasks: set it to a path that exists on every node), else this node's, else ``~/.cache/ssl-st``."""
    return Path(cache or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ssl-st") / "results"


# ---- artifacts ------------------------------------------------------------------------------------
#
# An artifact's objects mirror its local layout: a dataset is one file (``artifacts/data/<name>-<key>.h5ad``)
# with ``<file>.manifest.json`` beside it; a model (or embedding) is a folder with ``manifest.json`` inside.


def _is_file(artifact: Artifact) -> bool:
    return artifact.kind == "data"


def artifact_rel(artifact: Artifact) -> str:
    return artifact.path(Path()).as_posix()


def manifest_rel(artifact: Artifact) -> str:
    from .plan import MANIFEST_NAME

    rel = artifact_rel(artifact)
    return f"{rel}.{MANIFEST_NAME}" if _is_file(artifact) else f"{rel}/{MANIFEST_NAME}"


def _file_rel(artifact: Artifact, name: str) -> str:
    """Where a file a manifest names lies under the root (a dataset's name is its own, beside it)."""
    rel = artifact_rel(artifact)
    return posixpath.join(posixpath.dirname(rel), name) if _is_file(artifact) else f"{rel}/{name}"


def _manifest(artifact: Artifact, location: Location) -> dict[str, Any] | None:
    data = location.read_bytes(location.path(manifest_rel(artifact)))
    return None if data is None else json.loads(data)


def remote_state(artifact: Artifact, location: Location) -> tuple[ArtifactState, str]:
    """``(state, reason)`` of an artifact on the store from its manifest and the objects' sizes.
    The sha256 are checked where the files are downloaded (:func:`fetch`): checking them here would
    download every artifact to the driver."""
    import pyarrow.fs as pafs

    try:
        manifest = _manifest(artifact, location)
    except ValueError as exc:
        return "broken", f"unreadable manifest ({exc})"
    if manifest is None:
        if location.info(location.path(artifact_rel(artifact))).type != pafs.FileType.NotFound:
            return "broken", "no manifest (an interrupted upload)"
        return "missing", "not built yet"
    files = manifest.get("files", {})
    infos = location.filesystem.get_file_info([location.path(_file_rel(artifact, rel)) for rel in files])
    for (rel, want), info in zip(files.items(), infos):
        if info.type == pafs.FileType.NotFound:
            return "broken", f"{rel} is missing"
        if info.size != want["size"]:
            return "broken", f"{rel}: {info.size} bytes, {want['size']} when built"
    return "built", ""


def artifact_summary(artifacts: list[Artifact], location: Location) -> str:
    """``ssl-st plan``'s artifact line for a store on object storage."""
    checked = [(a, *remote_state(a, location)) for a in artifacts]
    line = f"artifacts: {sum(s == 'built' for _, s, _ in checked)}/{len(checked)} built"
    broken = [f"{artifact_rel(a).removeprefix('artifacts/')} ({why})" for a, s, why in checked if s == "broken"]
    if broken:
        line += f", {len(broken)} broken: {'; '.join(broken)} [`ssl-st run` rebuilds them]"
    return line + f" (datasets and models, shared by cells; on {location.url('artifacts')})"


def upload(artifact: Artifact, local: Path, location: Location) -> None:
    """Put a built artifact (its local manifest is written) on the store: the old manifest is
    deleted first, then the old objects, then every file goes up, and the manifest last."""
    from .plan import manifest_path

    manifest = manifest_path(local)
    files = json.loads(manifest.read_text())["files"]
    location.delete(location.path(manifest_rel(artifact)))
    if not _is_file(artifact):  # files of an older build (other tensorboard logs) must not linger
        location.delete_tree(location.path(artifact_rel(artifact)))
    for rel in files:
        src = local.with_name(rel) if _is_file(artifact) else local / rel
        with open(src, "rb") as source, location.open_output(location.path(_file_rel(artifact, rel))) as target:
            shutil.copyfileobj(source, target, 1 << 22)
    location.write_bytes(location.path(manifest_rel(artifact)), manifest.read_bytes())


class ArtifactUnavailable(RuntimeError):
    """An artifact on the store has no manifest, or a file that does not match it."""


@contextlib.contextmanager
def _cache_lock(path: Path) -> Iterator[None]:
    """One fetcher per artifact per node: two cells starting together download it once, and never
    replace a folder the other is reading."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the flock


def _cached(local: Path, manifest: dict[str, Any]) -> bool:
    """Whether the cache holds this very build: the same manifest, and files whose sha256 match it."""
    from .plan import check_manifest, manifest_path

    try:
        if json.loads(manifest_path(local).read_text()) != manifest:
            return False
    except (OSError, ValueError):
        return False
    return check_manifest(local, checksums=True)[0] == "built"


def fetch(artifact: Artifact, location: Location, cache: Path) -> Path:
    """The artifact in this node's ``cache``, downloaded unless the cached copy is this build.
    Each file is checked against the manifest's sha256 and given its recorded mtime, so the local
    manifest vouches for it as for a local build."""
    from ssl_st.hub import sha256_file

    manifest_url = location.url(manifest_rel(artifact))
    try:
        manifest = _manifest(artifact, location)
    except ValueError as exc:
        raise ArtifactUnavailable(f"{manifest_url}: unreadable manifest ({exc}); `ssl-st run --force` rebuilds it") from None
    if manifest is None:
        raise ArtifactUnavailable(f"{manifest_url}: no manifest (the {artifact.kind} '{artifact.name}' is not built "
                                  "or its upload was interrupted); `ssl-st run` builds it again")
    local = artifact.path(cache)
    with _cache_lock(local):
        if _cached(local, manifest):
            return local
        staged = Path(tempfile.mkdtemp(prefix=f".{local.name}.", suffix=".tmp", dir=local.parent))
        try:
            for rel, want in manifest["files"].items():
                target = staged / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                source = location.path(_file_rel(artifact, rel))
                with location.filesystem.open_input_stream(source) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
                if sha256_file(target) != want["sha256"]:
                    raise ArtifactUnavailable(f"{location.url(_file_rel(artifact, rel))}: its sha256 differs from its "
                                              f"manifest (corrupted on the store); delete {location.url(artifact_rel(artifact))} "
                                              "and `ssl-st run` rebuilds it")
                os.utime(target, ns=(want["mtime_ns"], want["mtime_ns"]))
            _place(artifact, staged, local, json.dumps(manifest, indent=1))
        finally:
            shutil.rmtree(staged, ignore_errors=True)  # gone already once placed
    return local


def _place(artifact: Artifact, staged: Path, local: Path, manifest: str) -> None:
    """Move a verified download (``staged``, a sibling folder of ``local``) into its place in the
    cache, the manifest last; a model folder is swapped in whole."""
    from ssl_st.files import replace_dir

    from .plan import MANIFEST_NAME, manifest_path

    if not _is_file(artifact):
        (staged / MANIFEST_NAME).write_text(manifest)
        replace_dir(staged, local)
        return
    target = manifest_path(local)
    target.unlink(missing_ok=True)  # no old manifest over the file being replaced
    os.replace(staged / local.name, local)
    (staged / MANIFEST_NAME).write_text(manifest)
    os.replace(staged / MANIFEST_NAME, target)


# ---- what the Ray tasks call ----------------------------------------------------------------------


def build(artifact: Artifact, location: Location, inputs: dict[str, Artifact], *, device: str, rebuild: bool,
          resources: Resources | None = None) -> str:
    """Build ``artifact`` in this node's cache from its ``inputs`` (role -> artifact, downloaded
    first) and upload it; its URI."""
    from .stages import build_artifact

    cache = cache_root(location.cache)
    paths = {role: fetch(a, location, cache) for role, a in inputs.items()}
    local = build_artifact(artifact, cache, paths, device=device, rebuild=rebuild, resources=resources)
    upload(artifact, local, location)
    return location.url(artifact_rel(artifact))


def cell_inputs(cell: Cell, location: Location, needed: list[Artifact], *, device: str) -> CellInputs:
    """A cell's inputs on this node: its artifacts fetched into the cache, a scratch workdir in the
    cache, and its workdir on the store for what must outlive the node (a Tune experiment)."""
    from .tasks import CellInputs

    cache = cache_root(location.cache)
    paths = {a.key: fetch(a, location, cache) for a in needed}
    return CellInputs.of(cell, paths, workdir=cache / "work" / cell.cell_id, device=device,
                         shared_workdir=(location.filesystem, location.path("work", cell.cell_id)))
