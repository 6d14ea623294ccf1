"""The documents' hygiene, and tools/doc_tables.py on tiny synthetic inputs. Whether the committed tables match the
committed results is the project's check (`make docs-check`, run by .ci/run), not a test: a user's own results,
committed after `make repro`, cannot fail `make test`."""

import json
import re
from pathlib import Path

import pytest

from tools import doc_tables as dt

ROOT = Path(__file__).resolve().parents[1]
CMP, EFF = "metrics/compare.json", "metrics/data_efficiency.json"
# The tables each document must mark (the README's answer and results, the docs' depth).
REQUIRED = {"README.md": {"study_answer", "results", "times", "study_figure", "few_labels_answer"},
            "docs/own-images.md": {"few_labels", "few_labels_report", "own_images", "own_answer"},
            "docs/data-efficiency.md": {"answer", "sweep_figure", "budget_rule", "bn_momentum", "sweep", "sweep_paired",
                                        "sweep_findings"},
            "docs/study.md": {"study", "study_pairs", "mcnemar", "convergence", "font_pair", "font_pair_pairs",
                              "study_times"},
            "docs/performance.md": {"performance", "targets", "head_path"}, "docs/recipe.md": {"recipes"},
            "docs/history.md": {"history", "experiments"}, "docs/scaling-out.md": {"scale_out"}}


def test_documents_mark_their_tables_and_only_known_ones():
    for doc, names in REQUIRED.items():
        marked = set(dt.marked((ROOT / doc).read_text(), doc))
        assert names <= marked, f"{doc} lacks markers for {sorted(names - marked)}"
        assert marked <= set(dt.TABLES), f"{doc} marks unknown tables {sorted(marked - set(dt.TABLES))}"


def test_readme_is_at_most_250_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_local_links_and_images_of_the_documents_exist():
    for doc in dt.documents(ROOT):
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if not re.match(r"[a-z]+:", target):
                assert (doc.parent / target.split("#")[0]).exists(), f"{doc.name}: link to missing {target}"


def test_every_make_target_the_documents_name_exists():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    for doc in [*dt.documents(ROOT), ROOT / "CHANGELOG.md"]:
        # `make X`, and make at the start of a command line (after any VAR=value)
        named = set(re.findall(r"(?:`|^|=\S+ )make (?:[A-Z]+=\S+ )*([a-z][\w-]*)", doc.read_text(), flags=re.M))
        assert named <= targets, f"{doc.name} names make targets that do not exist: {sorted(named - targets)}"


# --- the renderers, on tiny synthetic inputs ----------------------------------------------------------------------


def compare_json(transfer=0.9923, scratch=0.9939, reached=9) -> dict:
    return {"pretrain": {"test_accuracy": 0.9186}, "frozen_head": {"test_accuracy": 0.9872},
            "transfer": {"test_accuracy": transfer, "test_loss": 0.027384, "epochs_to_threshold": reached,
                         "train_seconds": 129.7},
            "scratch": {"test_accuracy": scratch, "test_loss": 0.023979, "epochs_to_threshold": 5,
                        "train_seconds": 221.44},
            "gain": {"test_accuracy": round(transfer - scratch, 6)}, "threshold": 0.99}


def stats(mean, low=None, high=None, n=1) -> dict:
    return {"mean": mean, "ci95_low": low, "ci95_high": high, "n": n, "std": None}


def efficiency(budgets=(1000, 100), low=None) -> dict:
    """A data_efficiency.json; one seed (no intervals) unless `low` is given (then every interval is mean ± low)."""
    runs = {"transfer": 0.9, "frozen": 0.8, "scratch": 0.85, "transfer_minus_scratch": 0.05,
            "frozen_minus_scratch": -0.05, "transfer_minus_frozen": 0.1}
    return {run: {str(b): stats(v) if low is None else stats(v, v - low, v + low, n=5) for b in budgets}
            for run, v in runs.items()}


def test_intervals_and_the_line_that_says_where_and_when():
    assert dt.interval(stats(0.825833, 0.810026, 0.841641, n=3)) == "0.8258 [0.8100, 0.8416]"
    assert dt.interval(stats(-0.031933, -0.054451, -0.009416), signed=True) == "-0.0319 [-0.0545, -0.0094]"
    assert dt.interval(stats(0.9)) == "0.9000" and dt.interval(stats(-0.01), signed=True) == "-0.0100"
    assert dt.measured({}, "a.json") == "Where and when this was measured is not recorded in `a.json`."
    assert dt.measured({"machine": "A"}, "a.json") == "Measured on A (`a.json`, which records no date)."
    assert dt.measured({"machine": {"model": "A", "cores": 2}, "date": "d"}, "a.json", "; more\n  text") == (
        "Measured on A, 2 cores, d (`a.json`; more text).")


def test_results_table_with_bars_where_it_was_measured_and_missing_keys():
    assert dt.render("results", {CMP: compare_json() | {"date": "2026-12-01", "machine": "CPU A"}}).splitlines() == [
        "| model | test accuracy | bar | test loss | epochs to 0.99 val. acc. | train seconds |",
        "|---|---|---|---|---|---|", "| Fashion-MNIST pretrain | 0.9186 | ≥ 0.92 |  |  |  |",
        "| MNIST frozen head only (before fine-tuning) | 0.9872 |  |  |  |  |",
        "| MNIST transfer (frozen head + fine-tune) | 0.9923 | ≥ 0.993 | 0.0274 | 9 | 130 |",
        "| MNIST from scratch | 0.9939 | ≥ 0.993 | 0.0240 | 5 | 221 |", "",
        "Measured on CPU A, 2026-12-01 (`metrics/compare.json`)."]
    assert "| 0.0274 | not reached | 130 |" in dt.render("results", {CMP: compare_json(reached=None)})
    # without a machine in compare.json (the pipeline writes none): the devices the training stages recorded
    logs = {f"metrics/logs/{s}/metrics.json": {"devices": {"CPU:0": "B"}} for s in ("pretrain", "scratch")}
    assert dt.render("results", {CMP: compare_json()} | logs).endswith(
        "Measured on B (`metrics/compare.json`, which records no date).")
    # a results file from before a key existed, or no file: MissingSource (the table is left as it is)
    with pytest.raises(dt.MissingSource, match="threshold"):  # a key read through |fmt
        dt.render("results", {CMP: {k: v for k, v in compare_json().items() if k != "threshold"}})
    with pytest.raises(dt.MissingSource, match="metrics/data_efficiency.json"):
        dt.render("answer", {CMP: compare_json()})


def test_significance_and_verdicts_name_the_budgets_they_hold_at():
    def diff(*intervals):
        budgets = (100, 1000, 60000)
        return {str(b): stats(0.0, low, high, n=5) for b, (low, high) in zip(budgets, intervals, strict=True)}

    assert dt.significance(diff((-0.1, 0.1), (-0.1, 0.1), (-0.1, 0.1))) == (
        "not significant at any of the 3 budgets (each 95 % interval contains 0)")
    assert dt.significance(diff((0.01, 0.1), (-0.1, 0.1), (-0.2, -0.1))) == (
        "significantly above 0 at 100 labels, significantly below 0 at 60,000 labels and not significant at 1,000")
    assert dt.significance({"100": stats(0.05)}) == (  # one seed: no interval, so no claim
        "not significant at any of the 1 budgets (each 95 % interval contains 0)")
    verdicts = {"1000": {"verdict": "equivalent"}, "100": {"verdict": "inconclusive"},
                "60000": {"verdict": "equivalent"}, "300": {"verdict": None}}
    assert dt.verdicts(verdicts) == ("inconclusive at 100 labels; no interval at 300 labels; "
                                     "equivalent at 1,000 and 60,000 labels")
    eff = efficiency(low=0.01)
    assert dt.render("answer", {CMP: compare_json(), EFF: eff}) == (  # no margin: where the intervals lie
        "On all of MNIST, the transfer model scores 0.9923 on the test set and the same model trained from scratch "
        "0.9939 (-0.0016). With 100 to 1,000 labels (5 seeds), the paired gain of transfer over scratch is "
        "significantly above 0 at 100 and 1,000 labels.")
    for d in eff["transfer_minus_scratch"].values():
        d["verdict"] = "higher"
    assert dt.render("answer", {CMP: compare_json(), EFF: eff | {"margin": 0.005}}).endswith(
        "is higher at 100 and 1,000 labels (95 % intervals against an equivalence margin of ±0.5 points).")


def test_sweep_tables_sort_budgets_numerically_and_sign_the_differences():
    assert dt.render("sweep", {EFF: efficiency()}).splitlines() == [
        "| labels | transfer | frozen only | scratch | transfer − scratch (paired) |", "|---:|---|---|---|---|",
        "| 100 | 0.9000 | 0.8000 | 0.8500 | +0.0500 |", "| 1,000 | 0.9000 | 0.8000 | 0.8500 | +0.0500 |", "",
        "Where and when this was measured is not recorded in `metrics/data_efficiency.json`."]
    one = {EFF: efficiency(budgets=(60000,), low=0.01)}
    assert dt.render("sweep_paired", one).splitlines() == [
        "| labels | frozen − scratch | transfer − frozen |", "|---:|---|---|",
        "| 60,000 | -0.0500 [-0.0600, -0.0400] | +0.1000 [+0.0900, +0.1100] |"]
    assert dt.render("sweep_findings", one).splitlines()[1] == (
        "- **frozen − scratch** is significantly below 0 at 60,000 labels.")


def test_budget_rule_in_words():
    rule = {"batch_size": 128, "eval_every": 50, "head_fraction": 0.5, "min_epochs": 1.0, "steps": 300}
    text = dt.render("budget_rule", {EFF: {"budget_rule": rule}})
    assert "gets 300 optimizer steps in batches of 128" in text and "at least 1 pass over" in text
    assert "multiple of 50" in text and "spends 50 % of its steps on the head" in text and "\n" not in text
    assert "at least 2 passes over" in dt.render("budget_rule", {EFF: {"budget_rule": rule | {"min_epochs": 2}}})


def test_times_table_puts_the_make_commands_first_and_scale_out_names_no_module():
    times = {"sweep": {"command": "dvc repro data_efficiency", "seconds": 600.0, "machine": "X", "peak_rss_mb": 2387},
             "predict": {"command": "predict x", "seconds": 4.0, "machine": "X", "items_per_second": 2.5},
             "tests": {"command": "make test", "seconds": 905.2, "machine": "EPYC", "date": "e"}}
    assert dt.render("times", {"results/repro_times.json": times}).splitlines()[1:] == [
        "|---|---|---:|---:|---:|---|---|",
        "| tests | `make test` | 15 min 05 s |  |  | EPYC | e |",
        "| sweep | `dvc repro data_efficiency` | 10 min 00 s |  | 2,387 | X | not recorded |",
        "| predict | `predict x` | 4.0 s | 2 |  | X | not recorded |"]
    shard = {"shard 1/2 (make sweep-shard SHARD=1/2)": {"command": "python -m tlpipe.shard 1/2", "seconds": 580.5}}
    assert dt.render("scale_out", {"results/scale_out.json": shard}).splitlines()[2:] == [
        "| shard 1/2 (make sweep-shard SHARD=1/2) | 9 min 40 s |  | not recorded | not recorded |"]


def test_recipes_table_orders_variants_and_names_each_machine():
    stages = {"pretrain": {"epochs": 5, "val_accuracy": 0.91234, "val_loss": 0.25, "seconds_per_epoch": 27.04}}
    table = dt.render_recipes({name: {"what": what, "machine": m, "date": "d", "stages": stages}
                               for name, what, m in (("H1", "head", "B"), ("P10", "ten", "A"), ("P2", "two", "A"))})
    assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == ["| P2", "| P10", "| H1"]
    assert table.splitlines()[2] == "| P2 | two | pretrain | 0.9123 | 0.2500 | 5 | 27.0 | A | d |"


def test_history_and_experiments_tables_come_from_each_file_s_own_fields():
    files = {"results/history/old-recipe.json": compare_json(transfer=0.9889, scratch=0.9911) | {
                 "what": "the old recipe", "machine": "CPU B", "date": "2026-11-28", "note": "superseded"},
             "results/history/cost.json": {"what": "a cost", "machine": {"model": "CPU A", "cores": 2},
                                           "date": "2026-11-29", "note": "one-off"},
             CMP: compare_json() | {"machine": "CPU A"}}
    assert dt.render("history", files).splitlines()[2:] == [
        "| `results/history/old-recipe.json` | the old recipe | CPU B | 2026-11-28 | superseded |",
        "| `results/history/cost.json` | a cost | CPU A, 2 cores | 2026-11-29 | one-off |"]
    assert dt.render("experiments", files).splitlines() == [
        "| test accuracy | old recipe | defaults |", "|---|---|---|",
        "| Fashion-MNIST pretrain | 0.9186 | 0.9186 |", "| MNIST frozen head only | 0.9872 | 0.9872 |",
        "| MNIST transfer | 0.9889 | 0.9923 |", "| MNIST scratch | 0.9911 | 0.9939 |",
        "| gain (transfer − scratch) | -0.0022 | -0.0016 |", "| machine | CPU B | CPU A |",
        "| date | 2026-11-28 | not recorded |"]


# --- the command: --write and --check -------------------------------------------------------------------------------


def project(tmp_path: Path) -> Path:
    """A README with a stale results table, a doc whose table has no source yet, and compare.json."""
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "compare.json").write_text(json.dumps(compare_json()))
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# T\n\nprose\n\n<!-- table: results -->\n| stale |\n<!-- /table -->\n\nmore\n")
    (tmp_path / "docs" / "recipe.md").write_text("<!-- table: recipes -->\n| kept |\n<!-- /table -->\nend\n")
    return tmp_path


def test_write_renders_every_document_skips_missing_sources_and_keeps_the_prose(tmp_path, capsys):
    root = project(tmp_path)
    readme, doc = (root / "README.md").read_text(), (root / "docs" / "recipe.md").read_text()
    assert dt.main(["--write", "--root", str(root)]) == 0
    assert "docs/recipe.md: table recipes left as it is: results/recipes.json is missing" in capsys.readouterr().err
    assert (root / "README.md").read_text() == readme.replace("| stale |", dt.render("results", root))
    assert (root / "docs" / "recipe.md").read_text() == doc


def test_check_fails_on_a_stale_table_or_a_missing_source_and_passes_once_rendered(tmp_path, capsys):
    root = project(tmp_path)
    assert dt.main(["--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "-| stale |" in err and "+| MNIST transfer (frozen head + fine-tune) | 0.9923 |" in err
    assert "out of date: README.md, docs/recipe.md" in err
    dt.main(["--write", "--root", str(root)])
    (root / "docs" / "recipe.md").write_text("no tables\n")
    assert dt.main(["--check", "--root", str(root)]) == 0
    # a user's own results (a new compare.json): the check fails until `make docs` renders them
    (root / "metrics" / "compare.json").write_text(json.dumps(compare_json(transfer=0.9951)))
    assert dt.main(["--check", "--root", str(root)]) == 1


def test_unknown_or_unpaired_markers_are_errors(tmp_path):
    for bad in ("<!-- table: results -->\n| x |\n", "| x |\n<!-- /table -->\n",
                "<!-- table: results -->\n<!-- table: sweep -->\n<!-- /table -->\n"):
        with pytest.raises(SystemExit, match="unpaired"):
            dt.marked(bad)
    (tmp_path / "README.md").write_text("<!-- table: nope -->\n<!-- /table -->\n")
    with pytest.raises(SystemExit, match="unknown table 'nope'"):
        dt.main(["--write", "--root", str(tmp_path)])
