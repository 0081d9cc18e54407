"""Name -> class registries: how a method, an objective or a task kind is declared once.

A registry maps the name a user writes in a config (``random-mask``, ``stagate``, ``cell-type``) to
the frozen dataclass that holds that thing's settings *and* carries its behaviour, the scvi-tools
habit of a model naming its module, config and training plan in one place. A method file registers
its class with the decorator; the package's registry module names its built-in method modules once,
and they are imported the first time the registry is read, so that reading a config stays cheap
(method modules import torch and friends inside their functions, not at the top).

Because registration happens when a method's module is imported, a Ray worker that unpickles a spec
of a method defined outside this package (a plugin, a test's toy method) registers it too.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class UnknownName(KeyError, ValueError):
    """A name that no entry of a registry has; the message lists what exists."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """Classes registered under a name: their class attribute ``key`` (default ``name``).

    ``builtin`` lists modules that register entries when imported; they are imported on first read.
    """

    def __init__(self, what: str, builtin: Sequence[str] = (), *, key: str = "name") -> None:
        self.what = what
        self.key = key
        self._builtin = tuple(builtin)
        self._entries: dict[str, T] = {}
        self._loaded = False
        self._lock = threading.RLock()

    def register(self, cls: T) -> T:
        """Class decorator: add ``cls`` under its ``key`` attribute. Registering the same class again (a module
        imported twice) is a no-op; a different class under a taken name is an error."""
        name = getattr(cls, self.key, None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__} needs a class attribute '{self.key}' to be registered as a {self.what}")
        with self._lock:
            current = self._entries.get(name)
            if current is not None and _qualified(current) != _qualified(cls):
                raise ValueError(f"{self.what} '{name}' is registered twice: {_qualified(current)} and {_qualified(cls)}")
            self._entries[name] = cls
        return cls

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if not self._loaded:
                self._loaded = True
                for module in self._builtin:
                    importlib.import_module(module)
                # Built-in entries first and in the order named, whichever of their modules was imported
                # first; others (plugins, tests) after them in the order they registered.
                rank = {module: i for i, module in enumerate(self._builtin)}
                self._entries = dict(sorted(self._entries.items(), key=lambda e: rank.get(e[1].__module__, len(rank))))

    def __getitem__(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(self.unknown(name)) from None

    def get(self, name: str) -> T | None:
        self._load()
        return self._entries.get(name)

    def unknown(self, name: object) -> str:
        """The message for a name that is not registered, with a suggestion."""
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown {self.what} '{name}'{hint} (choose one of {', '.join(names)})"

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
