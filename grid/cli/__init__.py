"""The ``ssl-st`` command line.

- :mod:`grid.cli.experiments`: ``plan``, ``run``, ``status``, ``query`` over an experiment grid;
- :mod:`grid.cli.models`: ``embed``, ``pretrain``, ``models pull``;
- :mod:`grid.cli.data`: ``data import|pull|list``;
- :mod:`grid.cli.cluster`: ``cluster``, spatial domains of one section.

Exit codes: 0 success; 1 some cells failed (they are recorded as rows); 2 bad input (config, SQL,
paths); 130 interrupted.
"""

from . import cluster, data, experiments, models  # noqa: F401  (each registers its commands)
from . import report  # noqa: F401  (ssl-st report)
from .common import app

__all__ = ["app"]
