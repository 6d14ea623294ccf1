"""README.md's tables are rendered from committed files (benchmarks/readme_tables.py), never typed in."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REQUIRED = ["results", "sweep", "sweep_paired", "performance", "targets", "shards", "scale_estimate"]


def load_tables():
    if "readme_tables" not in sys.modules:
        spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["readme_tables"] = module
        spec.loader.exec_module(module)
    return sys.modules["readme_tables"]


rt = load_tables()
MARKED = rt.marked(README.read_text())


@pytest.mark.parametrize(("name", "text"), MARKED, ids=[f"{i}-{name}" for i, (name, _) in enumerate(MARKED)])
def test_marked_readme_table_is_its_rendering_from_the_committed_files(name, text):
    problems = rt.problem(name, text, ROOT)
    assert not problems, f"README table {name!r}: {problems[0][1]}\n(run `python benchmarks/readme_tables.py --write`)"


def test_readme_marks_the_tables_that_have_committed_sources():
    names = [name for name, _ in MARKED]
    assert set(REQUIRED) <= set(names), f"README.md lacks markers for {sorted(set(REQUIRED) - set(names))}"
    assert set(names) <= set(rt.TABLES)


# --- renderers on small synthetic inputs ------------------------------------------------------------------------


def compare_json(transfer=0.9923, scratch=0.9939, reached=9) -> dict:
    return {"pretrain": {"test_accuracy": 0.9186}, "frozen_head": {"test_accuracy": 0.9872},
            "transfer": {"test_accuracy": transfer, "test_loss": 0.027384, "epochs_to_threshold": reached,
                         "train_seconds": 129.7, "best_val_accuracy": 0.99},
            "scratch": {"test_accuracy": scratch, "test_loss": 0.023979, "epochs_to_threshold": 5,
                        "train_seconds": 221.44, "best_val_accuracy": 0.99},
            "gain": {"test_accuracy": round(transfer - scratch, 6)}, "threshold": 0.99}


def stats(mean, low=None, high=None, n=1) -> dict:
    return {"mean": mean, "ci95_low": low, "ci95_high": high, "n": n, "std": None}


def efficiency(budgets=(1000, 100), low=None) -> dict:
    """A data_efficiency.json; one seed (no intervals) unless `low` is given (then every interval is mean ± low)."""
    def s(mean):
        return stats(mean, None if low is None else mean - low, None if low is None else mean + low)
    runs = {"transfer": 0.9, "frozen": 0.8, "scratch": 0.85, "transfer_minus_scratch": 0.05,
            "frozen_minus_scratch": -0.05, "transfer_minus_frozen": 0.1}
    return {run: {str(b): s(v) for b in budgets} for run, v in runs.items()}


def test_rows_render_empty_cells_as_in_the_readme():
    assert rt.row(["a", "", "b", ""]) == "| a | | b | |"


def test_interval_formats_mean_and_signed_interval_or_mean_alone_for_one_seed():
    assert rt.interval(stats(0.825833, 0.810026, 0.841641, n=3)) == "0.8258 [0.8100, 0.8416]"
    assert rt.interval(stats(-0.031933, -0.054451, -0.009416), signed=True) == "-0.0319 [-0.0545, -0.0094]"
    assert rt.interval(stats(0.000767, -0.004976, 0.006509), signed=True) == "+0.0008 [-0.0050, +0.0065]"
    assert rt.interval(stats(0.9)) == "0.9000" and rt.interval(stats(-0.01), signed=True) == "-0.0100"


def test_results_table_rows_bars_and_frozen_epochs():
    table = rt.render_results(compare_json(), frozen_epochs=3, bar={"pretrain": 0.92, "finetune": 0.993,
                                                                     "scratch": 0.99})
    assert table.splitlines() == [
        "| model | test accuracy | bar | test loss | epochs to 0.99 val. acc. | train seconds |",
        "|---|---|---|---|---|---|",
        "| Fashion-MNIST pretrain | 0.9186 | ≥ 0.92 | | | |",
        "| MNIST frozen head only (epochs 1–3) | 0.9872 | | | | |",
        "| MNIST transfer (frozen head + fine-tune) | 0.9923 | ≥ 0.993 | 0.0274 | 9 | 130 |",
        "| MNIST from scratch | 0.9939 | ≥ 0.99 | 0.0240 | 5 | 221 |"]
    assert "| 0.0274 | not reached | 130 |" in rt.render_results(compare_json(reached=None), 5, bar={})


def test_results_bars_are_run_py_bars():
    bars = rt.bars()
    assert set(bars) == {"pretrain", "finetune", "scratch"} and all(0 < v < 1 for v in bars.values())
    assert f"| ≥ {bars['scratch']:g} |" in rt.render_results(compare_json(), 5).splitlines()[-1]


def test_gain_is_signed_and_falls_back_to_the_difference():
    assert rt.gain(compare_json()) == "-0.0016"
    without = compare_json(transfer=0.995, scratch=0.99)
    del without["gain"]
    assert rt.gain(without) == "+0.0050"


def test_sweep_tables_sort_budgets_numerically_with_separators_and_handle_one_seed():
    table = rt.render_sweep(efficiency())
    assert table.splitlines() == [
        "| labels | transfer | frozen only | scratch | transfer − scratch (paired) |", "|---:|---|---|---|---|",
        "| 100 | 0.9000 | 0.8000 | 0.8500 | +0.0500 |", "| 1,000 | 0.9000 | 0.8000 | 0.8500 | +0.0500 |"]
    paired = rt.render_sweep_paired(efficiency(budgets=(60000,), low=0.01))
    assert paired.splitlines() == ["| labels | frozen − scratch | transfer − frozen |", "|---:|---|---|",
                                   "| 60,000 | -0.0500 [-0.0600, -0.0400] | +0.1000 [+0.0900, +0.1100] |"]


def test_sweep_cost_table():
    runs = [{"round": r, "side": side, "seed": 0, "budgets": [100, 1000], "processes": n, "seconds": s}
            for r in (0, 1) for side, n, s in (("old", 2, 80.0), ("new", 1, 60.0))]
    cost = {"runs": runs, "total_seconds": {"old": 160.0, "new": 120.0},
            "seconds_per_point": {"old": 13.33, "new": 10.0}, "new_over_old": 0.75}
    header = ["| version | processes per seed | seconds per seed (mean over rounds) | seconds per point "
              "| ratio new/old | peak RSS MB (largest process) |", "|---|---:|---:|---:|---:|---:|"]
    assert rt.render_sweep_cost(cost).splitlines() == [  # a report from before peak RSS was recorded
        *header, "| old | 2 | 80.0 | 13.33 | | |", "| new | 1 | 60.0 | 10.00 | 0.750 | |"]
    cost["peak_rss_mb"] = {"old": 2419, "new": 2387}
    assert rt.render_sweep_cost(cost).splitlines()[2:] == [
        "| old | 2 | 80.0 | 13.33 | | 2,419 |", "| new | 1 | 60.0 | 10.00 | 0.750 | 2,387 |"]


def test_times_table_shows_peak_rss_where_recorded():
    times = {"sweep": {"command": "dvc repro data_efficiency", "seconds": 600.0, "machine": "Xeon", "date": "d",
                       "peak_rss_mb": 2387},
             "predict": {"command": "predict x", "seconds": 4.0, "machine": "Xeon", "date": "d", "items": 10,
                         "items_per_second": 2.5}}
    assert rt.render_times(times).splitlines()[2:] == [
        "| sweep | `dvc repro data_efficiency` | 600.0 | 10.0 | | 2,387 | Xeon, d |",
        "| predict | `predict x` | 4.0 | 0.1 | 2 | | Xeon, d |"]


def test_frozen_phase_table_and_summary():
    spec = importlib.util.spec_from_file_location("frozen_phase", ROOT / "benchmarks" / "frozen_phase.py")
    frozen_phase = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(frozen_phase)
    rounds = [{"reference": {"seconds": s_ref, "test_accuracy": 0.9886},
               "project": {"seconds": s_proj, "test_accuracy": a_proj}}
              for s_ref, s_proj, a_proj in ((100.0, 30.0, 0.9851), (120.0, 20.0, 0.9853), (90.0, 25.0, 0.9853))]
    report = frozen_phase.summarize(rounds)
    # medians of each side, not of the per-round ratios; the last round's accuracies (every round's are equal
    # on one CPU type: the runs are deterministic)
    assert report["median_seconds"] == {"reference": 100.0, "project": 25.0} and report["speedup"] == 4.0
    assert report["test_accuracy"] == {"reference": 0.9886, "project": 0.9853}
    assert rt.render_frozen_phase(report).splitlines()[2:] == [
        "| reference frozen phase (5 head epochs) | 100.0, 120.0, 90.0 | 100.0 | 0.9886 |",
        "| `frozen_head` | 30.0, 20.0, 25.0 | 25.0 | 0.9853 |",
        "| **speedup** (reference / project, medians) | | 4.00x | |"]


def test_scale_out_tables():
    shard = {"shard": "1/2", "stages": ["sweep@100-0", "sweep@300-0"], "trained": ["sweep@100-0"],
             "restored": ["sweep@300-0"], "seconds": 70.25, "pull_seconds": 3.0, "repro_seconds": 60.0,
             "push_seconds": 7.25, "bytes_per_point": 1234}
    report = {"shards": [shard], "estimate_seconds": {"1": 1000.0, "2": 520.0},
              "collector": {"seconds": 20.0, "steps": {"repro --pull": 20.0}, "trained": 0, "restored": 2}}
    assert rt.render_shards(report).splitlines()[2:] == [
        "| shard 1/2 | 2 | 1 | 1 | 70.2 (3.0 / 60.0 / 7.2) | 1,234 |",
        "| collector: `dvc repro --pull data_efficiency` in a fresh clone | 2 | 0 | 2 | 20.0 | |",
    ]
    assert rt.render_scale_estimate(report).splitlines()[2:] == [
        "| 1 | 1000 | 16.7 | 1.0× |", "| 2 | 520 | 8.7 | 1.9× |"]


def test_experiments_table_has_one_column_per_file(tmp_path):
    (tmp_path / "benchmarks" / "experiments").mkdir(parents=True)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "benchmarks" / "experiments" / "previous-defaults.json").write_text(
        json.dumps(compare_json(transfer=0.9889, scratch=0.9911)))
    (tmp_path / "metrics" / "compare.json").write_text(json.dumps(compare_json()))
    assert rt.render("experiments", tmp_path).splitlines() == [
        "| test accuracy | previous defaults | defaults |", "|---|---|---|",
        "| Fashion-MNIST pretrain | 0.9186 | 0.9186 |", "| MNIST frozen head only | 0.9872 | 0.9872 |",
        "| MNIST transfer | 0.9889 | 0.9923 |", "| MNIST scratch | 0.9911 | 0.9939 |",
        "| gain (transfer − scratch) | -0.0022 | -0.0016 |"]


def test_recipes_table_is_recipes_py_render():
    results = {"P1": {"what": "pretrain 5 epochs", "stages": {"pretrain": {
        "epochs": 5, "val_accuracy": 0.91234, "val_loss": 0.25, "seconds_per_epoch": 27.04}}}}
    row = "| P1 | pretrain 5 epochs | pretrain | 0.9123 | 0.2500 | 5 | 27.0 |"
    assert rt.render_recipes(results).splitlines()[-1] == row


# --- markers, --write and --check on a synthetic repository -------------------------------------------------------


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repository with the sources of results and sweep only, and a README marking results, sweep and recipes."""
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "compare.json").write_text(json.dumps(compare_json()))
    (tmp_path / "metrics" / "data_efficiency.json").write_text(json.dumps(efficiency(low=0.01)))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"frozen_head": {"epochs": 2}}))
    (tmp_path / "README.md").write_text(
        "# T\n\nprose\n\n<!-- table: results -->\n| stale |\n<!-- /table -->\n\nmore prose\n\n"
        "<!-- table: sweep -->\n<!-- /table -->\n\n<!-- table: recipes -->\n| kept |\n<!-- /table -->\nend\n")
    return tmp_path


def run_cli(repo: Path, *args: str) -> int:
    return rt.main([*args, "--readme", str(repo / "README.md"), "--root", str(repo)])


def test_write_replaces_marked_tables_skips_missing_sources_and_keeps_the_prose(repo, capsys):
    assert run_cli(repo, "--write") == 0
    assert "skipped table recipes: benchmarks/recipes.json is missing" in capsys.readouterr().err
    readme = (repo / "README.md").read_text()
    results = rt.render("results", repo)
    assert "(epochs 1–2)" in results
    assert readme == ("# T\n\nprose\n\n<!-- table: results -->\n" + results + "\n<!-- /table -->\n\nmore prose\n\n"
                      "<!-- table: sweep -->\n" + rt.render("sweep", repo) + "\n<!-- /table -->\n\n"
                      "<!-- table: recipes -->\n| kept |\n<!-- /table -->\nend\n")
    assert run_cli(repo, "--write") == 0 and (repo / "README.md").read_text() == readme  # idempotent


def test_check_names_each_stale_table_with_a_diff_and_each_missing_source(repo, capsys):
    assert run_cli(repo, "--check") == 1
    err = capsys.readouterr().err
    assert "table results: differs" in err and "-| stale |" in err and "+| MNIST from scratch |" in err
    assert "table sweep: differs" in err and "table recipes: source benchmarks/recipes.json is missing" in err
    run_cli(repo, "--write")
    capsys.readouterr()
    assert run_cli(repo, "--check") == 1
    err = capsys.readouterr().err
    assert "results" not in err and "sweep" not in err and "recipes.json is missing" in err
    readme = (repo / "README.md").read_text()
    (repo / "README.md").write_text(re.sub(r"<!-- table: recipes -->.*?<!-- /table -->\n", "", readme, flags=re.S))
    assert run_cli(repo, "--check") == 0


def test_unknown_or_unbalanced_markers_are_errors(repo):
    assert rt.check("<!-- table: nope -->\n| x |\n<!-- /table -->\n", repo) == [
        ("nope", f"unknown table 'nope' (known: {', '.join(rt.TABLES)})")]
    for bad in ("<!-- table: results -->\n| x |\n", "| x |\n<!-- /table -->\n",
                "<!-- table: results -->\n<!-- table: sweep -->\n<!-- /table -->\n"):
        with pytest.raises(SystemExit, match="README"):
            rt.blocks(bad)
    (repo / "README.md").write_text("<!-- table: nope -->\n<!-- /table -->\n")
    with pytest.raises(SystemExit, match="unknown table 'nope'"):
        run_cli(repo, "--write")
