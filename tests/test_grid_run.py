"""The grid end to end on real Ray: run, rerun, failures as rows, query (kill -9 and resume: tests/test_fault_injection.py)."""

from __future__ import annotations

import json

import anndata as ad
import pytest

from grid.config import load_config
from grid.plan import expand
from grid.store import ResultStore

from .conftest import run_cli_here, tiny_config

pytestmark = pytest.mark.ray


def test_run_records_every_cell_rerun_recomputes_nothing_and_query_reads_it(tmp_path, ray_address, tiny_run, monkeypatch):
    # the first run on a fresh results directory is the session's (conftest.tiny_run); this test
    # reruns and queries a copy of what it recorded
    config, first = tiny_run.config, tiny_run.first
    results = tiny_run.copy_results(tmp_path / "results")
    plan = expand(load_config(config))
    assert len(plan.cells) == 2 * 3 * 2  # datasets x (2 models zero-shot + pca) x seeds
    table = ResultStore(results).table().to_pandas()
    assert set(table["cell_id"]) == {c.cell_id for c in plan.cells}
    assert (table["status"] == "done").all()
    scores = table[table["kind"] == "metric"]
    assert set(scores["metric"]) == {"macro_f1", "weighted_f1", "accuracy"}
    assert scores["value"].between(0, 1).all()
    # zero-shot cells used the trained encoder: their config names the model artifact
    zs = table[(table["mode"] == "zero-shot") & (table["model"] == "random-mask")]
    assert json.loads(zs["config"].iloc[0])["model"]["artifact"]["model"]["method"] == "random-mask"
    assert "mean ± sd over seeds" in first.stdout and "merscope" in first.stdout
    assert_details_match_rows(results, table)

    files_before = {p.name: p.stat().st_mtime_ns for p in ResultStore(results).files()}
    # the rerun as the README's first command ends: `--report DIR` writes the page and says where it is
    monkeypatch.setenv("SSL_ST_CACHE", str(tmp_path / "cache"))  # the report's UMAP cache; nothing is built
    report = tmp_path / "report"
    second = run_cli_here("run", str(config), "--results", str(results), "--address", ray_address, "--report",
                          str(report), check=True)
    assert "nothing to run" in second.stderr
    assert {p.name: p.stat().st_mtime_ns for p in ResultStore(results).files()} == files_before
    assert "mean ± sd over seeds" in second.stdout
    assert f"report: {report / 'index.html'}" in " ".join(second.stdout.split())
    page = (report / "index.html").read_text()
    assert 'id="fig-confusion__cell-type__merscope"' in page and 'id="fig-umap__xenium"' in page
    assert "<td>cell-type</td><td class=\"num\">12</td>" in page  # the config's cells, all done
    bad = run_cli_here("run", str(config), "--results", str(results), "--report", str(results))
    assert bad.returncode == 2 and f"--report {results}: that folder holds the results" in " ".join(bad.stderr.split())

    shown = run_cli_here("plan", str(config), "--results", str(results), check=True)
    assert "12 cells" in shown.stdout and "artifacts: 5/5 built" in shown.stdout

    # and `ssl-st query` reads the same store
    sql = "SELECT dataset, mode, count(*) AS n FROM results WHERE metric = 'macro_f1' GROUP BY ALL ORDER BY ALL"
    csv = run_cli_here("query", sql, "--results", str(results), "--format", "csv", check=True)
    assert csv.stdout.splitlines()[0] == "dataset,mode,n"
    assert "merscope,pca,2" in csv.stdout
    rows = json.loads(run_cli_here("query", sql, "--results", str(results), "--format", "json", check=True).stdout)
    assert {r["mode"] for r in rows} == {"pca", "zero-shot"}
    bad = run_cli_here("query", "SELECT nope FROM results", "--results", str(results))
    assert bad.returncode == 2 and "nope" in bad.stderr


def test_failed_cell_becomes_a_row_and_the_grid_goes_on(tmp_path, ray_address, tiny_run):
    broken = tmp_path / "broken.h5ad"
    adata = ad.AnnData(
        X=__import__("numpy").ones((40, 5), dtype="float32"),
    )
    adata.obs["cell_type"] = ["a", "b"] * 20
    adata.write_h5ad(broken)
    # its genes are not in the models' vocabulary: it plans (labels exist) and fails at run time
    extra = f"  - {{name: broken, source: h5ad, path: {broken}}}\n"
    config = tiny_config(tmp_path, extra_datasets=extra)
    plan = expand(load_config(config))
    # the tiny grid as the session ran it (conftest.tiny_run: its models trained, its cells recorded),
    # less its xenium cells of seed 1: this run computes those beside the broken ones, and must finish them
    results = tiny_run.copy_results(tmp_path / "results")
    store = ResultStore(results)
    assert set(store.statuses()) < {c.cell_id for c in plan.cells}  # adding a dataset kept the others' ids
    good = [c for c in plan.cells if c.dataset == "xenium" and c.seed == 1]
    for cell in good:
        store.path(cell.cell_id).unlink()
    run = run_cli_here("run", str(config), "--results", str(results), "--address", ray_address)
    assert run.returncode == 1, run.stderr
    assert f"running {3 * 2 + len(good)} of {len(plan.cells)} cells" in run.stderr
    table = ResultStore(results).table().to_pandas()
    failed = table[table["status"] == "failed"]
    assert set(failed["dataset"]) == {"broken"}
    assert len(failed) == 3 * 2  # every broken cell is one row: (2 models + pca) x 2 seeds
    assert failed["error"].str.contains("map onto").all()
    assert failed["metric"].isna().all()
    assert (table[table["dataset"] != "broken"]["status"] == "done").all()
    assert {c.cell_id for c in good} <= set(table[table["status"] == "done"]["cell_id"])  # computed in this run

    status = run_cli_here("status", str(config), "--results", str(results))
    assert status.returncode == 1
    assert "failed: 6" in status.stdout and "map onto" in status.stdout

    # the reruns (in this process too: their messages are checked, not their process; `ssl-st run`
    # in a process of its own, with its exit status: tests/test_run_faults.py, tests/test_run_lock.py)
    again = run_cli_here("run", config, "--results", results, "--address", ray_address)
    assert "nothing to run" in again.stderr and "--retry-failed" in again.stderr
    retried = run_cli_here("run", config, "--results", results, "--address", ray_address, "--retry-failed")
    assert "running 6 of" in retried.stderr


# kill -9 then resume (only the missing cells run, the recorded ones keep their files): merged into
# tests/test_fault_injection.py::test_killed_runs_resume_to_the_same_store, which kills the same
# grid (conftest.tiny_run's) after its first cell and resumes it; one grid run fewer in the suite.


ZOO_CONFIG = """\
name: zoo
seeds: [1]
reference: atlas
datasets:
  - {{name: atlas, flavour: atlas, n_cells: 1200}}
  - {{name: merscope, flavour: merscope, n_cells: 500}}
models:
  - {{name: rm, method: random-mask, encoder: {{units: [64, 32, 16]}}, pretrain: {{epochs: 2}}}}
  - {{name: gp, method: gp-mask, programs: demo, encoder: {{units: [64, 32, 16]}}, pretrain: {{epochs: 2}}}}
  - {{name: bt, method: barlow-twins, encoder: {{units: [64, 32, 16], dropout: 0.0}}, pretrain: {{epochs: 2, batch_size: 128}}}}
  - {{name: published, method: checkpoint, checkpoint: {checkpoint}}}
  - {{name: random, method: random-init, encoder: {{units: [64, 32, 16]}}}}
tasks:
  - name: cell-type
    modes: [zero-shot, fine-tune, supervised, pca]
    fine_tune: {{max_epochs: 3, patience: 2}}
    supervised_encoder: {{units: [64, 32, 16]}}
    pca_components: 16
"""


def test_every_method_and_mode_runs_in_the_grid(tmp_path, ray_address):
    from ssl_st import datasets

    from .published_fixtures import write_masked_checkpoint

    # a checkpoint in the published Lightning layout over the atlas's genes, with its var.parquet
    atlas = datasets.generate("atlas", n_cells=1200)
    from ssl_st.genes import Vocabulary

    Vocabulary.from_var(atlas.var).to_parquet(tmp_path / "var.parquet")
    write_masked_checkpoint(tmp_path / "RandomMask.ckpt", n_genes=atlas.n_vars, with_optimizer=False)
    config = tmp_path / "zoo.yaml"
    config.write_text(ZOO_CONFIG.format(checkpoint=tmp_path / "RandomMask.ckpt"))
    results = tmp_path / "results"
    run_cli_here("run", config, "--results", results, "--address", ray_address, check=True)
    table = ResultStore(results).table().to_pandas()
    assert (table["status"] == "done").all()
    cells = table.groupby(["mode", "model"], dropna=False).size()
    # zero-shot: 5 models; fine-tune: 4 (random-init is the supervised baseline); supervised; pca
    assert len(table["cell_id"].unique()) == 5 + 4 + 1 + 1
    fine = table[table["mode"] == "fine-tune"]
    assert {"macro_f1", "head_macro_f1", "best_epoch"} <= set(fine["metric"])
    assert set(fine["model"]) == {"rm", "gp", "bt", "published"}, cells
    assert (table[table["kind"] == "metric"]["value"].between(0, 1)).all()
    assert_details_match_rows(results, table)


def assert_details_match_rows(results, table) -> None:
    """Every cell kept its test predictions, which score exactly what its rows say; frozen encoders
    kept their embedding (every cell of these small sections, in the model's output width)."""
    from grid import details
    from ssl_st.metrics import classification

    store = ResultStore(results)
    for cell in table.drop_duplicates("cell_id").itertuples():
        predictions = store.details(cell.cell_id, details.PREDICTIONS)
        assert predictions is not None, cell
        n_test = table[(table["cell_id"] == cell.cell_id) & (table["metric"] == "n_test")]["value"].item()
        assert len(predictions) == n_test
        recorded = table[(table["cell_id"] == cell.cell_id) & (table["metric"] == "macro_f1")]["value"].item()
        assert classification(predictions["true"], predictions["predicted"])["macro_f1"] == pytest.approx(recorded)
        embedding = store.details(cell.cell_id, details.EMBEDDING)
        if cell.mode != "zero-shot":
            assert embedding is None, cell
            continue
        n_cells = table[(table["cell_id"] == cell.cell_id) & (table["metric"] == "n_cells")]["value"].item()
        width = 64 if cell.model == "published" else 16  # the published layout ends in 64 dimensions
        assert details.embedding_matrix(embedding).shape == (n_cells, width)
        assert set(embedding["obs"]) >= set(predictions["obs"])


def test_mouse_through_orthologs_and_coverage_floor(tmp_path, ray_address):
    extra = (
        "  - {name: mouse, flavour: slideseq-mouse, n_cells: 400, orthologs: demo}\n"
        "  - {name: mouse-as-human, flavour: slideseq-mouse, n_cells: 400, species: human}\n"
    )
    config = tiny_config(tmp_path, extra_datasets=extra)
    text = config.read_text().replace("modes: [zero-shot, pca]", "modes: [pca]\n    datasets: [mouse, mouse-as-human, merscope]")
    config.write_text(text.replace("pca_components: 16", "pca_components: 16\n    min_coverage: 0.99"))
    results = tmp_path / "results"
    run = run_cli_here("run", config, "--results", results, "--address", ray_address)
    assert run.returncode == 1, run.stderr
    table = ResultStore(results).table().to_pandas()
    by_dataset = table.groupby("dataset")
    # mouse genes reach the human vocabulary through orthologs
    mouse = by_dataset.get_group("mouse")
    assert (mouse["status"] == "done").all()
    assert mouse[mouse["metric"] == "genes_mapped"]["value"].min() > 1000
    # declared human, but the IDs are ENSMUSG: refused with the fix
    wrong = by_dataset.get_group("mouse-as-human")
    assert (wrong["status"] == "failed").all() and wrong["error"].str.contains("set species: mouse").all()
    # merscope maps 300 of its 305 features (5 blank barcodes), under the 0.99 floor
    floor = by_dataset.get_group("merscope")
    assert (floor["status"] == "failed").all() and floor["error"].str.contains("min_coverage 99%").all()


def test_an_imputed_panel_is_a_dataset_like_any_other(tmp_path, ray_address):
    extra = "  - {name: xenium-spage, source: imputed, base: xenium, impute: {method: spage, n_pv: 10, k: 20}}\n"
    config = tiny_config(tmp_path, extra_datasets=extra)
    config.write_text(config.read_text().replace("modes: [zero-shot, pca]", "modes: [pca]\n    datasets: [xenium-spage]"))
    results = tmp_path / "results"
    run_cli_here("run", config, "--results", results, "--address", ray_address, check=True)
    table = ResultStore(results).table().to_pandas()
    assert (table["status"] == "done").all() and set(table["dataset"]) == {"xenium-spage"}
    r = table[table["metric"] == "imputation_holdout_r"]["value"]
    assert len(r) == 2 and (r > 0.05).all()  # held-out panel genes are recovered better than chance
    coverage = table[table["metric"] == "genes_mapped"]["value"]
    assert (coverage > 1000).all()  # the panel now reaches thousands of vocabulary genes
    artifact = next((results / "artifacts" / "data").glob("xenium-spage-*.h5ad"))
    assert len(ad.read_h5ad(artifact).uns["ssl_st_imputation"]["holdout_pearson_r"]) == 8

