"""Config validation of experiments.yaml and the stability of cell ids."""

from __future__ import annotations

import pytest

from grid.config import load_config
from grid.plan import expand
from grid.schema import ConfigError

from .conftest import REPO, TINY_CONFIG, run_cli, tiny_config


def ids(path) -> dict[str, str]:
    return {c.label(): c.cell_id for c in expand(load_config(path)).cells}


def test_the_shipped_experiments_yaml_is_valid():
    plan = expand(load_config(REPO / "experiments.yaml"))
    assert len(plan.cells) >= 27
    assert {c.mode for c in plan.cells} >= {"zero-shot", "pca"}


def test_same_config_same_ids_even_when_reformatted(tmp_path):
    a = tiny_config(tmp_path, name="a.yaml")
    b = tmp_path / "b.yaml"
    # same content, different layout: comments, key order, flow vs block style
    b.write_text("# reformatted\n" + a.read_text().replace("name: tiny\nseeds: [1, 2]", "seeds:\n  - 1\n  - 2\nname: tiny"))
    assert ids(a) == ids(b)
    assert len(set(ids(a).values())) == len(ids(a))


def test_a_change_renews_exactly_the_cells_it_affects(tmp_path):
    base = ids(tiny_config(tmp_path, name="a.yaml", epochs=2))
    more_epochs = ids(tiny_config(tmp_path, name="b.yaml", epochs=3))
    changed = {label for label in base if base[label] != more_epochs[label]}
    # only cells evaluating the pretrained model depend on its training epochs
    assert changed == {label for label in base if "/random-mask/" in label}

    more_seeds = tmp_path / "c.yaml"
    more_seeds.write_text(tiny_config(tmp_path, name="d.yaml").read_text().replace("seeds: [1, 2]", "seeds: [1, 2, 3]"))
    extended = ids(more_seeds)
    assert len(extended) == len(base) * 3 // 2
    assert all(extended[label] == cell_id for label, cell_id in base.items())


def test_unknown_key_names_file_line_and_suggestion(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(TINY_CONFIG.format(epochs=2, extra_datasets="").replace("    pca_components: 16", "    pca_componets: 16"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problem = info.value.problems[0]
    assert problem.file == str(path)
    assert problem.line == path.read_text().splitlines().index("    pca_componets: 16") + 1
    assert "did you mean 'pca_components'" in problem.message


def test_cross_references_are_checked(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(TINY_CONFIG.format(epochs=2, extra_datasets="") + "    datasets: [merscop]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "unknown dataset 'merscop'; did you mean 'merscope'?" in str(info.value)
    # reported where it was written, not at the top of the file
    (problem,) = info.value.problems
    assert problem.line == len(path.read_text().splitlines()) and problem.field == "tasks[0].datasets[0]"


def test_cross_references_point_at_their_line(tmp_path):
    path = tmp_path / "experiments.yaml"
    text = TINY_CONFIG.format(epochs=2, extra_datasets="").replace("reference: atlas", "reference: atlass")
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.line == text.splitlines().index("reference: atlass") + 1 and "did you mean 'atlas'" in problem.message
    path.write_text(TINY_CONFIG.format(epochs=2, extra_datasets="") + "resources:\n  pretrian: {cpus: 1}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.field == "resources.pretrian" and "did you mean 'pretrain'" in problem.message
    assert problem.line == len(path.read_text().splitlines())


def test_wrong_types_and_values_are_all_reported(tmp_path):
    path = tmp_path / "experiments.yaml"
    text = TINY_CONFIG.format(epochs="many", extra_datasets="").replace("flavour: xenium", "flavour: merfish")
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    report = str(info.value)
    assert "models[0].pretrain.epochs" in report and "merfish" in report
    assert len(info.value.problems) == 2


def test_cli_reports_config_errors_with_exit_2(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text("name: x\nsedes: [1]\n")
    result = run_cli("plan", str(path))
    assert result.returncode == 2
    assert "did you mean 'seeds'" in result.stderr
    missing = run_cli("plan", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_dataset_paths_are_relative_to_the_config_and_must_exist(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.h5ad").write_bytes(b"")
    extra = "  - {name: mine, source: h5ad, path: data/mine.h5ad}\n"
    config = load_config(tiny_config(tmp_path, extra_datasets=extra))
    assert config.dataset("mine").path == str(tmp_path / "data" / "mine.h5ad")

    missing = "  - {name: gone, source: h5ad, path: data/gone.h5ad}\n"
    with pytest.raises(ConfigError) as info:
        load_config(tiny_config(tmp_path, extra_datasets=missing, name="b.yaml"))
    assert "datasets[3].path" in str(info.value) and "gone.h5ad does not exist" in str(info.value)
