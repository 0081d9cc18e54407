"""Files that ``ssl-st data pull`` and ``ssl-st models pull`` download, named in a config as those
commands name them: ``path: {pull: merscope-human-neocortex}``, ``checkpoint: {pull: RandomMask}``.

One concept for every field that takes such a file (a dataset's ``path`` and ``orthologs``, a
model's ``checkpoint`` and ``genes``), instead of a path into somebody's cache:

- the name is checked against the two registries (:data:`ssl_st.datasets.registry.STUDY_DATASETS`,
  :data:`ssl_st.hub.PUBLISHED`) when the config is read, at its line, with a did-you-mean;
- the file is looked up where the pull commands put it, in the cache of the machine that opens it
  (``$SSL_ST_CACHE``, else ``~/.cache/ssl-st``; :func:`ssl_st.hub.local_path`), when it is opened;
- in cell ids and artifact keys it stands for what the registry says it is (repository, revision,
  path, pinned hash), not for where it lies or when it was downloaded: ids are the same before and
  after the download and on every machine;
- ``ssl-st plan`` needs none of the files: it lists what this machine has yet to fetch
  (:func:`missing`), and a build that opens a file that is not there fails with the command that
  fetches it.

Reading a config with pulled files imports no data stack: both registries are plain records.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from ssl_st import hub
from ssl_st.datasets.registry import STUDY_DATASETS

from . import schema

# Each command and the files it downloads, by the names it takes.
COMMANDS: tuple[tuple[str, dict[str, hub.PublishedFile]], ...] = (
    ("ssl-st data pull", STUDY_DATASETS),
    ("ssl-st models pull", hub.PUBLISHED),
)


def _find(name: object) -> tuple[str, hub.PublishedFile] | None:
    for command, files in COMMANDS:
        if isinstance(name, str) and name in files:
            return command, files[name]
    return None


class _Pullable:
    """The names the pull commands know, as :class:`grid.schema.Name` checks a name."""

    def __contains__(self, name: object) -> bool:
        return _find(name) is not None

    def __getitem__(self, name: str) -> hub.PublishedFile:
        found = _find(name)
        if found is None:
            raise KeyError(self.unknown(name))
        return found[1]

    def unknown(self, name: object) -> str:
        names = [n for _, files in COMMANDS for n in files]
        close = difflib.get_close_matches(str(name), names, n=1)
        if close:
            return f"no pull command knows '{name}'; did you mean '{close[0]}'?"
        known = "; ".join(f"`{command}` knows {', '.join(files)}" for command, files in COMMANDS)
        return f"no pull command knows '{name}' ({known})"


PULLABLE = _Pullable()


@dataclass(frozen=True)
class Pulled:
    """A file named as ``ssl-st data pull`` / ``ssl-st models pull`` name it (``{pull: NAME}``)."""

    pull: Annotated[str, schema.Name(PULLABLE)]

    def __post_init__(self) -> None:  # the schema checks the name at its line first; this guards code
        if self.pull not in PULLABLE:
            raise ValueError(PULLABLE.unknown(self.pull))

    @property
    def file(self) -> hub.PublishedFile:
        return PULLABLE[self.pull]

    @property
    def command(self) -> str:
        """The command line that downloads this file."""
        command, _ = _find(self.pull) or ("", None)
        return f"{command} {self.pull}"

    def local_path(self) -> Path:
        """Where the pull command puts it on this machine (there or not)."""
        return hub.local_path(self.file)

    def is_present(self) -> bool:
        return self.local_path().is_file()

    def identity(self) -> dict[str, Any]:
        """What the file is, for cell ids: the registry's coordinates, never a local path or mtime."""
        f = self.file
        return {"pull": self.pull, "repo": f.repo, "revision": f.revision, "path_in_repo": f.path_in_repo,
                "url": f.url, "sha256": f.sha256}

    def resolve(self, what: str) -> str:
        """The local file, or FileNotFoundError saying which command fetches it (``what``: who asks)."""
        path = self.local_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"{what}: '{self.pull}' is not downloaded on this machine (no file at {path}); run `{self.command}` "
                f"here, or point SSL_ST_CACHE at a cache that holds it"
            )
        return str(path)

    def expect(self, key: str, suffixes: tuple[str, ...], owner: str, kind: str) -> None:
        """Raise FieldError at ``key`` unless the file is a ``kind`` (one of ``suffixes``)."""
        name = self.file.path_in_repo
        if not name.lower().endswith(suffixes):
            raise schema.FieldError(key, f"{owner}: '{self.pull}' is {Path(name).name}, not {kind}")


def local(value: str | Pulled | None, what: str) -> str | None:
    """The file a config field names, on this machine: a path as written (made absolute when the
    config was read) or a pulled file in this machine's cache (see :meth:`Pulled.resolve`)."""
    return value.resolve(what) if isinstance(value, Pulled) else value


def pulled_fields(spec: Any) -> list[tuple[str, Pulled]]:
    """``(field, file)`` of every pulled file a dataset or model spec names."""
    return [(f.name, getattr(spec, f.name)) for f in dataclasses.fields(spec) if isinstance(getattr(spec, f.name), Pulled)]


def missing(specs: Iterable[Any]) -> list[Pulled]:
    """The pulled files these specs name that this machine has not downloaded, each once, in order."""
    out: dict[str, Pulled] = {}
    for spec in specs:
        for _, pulled in pulled_fields(spec):
            if pulled.pull not in out and not pulled.is_present():
                out[pulled.pull] = pulled
    return list(out.values())


def fetch_commands(files: Iterable[Pulled]) -> list[str]:
    """One command line per pull command for ``files``: ``ssl-st data pull a b``."""
    by_command: dict[str, list[str]] = {}
    for pulled in files:
        command, _ = _find(pulled.pull) or ("", None)
        by_command.setdefault(command, []).append(pulled.pull)
    return [f"{command} {' '.join(names)}" for command, names in by_command.items()]
