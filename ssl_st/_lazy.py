"""PEP 562 lazy attributes: a package names its heavy members without importing them.

Reading a config (``ssl_st.models.RandomMaskConfig``) should not cost a torch import, yet
``from ssl_st.models import SSLModel`` should keep working. A package lists its heavy names and the
submodule that defines each; the first access imports that submodule and caches the value on the
package, so later reads are plain attribute look-ups.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``; ``names`` maps an attribute to the (relative)
    module that defines it, e.g. ``{"SSLModel": ".base"}``."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
