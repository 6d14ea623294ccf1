"""README.md's and docs/*.md's tables are rendered from the results files (tools/doc_tables.py), and the check
compares what git committed, so that a user's own `make repro` (which rewrites metrics/*.json) cannot fail it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import doc_tables as dt

ROOT = Path(__file__).resolve().parents[1]
# The tables each document must mark (the README's answer and results, the docs' depth).
REQUIRED = {"README.md": {"study_answer", "results", "times", "study_figure", "few_labels_answer"},
            "docs/own-images.md": {"few_labels", "few_labels_report", "own_images", "own_answer"},
            "docs/data-efficiency.md": {"answer", "sweep_figure", "budget_rule", "bn_momentum", "sweep", "sweep_paired",
                                        "sweep_findings"},
            "docs/study.md": {"study", "study_pairs", "mcnemar", "convergence", "font_pair", "font_pair_pairs",
                              "study_times"},
            "docs/performance.md": {"performance", "targets"}, "docs/recipe.md": {"recipes"},
            "docs/history.md": {"history", "experiments"}}


def test_committed_documents_are_their_tables_rendered_from_the_committed_files():
    try:
        found, count = dt.check_committed(ROOT)
    except dt.Skip as e:
        pytest.skip(str(e))
    assert not found, "\n".join(f"{doc}: table {name}: {what}" for doc, name, what in found) + (
        "\n(run `make docs` and commit the documents with the files they are rendered from)")
    assert count >= sum(len(names) for names in REQUIRED.values())


def test_documents_mark_their_tables_and_only_known_ones():
    for doc, names in REQUIRED.items():
        marked = {name for name, _ in dt.marked((ROOT / doc).read_text(), doc)}
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


# --- the committed-files check, on temporary git repositories ------------------------------------------------------


def compare_json(transfer=0.9923, scratch=0.9939, reached=9) -> dict:
    return {"pretrain": {"test_accuracy": 0.9186}, "frozen_head": {"test_accuracy": 0.9872},
            "transfer": {"test_accuracy": transfer, "test_loss": 0.027384, "epochs_to_threshold": reached,
                         "train_seconds": 129.7, "best_val_accuracy": 0.99},
            "scratch": {"test_accuracy": scratch, "test_loss": 0.023979, "epochs_to_threshold": 5,
                        "train_seconds": 221.44, "best_val_accuracy": 0.99},
            "gain": {"test_accuracy": round(transfer - scratch, 6)}, "threshold": 0.99}


def stats(mean, low=None, high=None, n=1) -> dict:
    return {"mean": mean, "ci95_low": low, "ci95_high": high, "n": n, "std": None}


def efficiency(budgets=(1000, 100), low=None, gain=0.05) -> dict:
    """A data_efficiency.json; one seed (no intervals) unless `low` is given (then every interval is mean ± low)."""
    def s(mean):
        return stats(mean, None if low is None else mean - low, None if low is None else mean + low,
                     n=1 if low is None else 5)
    runs = {"transfer": 0.9, "frozen": 0.8, "scratch": 0.85, "transfer_minus_scratch": gain,
            "frozen_minus_scratch": -0.05, "transfer_minus_frozen": 0.1}
    return {run: {str(b): s(v) for b in budgets} for run, v in runs.items()}


def git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false",
               "-c", "init.defaultBranch=main", "-C", str(repo), *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository whose committed README's tables are rendered from its committed metrics."""
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / "doc_tables.py", tmp_path / "benchmarks" / "doc_tables.py")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "compare.json").write_text(json.dumps(compare_json() | {"machine": "CPU A"}))
    (tmp_path / "metrics" / "data_efficiency.json").write_text(json.dumps(efficiency(low=0.01)))
    (tmp_path / "README.md").write_text("# T\n\n<!-- table: answer -->\n<!-- /table -->\n\nprose\n\n"
                                        "<!-- table: results -->\n<!-- /table -->\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "sweep.md").write_text("# S\n\n<!-- table: sweep -->\n<!-- /table -->\n")
    assert dt.write(tmp_path) == ["README.md", "docs/sweep.md"]
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "results and their tables")
    return tmp_path


def test_check_passes_when_only_the_workspace_metrics_differ_from_the_committed_ones(repo):
    # a user's own `make repro` on another CPU type: new metrics in the workspace, the committed README untouched
    (repo / "metrics" / "compare.json").write_text(json.dumps(compare_json(transfer=0.9951, scratch=0.9930)))
    (repo / "metrics" / "data_efficiency.json").write_text(json.dumps(efficiency(low=0.01, gain=-0.03)))
    workspace = {(doc, name) for doc, name, _ in dt.check_tree(repo)}
    assert workspace == {("README.md", "answer"), ("README.md", "results"), ("docs/sweep.md", "sweep")}
    assert dt.check_committed(repo) == ([], 3)
    # uncommitted edits of the documents (or of the renderer) do not count either
    (repo / "README.md").write_text("# T\n\n<!-- table: results -->\n| edited |\n<!-- /table -->\n")
    assert dt.check_committed(repo) == ([], 3)


def test_check_fails_when_the_committed_readme_differs_from_the_committed_metrics(repo):
    (repo / "metrics" / "compare.json").write_text(json.dumps(compare_json(transfer=0.9951, scratch=0.9930)))
    git(repo, "commit", "-q", "-am", "new metrics, README not re-rendered")
    found, count = dt.check_committed(repo)
    assert count == 3 and [(doc, name) for doc, name, _ in found] == [("README.md", "answer"), ("README.md", "results")]
    what = dict(((doc, name), what) for doc, name, what in found)[("README.md", "results")]
    assert "-| MNIST transfer (frozen head + fine-tune) | 0.9923 |" in what
    assert "+| MNIST transfer (frozen head + fine-tune) | 0.9951 |" in what
    dt.write(repo)  # `make docs`, then commit: passes again
    git(repo, "commit", "-q", "-am", "README re-rendered")
    assert dt.check_committed(repo) == ([], 3)


def test_check_fails_on_a_committed_table_whose_source_is_not_committed(repo):
    (repo / "docs" / "more.md").write_text("<!-- table: recipes -->\n<!-- /table -->\n")
    git(repo, "add", "docs/more.md")
    git(repo, "commit", "-q", "-m", "a table without its source")
    assert dt.check_committed(repo)[0] == [("docs/more.md", "recipes", "source results/recipes.json is missing")]


def test_check_skips_outside_a_git_work_tree_and_before_the_first_commit(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    (tmp_path / "plain").mkdir()
    with pytest.raises(dt.Skip, match="not inside a git work tree"):
        dt.check_committed(tmp_path / "plain")
    assert dt.main(["--check", "--root", str(tmp_path / "plain")]) == 0
    assert "skipped:" in capsys.readouterr().err
    git(tmp_path / "plain", "init", "-q")
    with pytest.raises(dt.Skip, match="no commit yet"):
        dt.check_committed(tmp_path / "plain")


def test_check_command_exits_1_naming_each_stale_table(repo, capsys):
    (repo / "metrics" / "compare.json").write_text(json.dumps(compare_json(transfer=0.9951)))
    git(repo, "commit", "-q", "-am", "stale README")
    assert dt.main(["--check", "--root", str(repo)]) == 1
    err = capsys.readouterr().err
    assert "README.md: table results: differs" in err and "README.md: table answer: differs" in err
    assert "docs/sweep.md" not in err


# --- the renderers, on small synthetic inputs ---------------------------------------------------------------------


def test_rows_render_empty_cells_and_intervals():
    assert dt.row(["a", "", "b", ""]) == "| a | | b | |"
    assert dt.interval(stats(0.825833, 0.810026, 0.841641, n=3)) == "0.8258 [0.8100, 0.8416]"
    assert dt.interval(stats(-0.031933, -0.054451, -0.009416), signed=True) == "-0.0319 [-0.0545, -0.0094]"
    assert dt.interval(stats(0.9)) == "0.9000" and dt.interval(stats(-0.01), signed=True) == "-0.0100"


def test_results_table_with_bars_and_where_it_was_measured(tmp_path):
    table = dt.render_results(compare_json() | {"date": "2026-12-01"}, "CPU A")
    assert table.splitlines() == [
        "| model | test accuracy | bar | test loss | epochs to 0.99 val. acc. | train seconds |",
        "|---|---|---|---|---|---|",
        "| Fashion-MNIST pretrain | 0.9186 | ≥ 0.92 | | | |",
        "| MNIST frozen head only (before fine-tuning) | 0.9872 | | | | |",
        "| MNIST transfer (frozen head + fine-tune) | 0.9923 | ≥ 0.993 | 0.0274 | 9 | 130 |",
        "| MNIST from scratch | 0.9939 | ≥ 0.993 | 0.0240 | 5 | 221 |",
        "",
        "Measured on CPU A, 2026-12-01 (`metrics/compare.json`)."]
    assert "| 0.0274 | not reached | 130 |" in dt.render_results(compare_json(reached=None), "x")
    # without a machine in compare.json: the devices the training stages recorded
    (tmp_path / "metrics" / "logs" / "pretrain").mkdir(parents=True)
    (tmp_path / "metrics" / "logs" / "pretrain" / "metrics.json").write_text(json.dumps({"devices": {"CPU:0": "B"}}))
    assert dt.pipeline_machine(compare_json(), tmp_path) == "B"
    assert dt.pipeline_machine(compare_json() | {"machine": "A"}, tmp_path) == "A"


def test_significance_names_the_budgets_on_each_side_of_zero():
    def diff(*intervals):
        budgets = (100, 1000, 60000)
        return {str(b): stats(0.0, low, high, n=5) for b, (low, high) in zip(budgets, intervals, strict=True)}

    assert dt.significance(diff((-0.1, 0.1), (-0.1, 0.1), (-0.1, 0.1))) == (
        "not significant at any of the 3 budgets (each 95 % interval contains 0)")
    assert dt.significance(diff((0.01, 0.1), (-0.1, 0.1), (-0.2, -0.1))) == (
        "significantly above 0 at 100 labels, significantly below 0 at 60,000 labels and not significant at 1,000")
    answer = dt.render_answer(compare_json(), efficiency(low=0.01))
    assert answer == ("On all of MNIST, the transfer model scores 0.9923 on the test set and the same model trained "
                      "from scratch 0.9939 (-0.0016). With 100 to 1,000 labels (5 seeds), the paired gain of transfer "
                      "over scratch is significantly above 0 at 100 and 1,000 labels.")


def test_sweep_tables_sort_budgets_numerically_and_say_where_they_were_measured():
    table = dt.render_sweep(efficiency() | {"machine": "CPU A", "date": "2026-12-01"})
    assert table.splitlines() == [
        "| labels | transfer | frozen only | scratch | transfer − scratch (paired) |", "|---:|---|---|---|---|",
        "| 100 | 0.9000 | 0.8000 | 0.8500 | +0.0500 |", "| 1,000 | 0.9000 | 0.8000 | 0.8500 | +0.0500 |", "",
        "Measured on CPU A, 2026-12-01 (`metrics/data_efficiency.json`)."]
    paired = dt.render_sweep_paired(efficiency(budgets=(60000,), low=0.01))
    assert paired.splitlines() == ["| labels | frozen − scratch | transfer − frozen |", "|---:|---|---|",
                                   "| 60,000 | -0.0500 [-0.0600, -0.0400] | +0.1000 [+0.0900, +0.1100] |"]
    assert dt.sweep_caption({}) == "Where and when this was measured is not recorded in `metrics/data_efficiency.json`."
    assert dt.sweep_caption({"machine": "A"}) == (
        "Measured on A (`metrics/data_efficiency.json`, which records no date).")


def test_budget_rule_in_words():
    rule = {"batch_size": 128, "eval_every": 50, "head_fraction": 0.5, "min_epochs": 1.0, "steps": 300}
    text = dt.render_budget_rule({"budget_rule": rule})
    assert "gets 300 optimizer steps in batches of 128" in text and "at least 1 pass over" in text
    assert "multiple of 50" in text and "spends 50 % of its steps on the head" in text


def test_times_table_puts_the_make_commands_first():
    times = {"sweep": {"command": "dvc repro data_efficiency", "seconds": 600.0, "machine": "Xeon", "date": "d",
                       "peak_rss_mb": 2387},
             "predict": {"command": "predict x", "seconds": 4.0, "machine": "Xeon", "date": "d", "items": 10,
                         "items_per_second": 2.5},
             "tests": {"command": "make test", "seconds": 905.2, "machine": "EPYC", "date": "e"}}
    assert dt.render_times(times).splitlines()[2:] == [
        "| tests | `make test` | 15 min 05 s | | | EPYC | e |",
        "| sweep | `dvc repro data_efficiency` | 10 min 00 s | | 2,387 | Xeon | d |",
        "| predict | `predict x` | 4.0 s | 2 | | Xeon | d |"]


def test_recipes_table_orders_variants_and_names_each_machine():
    def variant(what, machine):
        return {"what": what, "machine": machine, "date": "d", "stages": {"pretrain": {
            "epochs": 5, "val_accuracy": 0.91234, "val_loss": 0.25, "seconds_per_epoch": 27.04}}}

    table = dt.render_recipes({"H1": variant("head", "B"), "P10": variant("ten", "A"), "P2": variant("two", "A")})
    assert [line.split(" | ")[0] for line in table.splitlines()[2:]] == ["| P2", "| P10", "| H1"]
    assert table.splitlines()[2] == "| P2 | two | pretrain | 0.9123 | 0.2500 | 5 | 27.0 | A | d |"


def test_history_and_experiments_tables_come_from_each_file_s_own_fields(tmp_path):
    (tmp_path / "benchmarks" / "history").mkdir(parents=True)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "benchmarks" / "history" / "old-recipe.json").write_text(json.dumps(
        compare_json(transfer=0.9889, scratch=0.9911) | {"what": "the old recipe", "machine": "CPU B",
                                                          "date": "2026-11-28", "note": "superseded"}))
    (tmp_path / "benchmarks" / "history" / "cost.json").write_text(json.dumps(
        {"what": "a cost", "machine": {"model": "CPU A", "cores": 2}, "date": "2026-11-29", "note": "one-off"}))
    (tmp_path / "metrics" / "compare.json").write_text(json.dumps(compare_json() | {"machine": "CPU A"}))
    assert dt.render("history", tmp_path).splitlines()[2:] == [
        "| `results/history/old-recipe.json` | the old recipe | CPU B | 2026-11-28 | superseded |",
        "| `results/history/cost.json` | a cost | CPU A, 2 cores | 2026-11-29 | one-off |"]
    assert dt.render("experiments", tmp_path).splitlines() == [
        "| test accuracy | old recipe | defaults |", "|---|---|---|",
        "| Fashion-MNIST pretrain | 0.9186 | 0.9186 |", "| MNIST frozen head only | 0.9872 | 0.9872 |",
        "| MNIST transfer | 0.9889 | 0.9923 |", "| MNIST scratch | 0.9911 | 0.9939 |",
        "| gain (transfer − scratch) | -0.0022 | -0.0016 |", "| machine | CPU B | CPU A |",
        "| date | 2026-11-28 | not recorded |"]


# --- markers and `make docs` ----------------------------------------------------------------------------------------


def test_write_renders_every_document_skips_missing_sources_and_keeps_the_prose(tmp_path, capsys):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "compare.json").write_text(json.dumps(compare_json()))
    (tmp_path / "docs").mkdir()
    readme = "# T\n\nprose\n\n<!-- table: results -->\n| stale |\n<!-- /table -->\n\nmore prose\n"
    doc = "<!-- table: recipes -->\n| kept |\n<!-- /table -->\nend\n"
    (tmp_path / "README.md").write_text(readme)
    (tmp_path / "docs" / "recipe.md").write_text(doc)
    assert dt.main(["--write", "--root", str(tmp_path)]) == 0
    assert "docs/recipe.md: table recipes left as it is: results/recipes.json is missing" in capsys.readouterr().err
    assert (tmp_path / "README.md").read_text() == readme.replace("| stale |", dt.render("results", tmp_path))
    assert (tmp_path / "docs" / "recipe.md").read_text() == doc
    assert dt.write(tmp_path) == []  # idempotent


def test_unknown_or_unbalanced_markers_are_errors(tmp_path):
    assert dt.problems("<!-- table: nope -->\n| x |\n<!-- /table -->\n", tmp_path) == [
        ("nope", f"unknown table 'nope' (known: {', '.join(dt.TABLES)})")]
    for bad in ("<!-- table: results -->\n| x |\n", "| x |\n<!-- /table -->\n",
                "<!-- table: results -->\n<!-- table: sweep -->\n<!-- /table -->\n"):
        with pytest.raises(SystemExit, match="README"):
            dt.blocks(bad)
    (tmp_path / "README.md").write_text("<!-- table: nope -->\n<!-- /table -->\n")
    with pytest.raises(SystemExit, match="unknown table 'nope'"):
        dt.write(tmp_path)


def test_the_renderer_needs_only_the_standard_library():
    """`make docs` runs before (and without) the project's .venv: no third-party import in doc_tables.py."""
    source = (ROOT / "benchmarks" / "doc_tables.py").read_text()
    imported = set(re.findall(r"^(?:from|import) ([\w.]+)", source, flags=re.M))
    assert imported <= {"__future__", "argparse", "difflib", "importlib.util", "io", "json", "os", "re",
                        "subprocess", "sys", "tarfile", "tempfile", "collections.abc", "pathlib"}, imported
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-S", "-I", str(ROOT / "benchmarks" / "doc_tables.py"), "--help"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


def test_verdicts_group_the_budgets_by_what_their_intervals_say():
    difference = {"1000": {"verdict": "equivalent"}, "100": {"verdict": "inconclusive"},
                  "60000": {"verdict": "equivalent"}, "300": {"verdict": None}}
    assert dt.verdicts(difference) == ("inconclusive at 100 labels; no interval at 300 labels; "
                                       "equivalent at 1,000 and 60,000 labels")
