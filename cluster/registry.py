"""The spatial-domain methods and clustering heads there are, by the name a config gives them.

:data:`DOMAIN_METHODS` maps a method's name (``stagate``, ``graphst``, ``cellcharter``,
``neighbour-average``, ``gmm``, ``kmeans``, ``leiden``) to the frozen dataclass that holds that method's settings and carries its
behaviour: how it builds its representation, its spatial model if it has one, what its head sees
(see :class:`cluster.settings.DomainMethod`). :data:`HEADS` does the same for the heads that cut a
representation into domains (``gmm``, ``kmeans``, ``leiden``: :class:`cluster.settings.Head`
subclasses that run :mod:`cluster.heads`), which a method's ``head`` setting names.

Reading a registry imports the built-in modules named below, and nothing heavier: the settings
classes import torch, scikit-learn and torch-geometric inside the functions that train or cluster.
:func:`cluster.find_domains` runs a method through the settings instance it is handed and never
looks the method up by name, so a Ray worker that unpickles the settings of a method defined
elsewhere (a plugin, a test's toy method) runs it without this registry knowing it.

Adding a method (worked example)
--------------------------------

One new file with one decorated class, say ``cluster/methods/spagcn.py``::

    from __future__ import annotations

    from dataclasses import dataclass
    from typing import ClassVar

    from ..registry import DOMAIN_METHODS
    from ..settings import ExpressionSettings, SpatialMethod


    @DOMAIN_METHODS.register
    @dataclass(frozen=True, kw_only=True)
    class SpaGCN(ExpressionSettings, SpatialMethod):
        \"\"\"SpaGCN (Hu et al. 2021): a graph convolution over the spatial graph, then the mixture.\"\"\"

        name: ClassVar[str] = "spagcn"

        k: int = 8  # a graph setting with this method's own default
        epochs: int = 200  # the method's own setting: flat, and tunable because it is a number

        def from_expression(self, adata, *, seed):
            return self.expression(adata)  # log-normalised HVGs, per the ExpressionSettings fields

        def spatial_model(self, x, adjacency, run, info):
            from ..spagcn import fit_spagcn  # torch is imported here, not when settings are read

            return fit_spagcn(x, adjacency, epochs=self.epochs, seed=run.seed, device=run.device)

plus one line, ``"cluster.methods.spagcn",``, in ``builtin`` below. A config then says
``method: spagcn`` or ``per_method: {spagcn: {epochs: 100}}``, and a tuning space may name
``epochs`` or ``k``. A method defined outside this package registers itself the same way when its
module is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ssl_st.registry import Registry

if TYPE_CHECKING:
    from .settings import DomainMethod, Head

DOMAIN_METHODS: Registry[type[DomainMethod]] = Registry(
    "spatial-domain method",
    builtin=(
        "cluster.methods.stagate",
        "cluster.methods.graphst",
        "cluster.methods.cellcharter",
        "cluster.methods.baselines",
    ),
)
"""Spatial-domain methods by name: ``DOMAIN_METHODS["stagate"]`` is the settings class of STAGATE."""

HEADS: Registry[type[Head]] = Registry("clustering head", builtin=("cluster.settings",))
"""Clustering heads by name, as a method's ``head`` setting names them."""

__all__ = ["DOMAIN_METHODS", "HEADS"]
