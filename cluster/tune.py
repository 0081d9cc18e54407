"""Tuning of spatial-domain settings with Ray Tune and Optuna, without looking at the labels.

A published ARI is only honest if the settings that produced it were chosen without the ground
truth. :func:`tune_domains` therefore optimises a *label-free* score by default:

    score = count_fit × (spatial coherence + expression separation) / 2

- spatial coherence = 1 − PAS: domains should be contiguous patches, not salt and pepper;
- expression separation = (silhouette of the domains on a fixed reference representation + 1) / 2:
  the PCA of the method's *input*, the same for every trial, so a trial cannot win by reshaping its
  own embedding; this keeps the search from preferring an over-smoothed graph that draws smooth
  but meaningless stripes;
- count_fit = min(found, wanted) / max(found, wanted): a Leiden head must reach ``n_domains``.

``objective="oracle"`` optimises ARI against the labels instead. It exists to measure the upper
bound that tuning could reach; its results say ``oracle`` wherever they are stored.

A search space names numeric settings of the method's class (``epochs``, ``learning_rate``, ``k``
for STAGATE; :meth:`TuneSettings.check` says which a class has), and a trial's values replace those
of the base settings with :func:`dataclasses.replace`.

Each trial runs :func:`cluster.domains.find_domains` once on the whole section (one report per
trial, so an early-stopping scheduler such as ASHA has nothing to stop). Optuna's TPE proposes the
settings; Ray places the trials with the resources given, so trials run side by side on a laptop
and spread over a cluster. The experiment directory is the checkpoint: calling again with the same
``storage`` resumes an interrupted run: trials that Tune's last save of the experiment (every 10 s
by default, ``TUNE_GLOBAL_CHECKPOINT_S``) marks finished are kept, the others run again.

:class:`Parameter`, :class:`TuneSettings` and :data:`TuneObjective` import nothing heavy (a config
reader needs them); Ray, Optuna, torch and the data are imported when a search runs.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from .settings import DomainConfig, DomainMethod, tunable_fields

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from anndata import AnnData

TuneObjective = Literal["label-free", "oracle"]

log = logging.getLogger(__name__)

# What a trial reports and a TuneOutcome keeps (Tune adds its own bookkeeping columns).
_METRIC_NAMES = frozenset(
    {"score", "label_free_score", "coherence", "separation", "count_fit", "ari", "nmi", "homogeneity",
     "completeness", "chaos", "pas", "asw", "n_domains"}
)


@dataclass(frozen=True)
class Parameter:
    """One dimension of the search: a range (``low``..``high``, optionally log-scaled or integer)
    or a list of ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.choices is None and (self.low is None or self.high is None or self.low >= self.high):
            raise ValueError("a tuned parameter needs low < high, or choices")
        if self.log and self.choices is None and self.low is not None and self.low <= 0:
            raise ValueError("a log-scaled parameter needs low > 0")

    def distribution(self) -> Any:
        import optuna.distributions as d

        if self.choices is not None:
            return d.CategoricalDistribution(list(self.choices))
        if self.integer:
            return d.IntDistribution(int(self.low), int(self.high), log=self.log)
        return d.FloatDistribution(float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class TuneSettings:
    """A search: ``space`` maps settings of the method (its numeric fields) to their ranges."""

    space: dict[str, Parameter]
    num_samples: int = 12
    max_concurrent: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    def __post_init__(self) -> None:
        if not self.space:
            raise ValueError("the search space is empty; name at least one setting to tune")
        if self.num_samples < 1 or self.max_concurrent < 1:
            raise ValueError("num_samples and max_concurrent must be at least 1")

    def check(self, settings_cls: type[DomainMethod]) -> None:
        """Raise ValueError if the space names a setting that is not a numeric field of ``settings_cls``."""
        tunable = tunable_fields(settings_cls)
        wrong = sorted(set(self.space) - set(tunable))
        if wrong:
            method = getattr(settings_cls, "name", settings_cls.__name__)
            raise ValueError(f"cannot tune '{wrong[0]}' of {method}; its tunable settings: {', '.join(tunable)}")


@dataclass(frozen=True)
class TuneOutcome:
    best: DomainConfig  # the base config with the best trial's settings
    score: float  # the optimised objective of the best trial
    metrics: dict[str, float]  # everything the best trial measured
    trials: pd.DataFrame = field(repr=False)  # one row per trial: its settings, score and metrics
    objective: TuneObjective = "label-free"
    resumed: bool = False


def label_free_score(
    coords: np.ndarray, domains: np.ndarray, reference: np.ndarray, n_domains: int | None, *, seed: int = 0
) -> dict[str, float]:
    """The label-free objective and its parts (see the module docstring)."""
    import numpy as np
    from sklearn.metrics import silhouette_score

    from .metrics import pas

    n_found = len(np.unique(domains))
    coherence = 1.0 - pas(coords, domains)
    if n_found < 2:
        separation = 0.0
    else:
        sample = min(len(domains), 3000)
        separation = (silhouette_score(reference, domains, sample_size=sample, random_state=seed) + 1.0) / 2.0
    count_fit = 1.0 if n_domains is None else min(n_found, n_domains) / max(n_found, n_domains)
    return {
        "label_free_score": count_fit * (coherence + separation) / 2.0,
        "coherence": coherence,
        "separation": float(separation),
        "count_fit": count_fit,
    }


def reference_features(adata: AnnData, config: DomainConfig, *, seed: int = 0) -> np.ndarray:
    """What the separation term measures domains on, the same for every trial: the PCA of the
    method's input as the ``gmm`` baseline makes it (with the method's expression settings where it
    has them), or the ``obsm`` embedding it reads."""
    from .methods.baselines import GMM

    shared = ("n_top_genes", "target_sum", "pca_components")
    own = {name: getattr(config.settings, name) for name in shared if hasattr(config.settings, name)}
    return GMM(**own).representation(adata, config.use_rep, seed=seed)


def _trial(params: dict[str, Any], *, adata: AnnData, base: DomainConfig, reference: np.ndarray,
           objective: TuneObjective, labels: str | None, spatial_key: str, seed: int) -> None:
    import numpy as np
    from ray import tune

    from ssl_st.threads import limit_threads

    from .domains import find_domains, output_key, score_domains

    limit_threads(max(1, int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1))))
    section = adata.copy()  # the shared copy in the object store is read-only
    config = replace(base, settings=replace(base.settings, **params))
    key = output_key(labels)
    find_domains(section, config, seed=seed, key_added=key)
    metrics = score_domains(section, key=key, labels=labels, spatial_key=spatial_key, library_key=base.library_key)
    domains = section.obs[key].to_numpy()
    metrics.update(label_free_score(np.asarray(section.obsm[spatial_key]), domains, reference, base.n_domains, seed=seed))
    metrics["score"] = metrics["ari"] if objective == "oracle" else metrics["label_free_score"]
    tune.report(metrics)


# How often the driver of a search on remote storage uploads its experiment state (Tune's default,
# 300 s, would lose minutes of finished trials to an interrupted run).
REMOTE_SYNC_S = 30


def _remote(filesystem: Any) -> dict[str, Any]:
    """The RunConfig arguments of an experiment on ``filesystem`` (none for a local directory)."""
    if filesystem is None:
        return {}
    from ray import tune

    return {"storage_filesystem": filesystem, "sync_config": tune.SyncConfig(sync_period=REMOTE_SYNC_S)}


def tune_domains(
    adata: AnnData,
    config: DomainConfig,
    tuning: TuneSettings,
    *,
    objective: TuneObjective = "label-free",
    storage: str | Path,
    storage_filesystem: Any = None,
    labels: str | None = None,
    spatial_key: str = "spatial",
    seed: int = 0,
) -> TuneOutcome:
    """Search ``tuning.space`` around ``config.settings`` and return the best config.

    ``storage`` is the experiment directory; if it holds an interrupted run of the same search,
    the run resumes. With ``storage_filesystem`` (a ``pyarrow.fs.FileSystem``, e.g. S3) ``storage``
    is a path on that filesystem: the experiment lives there, not on this node, and Tune syncs it
    every :data:`REMOTE_SYNC_S` seconds, so a search interrupted on one node resumes on another. ``labels`` is used for reporting in label-free mode and for the objective in
    oracle mode. Starts a local Ray instance if none is connected.
    """
    if objective not in get_args(TuneObjective):
        raise ValueError(f"objective must be label-free or oracle, not '{objective}'")
    tuning.check(type(config.settings))
    if objective == "oracle" and labels is None:
        raise ValueError("the oracle objective tunes on labels: name the label column (labels=...)")
    if labels is not None and labels not in adata.obs:
        raise KeyError(f"obs['{labels}'] not found; name the column of ground-truth domains")

    from optuna.samplers import TPESampler
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    if storage_filesystem is None:
        storage = Path(storage).resolve()
        name, parent = storage.name, str(storage.parent)
    else:
        storage = str(storage).rstrip("/")
        parent, name = posixpath.split(storage)
    reference = reference_features(adata, config, seed=seed)
    with_data = tune.with_parameters(
        _trial, adata=adata, base=config, reference=reference, objective=objective,
        labels=labels, spatial_key=spatial_key, seed=seed,
    )
    # Tune registers trainables cluster-wide by name: two searches running at once under one name
    # (a grid's label-free and oracle cells) would silently run each other's objective. A name
    # derived from the experiment directory is unique per search and stable for a resume.
    with_data.__name__ = "find_domains_" + hashlib.sha256(str(storage).encode()).hexdigest()[:12]
    trainable = tune.with_resources(with_data, {"cpu": tuning.cpus_per_trial, "gpu": tuning.gpus_per_trial})
    resumed = tune.Tuner.can_restore(str(storage), storage_filesystem=storage_filesystem)
    if resumed:
        log.info("resuming the tuning run in %s", storage)
        tuner = tune.Tuner.restore(str(storage), trainable=trainable, resume_unfinished=True, restart_errored=True,
                                   storage_filesystem=storage_filesystem)
    else:
        space = {name: p.distribution() for name, p in tuning.space.items()}
        # TPE's default 10 random start-up trials would make a short search pure random sampling
        sampler = TPESampler(seed=seed, n_startup_trials=max(2, min(10, tuning.num_samples // 2)))
        search = OptunaSearch(space=space, metric="score", mode="max", sampler=sampler)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(search, max_concurrent=tuning.max_concurrent),
                num_samples=tuning.num_samples,
            ),
            run_config=tune.RunConfig(name=name, storage_path=parent, verbose=0, **_remote(storage_filesystem)),
        )
    grid = tuner.fit()
    table = grid.get_dataframe()
    if table.empty or "score" not in table:
        errors = [str(r.error) for r in grid if r.error is not None]
        raise RuntimeError(f"no tuning trial finished; first error: {errors[0] if errors else 'unknown'}")
    best = grid.get_best_result(metric="score", mode="max")
    params = {name: best.config[name] for name in tuning.space}
    metrics = {k: float(v) for k, v in best.metrics.items() if isinstance(v, (int, float)) and k in _METRIC_NAMES}
    columns = [f"config/{n}" for n in tuning.space] + [c for c in table.columns if c in _METRIC_NAMES]
    best_config = replace(config, settings=replace(config.settings, **params))
    return TuneOutcome(best_config, float(best.metrics["score"]), metrics, table[columns], objective, resumed)
