"""Reading configs and listing methods is cheap: no torch, scikit-learn, Ray or torch-geometric.

A command line that only validates a config, or a Ray driver that only plans, must answer at once;
one stray top-level ``import torch`` costs seconds. The check runs in a fresh interpreter, since this
one has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "sklearn", "ray", "torch_geometric")
# Config-only modules stay clear of the data stack too.
DATA_STACK = ("anndata", "pandas", "scipy", "numpy")

READ_LIGHT_NAMES = """
import json, sys
import ssl_st, ssl_st.impute, ssl_st.models, ssl_st.registry, ssl_st.tasks
from ssl_st.impute import ImputeConfig
from ssl_st.models import PRETRAINING, Architecture, BarlowTwinsConfig, GPMaskConfig, RandomMaskConfig
from ssl_st.tasks import CellTypeConfig, FineTuneConfig

methods = {name: PRETRAINING[name]().__class__.__name__ for name in PRETRAINING}
Architecture(units=(64, 16)), ImputeConfig("spage"), CellTypeConfig(), FineTuneConfig()
print(json.dumps({"methods": methods, "modules": sorted(sys.modules)}))
"""


def test_configs_and_the_method_registry_import_nothing_heavy():
    done = subprocess.run([sys.executable, "-c", READ_LIGHT_NAMES], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["methods"] == {
        "random-mask": "RandomMaskConfig",
        "gp-mask": "GPMaskConfig",
        "barlow-twins": "BarlowTwinsConfig",
    }
    loaded = {name.split(".")[0] for name in result["modules"]}
    assert not loaded & {*HEAVY, *DATA_STACK}, sorted(loaded & {*HEAVY, *DATA_STACK})


def test_heavy_names_still_load_from_the_same_places():
    from ssl_st.impute import impute, impute_checked
    from ssl_st.models import CheckpointError, SSLModel, resolve_device
    from ssl_st.tasks import CoverageError, zero_shot

    assert SSLModel.__module__ == "ssl_st.models.base" and resolve_device("cpu").type == "cpu"
    assert issubclass(CheckpointError, ValueError) and issubclass(CoverageError, ValueError)
    assert callable(impute) and callable(impute_checked) and callable(zero_shot)
