"""The tables of README.md and docs/*.md, rendered from the results files: no number in them is typed by hand.

    make docs                                    render every marked table from the files in the workspace
    python3 tools/doc_tables.py --check     compare the documents with their tables, as committed at HEAD
    python3 tools/doc_tables.py results     print one table (of the names below) from the workspace

A table sits on its own lines between a pair of markers, in README.md or any docs/*.md:

    <!-- table: results -->
    | model | test accuracy | ... |
    <!-- /table -->

`--write` (what `make docs` runs) renders from the workspace, so after your own `make repro` it puts your
machine's numbers in; a table whose source file is missing is left as it is, with a message. `--check` (run by
tests/test_readme.py, hence by `make test`) compares what git committed: the documents at HEAD against their
tables rendered from the files at HEAD by this script as committed at HEAD (all from a `git archive HEAD`), so
neither a user's own run, which rewrites metrics/*.json, nor uncommitted work can fail it. Outside a git work tree
it skips, saying why. Standard library only: runs without the project's .venv.

Tables and their sources:

    answer          metrics/compare.json, metrics/data_efficiency.json (the README's finding, in words)
    results         metrics/compare.json (machine from its `machine` or the training logs' `devices`)
    times           results/repro_times.json (benchmarks/time_command.py)
    scale_out       results/scale_out.json (benchmarks/time_command.py: the sweep's shards and a collector)
    sweep           metrics/data_efficiency.json (test accuracy per run and budget, paired transfer - scratch)
    sweep_figure    metrics/data_efficiency/accuracy.png, and where and when from metrics/data_efficiency.json
    sweep_paired    metrics/data_efficiency.json (frozen - scratch, transfer - frozen)
    sweep_findings  metrics/data_efficiency.json (where each paired difference is significant, in words)
    budget_rule     metrics/data_efficiency.json (the budget rule it was computed under, in words)
    recipes         results/recipes.json (research/recipes.py)
    performance     results/report.json (benchmarks/run.py)
    targets         results/report.json and the targets below
    bn_momentum     results/history/sweep_bn_momentum.json
    experiments     results/history/*.json that hold a compare.json, and metrics/compare.json ("defaults")
    history         results/history/*.json (each file's what, machine, date and note: why it is history)
    own_images      results/own_images.json (research/own_images.py: the sweep on a folder, two sources)
    own_answer      results/own_images.json (its finding in words)
    few_labels      results/few_labels.json (research/few_labels.py: settings for a few labels, development set)
    few_labels_report  results/few_labels_report.json (the chosen settings on the set they are reported on)
    few_labels_answer  results/few_labels_report.json (the same, in words)
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = "<!-- table: {name} -->"
END = "<!-- /table -->"
MARKER = re.compile(r"<!-- table: (?P<name>[\w-]+) -->|<!-- /table -->")

# The accuracy bars (test set, default params) and the benchmark's targets: goals, not results.
BARS = {"pretrain": 0.92, "finetune": 0.993, "scratch": 0.993}
BAR_NAMES = {"pretrain": "pretrain", "finetune": "finetune (MNIST transfer)", "scratch": "scratch"}
TARGETS = {"time_ratio_total": 0.5, "frozen_head": 4.0, "noop_repro_seconds": 3.0, "peak_rss_mb": 3000}
# benchmarks/run.py: reference phase -> the project stage that does the same job
PHASES = {"pretrain": "pretrain", "frozen": "frozen_head", "finetune": "finetune", "scratch": "scratch"}
RUNS = ("transfer", "frozen", "scratch")
DIFFERENCES = {"transfer_minus_scratch": "transfer − scratch", "frozen_minus_scratch": "frozen − scratch",
               "transfer_minus_frozen": "transfer − frozen"}


class MissingSource(Exception):
    """A table's source file does not exist (yet)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: missing")
        self.path = path


class Skip(Exception):
    """The committed documents cannot be checked here (the reason is the message)."""


# --- formatting ------------------------------------------------------------------------------------------------


def row(cells: list[str]) -> str:
    """A Markdown table row; an empty cell renders as `| |`."""
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def labels(budget: str | int) -> str:
    return f"{int(budget):,}"


def interval(stats: dict, signed: bool = False, decimals: int = 4) -> str:
    """`0.8258 [0.8100, 0.8416]`, or signed `-0.0319 [-0.0545, -0.0094]`; the mean alone without an interval."""
    spec = f"{'+' if signed else ''}.{decimals}f"
    mean = format(stats["mean"], spec)
    if stats.get("ci95_low") is None or stats.get("ci95_high") is None:
        return mean
    return f"{mean} [{format(stats['ci95_low'], spec)}, {format(stats['ci95_high'], spec)}]"


def machine_name(record: dict, missing: str = "not recorded") -> str:
    """A record's `machine`: a CPU model string, or benchmarks/bench.py's cpu_info() dict."""
    machine = record.get("machine")
    if isinstance(machine, dict):
        cores = f", {machine['cores']} cores" if machine.get("cores") else ""
        return f"{machine.get('model', 'unknown CPU')}{cores}"
    return machine or missing


def measured(machine: str, date: str | None, source: str, more: str = "") -> str:
    """The line under a table that says where and when it was measured, from the source file's own record."""
    where = f"`{source}`{more}"
    if machine and date:
        return f"Measured on {machine}, {date} ({where})."
    if machine or date:
        return f"Measured on {machine or date} ({where}, which records no {'date' if machine else 'machine'})."
    return f"Where and when this was measured is not recorded in {where}."


def wall_time(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{seconds:.1f} s" if seconds < 60 else f"{minutes} min {rest:02d} s"


def listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# --- the pipeline's results -----------------------------------------------------------------------------------


def pipeline_machine(compare: dict, root: Path) -> str:
    """compare.json's `machine`, else the devices the training stages recorded in their DVCLive summaries."""
    if compare.get("machine"):
        return machine_name(compare)
    devices = []
    for summary in sorted((root / "metrics" / "logs").glob("*/metrics.json")):
        for name in json.loads(summary.read_text()).get("devices", {}).values():
            if name not in devices:
                devices.append(name)
    return " and ".join(devices)


def render_results(compare: dict, machine: str) -> str:
    """The README's results table, and where and when it was measured."""
    def bar(stage: str) -> str:
        return f"≥ {BARS[stage]:g}" if stage in BARS else ""

    def run_cells(m: dict) -> list[str]:
        reached = m.get("epochs_to_threshold")
        return [f"{m['test_loss']:.4f}", "not reached" if reached is None else str(reached),
                f"{m['train_seconds']:.0f}"]

    lines = [f"| model | test accuracy | bar | test loss | epochs to {compare['threshold']:g} val. acc. "
             "| train seconds |",
             "|---|---|---|---|---|---|",
             row(["Fashion-MNIST pretrain", f"{compare['pretrain']['test_accuracy']:.4f}", bar("pretrain"),
                  "", "", ""]),
             row(["MNIST frozen head only (before fine-tuning)", f"{compare['frozen_head']['test_accuracy']:.4f}",
                  "", "", "", ""]),
             row(["MNIST transfer (frozen head + fine-tune)", f"{compare['transfer']['test_accuracy']:.4f}",
                  bar("finetune"), *run_cells(compare["transfer"])]),
             row(["MNIST from scratch", f"{compare['scratch']['test_accuracy']:.4f}", bar("scratch"),
                  *run_cells(compare["scratch"])]),
             "",
             measured(machine, compare.get("date"), "metrics/compare.json")]
    return "\n".join(lines)


def gain(compare: dict) -> float:
    value = compare.get("gain", {}).get("test_accuracy")
    return compare["transfer"]["test_accuracy"] - compare["scratch"]["test_accuracy"] if value is None else value


def significance(difference: dict[str, dict]) -> str:
    """Where a paired difference's 95 % interval lies: above 0, below 0, or around it, budget by budget."""
    above, below, around = [], [], []
    for budget in sorted(difference, key=int):
        low, high = difference[budget].get("ci95_low"), difference[budget].get("ci95_high")
        if low is not None and low > 0:
            above.append(labels(budget))
        elif high is not None and high < 0:
            below.append(labels(budget))
        else:
            around.append(labels(budget))
    if not above and not below:
        return f"not significant at any of the {len(around)} budgets (each 95 % interval contains 0)"
    parts = [f"significantly above 0 at {listing(above)} labels"] if above else []
    parts += [f"significantly below 0 at {listing(below)} labels"] if below else []
    parts += [f"not significant at {listing(around)}"] if around else []
    return listing(parts)


def seeds(efficiency: dict) -> int:
    return max(s.get("n", 1) for s in efficiency["transfer"].values())


def budgets(efficiency: dict) -> list[str]:
    return sorted(efficiency["transfer"], key=int)


def render_answer(compare: dict, efficiency: dict) -> str:
    """The README's finding in words, from the two results files."""
    b = budgets(efficiency)
    return (f"On all of MNIST, the transfer model scores {compare['transfer']['test_accuracy']:.4f} on the test set "
            f"and the same model trained from scratch {compare['scratch']['test_accuracy']:.4f} "
            f"({gain(compare):+.4f}). With {labels(b[0])} to {labels(b[-1])} labels ({seeds(efficiency)} seeds), the "
            f"paired gain of transfer over scratch is {answer_verdicts(efficiency)}.")


def answer_verdicts(efficiency: dict) -> str:
    """The verdicts against the margin where data_efficiency.json has them, else where the intervals lie."""
    difference = efficiency["transfer_minus_scratch"]
    if "margin" in efficiency and all(d.get("verdict") for d in difference.values()):
        return (f"{verdicts(difference)} (95 % intervals against an equivalence margin of "
                f"±{efficiency['margin'] * 100:g} points)")
    return significance(difference)


def sweep_caption(efficiency: dict) -> str:
    return measured(machine_name(efficiency, ""), efficiency.get("date"), "metrics/data_efficiency.json")


def render_sweep_figure(efficiency: dict) -> str:
    """The sweep's committed figure (the data_efficiency stage draws it with the JSON), and where and when; for
    docs/data-efficiency.md, so the path goes up a folder."""
    return ("![MNIST test accuracy against labelled images: transfer, frozen and scratch, 95 % intervals]"
            "(../metrics/data_efficiency/accuracy.png)\n\n" + sweep_caption(efficiency))


def render_sweep(efficiency: dict) -> str:
    """Test accuracy per run and label budget, and the paired transfer − scratch difference."""
    lines = ["| labels | transfer | frozen only | scratch | transfer − scratch (paired) |", "|---:|---|---|---|---|"]
    for b in budgets(efficiency):
        lines.append(row([labels(b), *(interval(efficiency[run][b]) for run in RUNS),
                          interval(efficiency["transfer_minus_scratch"][b], signed=True)]))
    return "\n".join([*lines, "", sweep_caption(efficiency)])


def render_sweep_paired(efficiency: dict) -> str:
    """The other two paired differences."""
    lines = ["| labels | frozen − scratch | transfer − frozen |", "|---:|---|---|"]
    for b in budgets(efficiency):
        lines.append(row([labels(b), interval(efficiency["frozen_minus_scratch"][b], signed=True),
                          interval(efficiency["transfer_minus_frozen"][b], signed=True)]))
    return "\n".join(lines)


def render_budget_rule(efficiency: dict) -> str:
    """The sweep's budget rule in words, from the `budget_rule` that data_efficiency.json records."""
    r = efficiency["budget_rule"]
    passes = f"{r['min_epochs']:g} pass" + ("" if r["min_epochs"] == 1 else "es")
    return (f"Every run at every budget gets {r['steps']} optimizer steps in batches of {r['batch_size']} (the whole "
            f"training set when that is smaller), raised to at least {passes} over its training images and rounded "
            f"up to a multiple of {r['eval_every']}, the steps between validations. `transfer` spends "
            f"{r['head_fraction'] * 100:g} % of its steps on the head and the rest fine-tuning every layer; `frozen` "
            "spends all of them on the head.")


def render_sweep_findings(efficiency: dict) -> str:
    """Each paired difference's significance, one bullet each."""
    return "\n".join(f"- **{name}** is {significance(efficiency[key])}." for key, name in DIFFERENCES.items())


# --- the study: controls, verdicts, convergence ----------------------------------------------------------------

STUDY_PAIRS = {"transfer_minus_frozen": "transfer − frozen: what fine-tuning adds",
               "adabn_minus_frozen": "adabn − frozen: the target's BatchNorm statistics",
               "adabn_minus_random_frozen": "adabn − random_frozen: the source's learned features",
               "transfer_minus_depth3": "transfer − depth3: the head trained first"}


def verdicts(difference: dict[str, dict], unit: str = "labels") -> str:
    """A paired difference's verdicts (sweep.margin), grouped: `equivalent at 1,000 and 3,000 labels; ...`."""
    groups: dict[str, list[str]] = {}
    for budget in sorted(difference, key=int):
        groups.setdefault(difference[budget].get("verdict") or "no interval", []).append(labels(budget))
    return "; ".join(f"{verdict} at {listing(budgets)}" + (f" {unit}" if unit else "")
                     for verdict, budgets in groups.items())


def judged(difference: dict) -> str:
    """A paired difference's cell: `+0.0013 [-0.0025, +0.0051] inconclusive` (no verdict without an interval)."""
    return f"{interval(difference, signed=True)} {difference.get('verdict') or ''}".strip()


def budget_unit(report: dict) -> str:
    return "labels per class" if report.get("per_class") else "labels"


def render_gains(report: dict, source: str) -> str:
    """Every run minus scratch, per budget: paired mean, 95 % interval and verdict against the margin."""
    budgets = sorted(report["scratch"], key=int)
    unit = "per class" if report.get("per_class") else "labels"
    lines = [row(["run − scratch", *[f"{labels(b)} {unit}" for b in budgets]]), row(["---"] * (len(budgets) + 1))]
    for run in report["runs"]:
        if f"{run}_minus_scratch" in report:
            diff = report[f"{run}_minus_scratch"]
            lines.append(row([f"`{run}`", *[judged(diff[b]) for b in budgets]]))
    seeds = max(s["n"] for s in report["scratch"].values())
    more = (f"; {seeds} seeds, paired 95 % t-intervals, verdicts against ±{report['margin'] * 100:g} points"
            + (f", {wall_time(report['seconds'])} in all" if "seconds" in report else ""))
    return "\n".join([*lines, "", measured(machine_name(report, ""), report.get("date"), source, more)])


def render_study_pairs(report: dict) -> str:
    """The paired differences that separate the causes, per budget."""
    budgets = sorted(report["scratch"], key=int)
    lines = [row(["difference", *[labels(b) for b in budgets]]), row(["---"] * (len(budgets) + 1))]
    for key, name in STUDY_PAIRS.items():
        if key in report:
            lines.append(row([name, *[judged(report[key][b]) for b in budgets]]))
    return "\n".join(lines)


def render_convergence(report: dict, source: str) -> str:
    """Steps until validation accuracy reaches sweep.converge of scratch's best, transfer against scratch."""
    conv = report["convergence"]
    lines = [row(["labels", "scratch: steps", "transfer: steps", "transfer − scratch (paired)"]),
             "|---:|---|---|---|"]

    def count(stats: dict | None, signed: bool = False) -> str:  # steps: whole numbers
        return "never" if stats is None else interval(stats, signed, decimals=0)

    for budget in sorted(conv.get("scratch", {}), key=int):
        t, s = conv["transfer"][budget], conv["scratch"][budget]
        lines.append(row([labels(budget), f"{count(s['steps'])} ({s['reached']})",
                          f"{count(t['steps'])} ({t['reached']})",
                          "not every seed" if t["minus_scratch"] is None else count(t["minus_scratch"], signed=True)]))
    per_point = report["seconds_per_point"]
    more = (f"; steps to {conv['converge'] * 100:g} % of scratch's best validation accuracy, mean over the seeds that "
            f"reach it (how many in brackets), every {report['budget_rule']['eval_every']} steps")
    return "\n".join([*lines, "", measured(machine_name(report, ""), report.get("date"), source, more), "",
                      f"Pretraining took {report['pretrain_seconds']:.0f} s of training; one sweep point "
                      f"{per_point['transfer']:.1f} s for transfer and {per_point['scratch']:.1f} s for scratch "
                      f"(means over the budgets)."])


def render_mcnemar(compare: dict) -> str:
    test = compare["mcnemar"]
    return (f"On all of MNIST, transfer gets {test['transfer_only_correct']} test images right that scratch gets "
            f"wrong, and scratch {test['scratch_only_correct']} that transfer gets wrong: McNemar's exact test gives "
            f"p = {test['p_value']:.3g} (`metrics/compare.json`).")


def render_study_answer(study: dict, fonts: dict, compare: dict) -> str:
    """The README's answer to "does transfer help, and why", both pairs side by side."""
    def line(report: dict, pair: str) -> str:
        b = sorted(report["scratch"], key=int)
        seeds = max(s["n"] for s in report["scratch"].values())
        return (f"| {pair} | {labels(b[0])} to {labels(b[-1])} {budget_unit(report)}, {seeds} seeds | "
                f"{verdicts(report['transfer_minus_scratch'], '')} | {verdicts(report['frozen_minus_scratch'], '')} |")

    return "\n".join([
        "| source → target | labels | transfer − scratch | frozen − scratch |", "|---|---|---|---|",
        line(study, "Fashion-MNIST → MNIST"), line(fonts, "MNIST → font digits"), "",
        f"Verdicts of the paired 95 % intervals against ±{study['margin'] * 100:g} points of test accuracy "
        "(`metrics/study.json`, `results/font_pair.json`). " + render_mcnemar(compare)])


def render_study_figure(study: dict, fonts: dict) -> str:
    return ("![Gain over scratch against labels, Fashion-MNIST features on MNIST: every run and control, 95 % "
            "intervals, equivalence band](metrics/study/gain.png)\n"
            "![The same for MNIST features on font digits](docs/font_pair_gain.png)\n\n"
            + measured(machine_name(study, ""), study.get("date"), "metrics/study.json") + " "
            + measured(machine_name(fonts, ""), fonts.get("date"), "results/font_pair.json"))


# --- timings ---------------------------------------------------------------------------------------------------


def render_times(times: dict) -> str:
    """results/repro_times.json: the `make` commands first, then the rest in the file's order."""
    entries = sorted(times.items(), key=lambda item: not item[1]["command"].startswith("make "))
    lines = ["| what | command | wall time | items/s | peak RSS MB (largest process) | machine | date |",
             "|---|---|---:|---:|---:|---|---|"]
    for name, t in entries:
        rate = f"{t['items_per_second']:,.0f}" if "items_per_second" in t else ""
        peak = f"{t['peak_rss_mb']:,}" if "peak_rss_mb" in t else ""
        lines.append(row([name, f"`{t['command']}`", wall_time(t["seconds"]), rate, peak, machine_name(t),
                          t.get("date", "not recorded")]))
    return "\n".join(lines)


# --- the recipe search, the benchmark ----------------------------------------------------------------------------


def render_recipes(results: dict) -> str:
    """results/recipes.json: each variant's validation numbers per stage, where and when it ran."""
    lines = ["| variant | change | stage | val. accuracy (last epoch) | val. loss | epochs | s / epoch | machine "
             "| date |", "|---|---|---|---:|---:|---:|---:|---|---|"]
    for name in sorted(results, key=lambda n: ("PSTH".find(n[0]), int(re.sub(r"\D", "", n) or 0), n)):
        r = results[name]
        for stage, s in r["stages"].items():
            lines.append(row([name, r.get("what", ""), stage, f"{s['val_accuracy']:.4f}", f"{s['val_loss']:.4f}",
                              str(s["epochs"]), f"{s['seconds_per_epoch']:.1f}", machine_name(r),
                              r.get("date", "not recorded")]))
    return "\n".join(lines)


def render_performance(report: dict) -> str:
    """results/report.json: each phase, both sides, and where and when it ran."""
    ref, proj = report["reference"]["phases"], report["project"]["stages"]
    lines = ["| phase | reference s | project s | speedup | reference img/s | project img/s "
             "| reference test acc | project test acc | project peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for phase, stage in PHASES.items():
        r, p = ref[phase], proj[stage]
        lines.append(f"| {stage} | {r['seconds']:.1f} | {p['seconds']:.1f} | {r['seconds'] / p['seconds']:.2f}x "
                     f"| {r['images_per_second']:.0f} | {p['images_per_second']:.0f} | {r['test_accuracy']:.4f} "
                     f"| {p['test_accuracy']:.4f} | {p['peak_rss_mb']} |")
    lines.append(f"| **total** | {report['reference']['total_seconds']:.1f} | {report['project']['total_seconds']:.1f} "
                 f"| {report['speedup']['total']:.2f}x | | | | | {report['peak_rss_mb']} |")
    flags = ", ".join(report["machine"].get("flags", [])) if isinstance(report.get("machine"), dict) else ""
    more = f"; CPU flags {flags}" if flags else ""
    return "\n".join([*lines, "", measured(machine_name(report, ""), report.get("date"), "results/report.json",
                                           more)])


def below_reference(report: dict) -> list[str]:
    """The project stages whose test accuracy is below the reference's phase that does the same job."""
    accuracy = report["test_accuracy"]
    return [f"{stage} {accuracy['project'][stage]:.4f} < {accuracy['reference'][phase]:.4f}"
            for phase, stage in PHASES.items() if accuracy["project"][stage] < accuracy["reference"][phase]]


def render_targets(report: dict) -> str:
    """The benchmark's targets against a report, one row per target."""
    ref_total, proj_total = report["reference"]["total_seconds"], report["project"]["total_seconds"]
    accuracy = report["test_accuracy"]
    below = below_reference(report)
    reused = report["reference_reused"]
    note = "; reference from an earlier report" if reused else ""
    noop, rss, frozen = report["noop_repro_seconds"], report["peak_rss_mb"], report["speedup"]["frozen_head"]
    rows = [
        (f"project total wall time ≤ {TARGETS['time_ratio_total']:g}× the reference's",
         f"{report['time_ratio_total']:.2f}× ({proj_total:.1f} s against {ref_total:.1f} s{note})",
         proj_total <= TARGETS["time_ratio_total"] * ref_total),
        ("every phase's project test accuracy ≥ the reference's in the same run",
         ("below: " + ", ".join(below) if below else "all phases at or above")
         + (" (reference from an earlier report)" if reused else ""),
         not below),
    ]
    rows += [(f"{BAR_NAMES[stage]} test accuracy ≥ {bar:g}", f"{accuracy['project'][stage]:.4f}",
              accuracy["project"][stage] >= bar) for stage, bar in BARS.items()]
    rows += [
        (f"`frozen_head` ≥ {TARGETS['frozen_head']:g}× faster than the reference's frozen phase",
         f"{frozen:.2f}× faster", frozen >= TARGETS["frozen_head"]),
        (f"no-op `dvc repro` ≤ {TARGETS['noop_repro_seconds']:g} s",
         "not measured" if noop is None else f"{noop:.2f} s",
         noop is not None and noop <= TARGETS["noop_repro_seconds"]),
        (f"peak RSS per stage ≤ {TARGETS['peak_rss_mb']} MB", f"{rss} MB", rss <= TARGETS["peak_rss_mb"]),
    ]
    lines = ["| target | this report | met |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in rows]
    return "\n".join(lines)


# --- superseded results: results/history/ ---------------------------------------------------------------------


def render_bn_momentum(report: dict) -> str:
    """The sweep points re-run with another setting: mean validation accuracy per run, default against variant."""
    setting = ", ".join(report["set"])
    lines = [row(["run", "points", "default (mean val. accuracy)", f"{setting} (mean val. accuracy)"]),
             "|---|---:|---:|---:|"]
    for run, base in report["mean_val_accuracy"]["baseline"].items():
        n = sum(p["run"] == run for p in report["points"])
        lines.append(row([run, str(n), f"{base:.4f}", f"{report['mean_val_accuracy']['variant'][run]:.4f}"]))
    return "\n".join([*lines, "", measured(machine_name(report, ""), report.get("date"),
                                           "results/history/sweep_bn_momentum.json")])


EXPERIMENT_ROWS = [("Fashion-MNIST pretrain", "pretrain"), ("MNIST frozen head only", "frozen_head"),
                   ("MNIST transfer", "transfer"), ("MNIST scratch", "scratch")]


def is_compare(record: dict) -> bool:
    return all(isinstance(record.get(key), dict) and "test_accuracy" in record[key] for _, key in EXPERIMENT_ROWS)


def render_experiments(columns: dict[str, dict]) -> str:
    """compare.json files side by side (column name -> file): test accuracies, the gain, machine and date."""
    lines = [row(["test accuracy", *columns]), "|---" * (len(columns) + 1) + "|"]
    for label, key in EXPERIMENT_ROWS:
        lines.append(row([label, *(f"{c[key]['test_accuracy']:.4f}" for c in columns.values())]))
    lines.append(row(["gain (transfer − scratch)", *(f"{gain(c):+.4f}" for c in columns.values())]))
    lines.append(row(["machine", *(machine_name(c) for c in columns.values())]))
    lines.append(row(["date", *(c.get("date", "not recorded") for c in columns.values())]))
    return "\n".join(lines)


def render_history(files: dict[str, dict]) -> str:
    """results/history/: one row per file, from the file's own fields."""
    lines = ["| file | what it measured | machine | date | status |", "|---|---|---|---|---|"]
    for name, record in sorted(files.items(), key=lambda item: (item[1].get("date", ""), item[0])):
        lines.append(row([f"`{name}`", record.get("what", ""), machine_name(record), record.get("date", ""),
                          record.get("note", "")]))
    return "\n".join(lines)


# --- sources, read relative to a root: the workspace, or a checkout of HEAD ----------------------------------------


def load_json(root: Path, rel: str) -> dict:
    path = root / rel
    if not path.is_file():
        raise MissingSource(rel)
    return json.loads(path.read_text())


def history(root: Path) -> dict[str, dict]:
    files = sorted((root / "benchmarks" / "history").glob("*.json"))
    if not files:
        raise MissingSource("results/history/*.json")
    return {f"results/history/{f.name}": json.loads(f.read_text()) for f in files}


def experiment_columns(root: Path) -> dict[str, dict]:
    columns = {Path(name).stem.replace("-", " "): r for name, r in history(root).items() if is_compare(r)}
    compare = load_json(root, "metrics/compare.json")
    return columns | {"defaults": compare | {"machine": pipeline_machine(compare, root) or "not recorded"}}


# --- own images ------------------------------------------------------------------------------------------------


ARMS = {"transfer[mnist]": "transfer, MNIST-pretrained", "frozen[mnist]": "frozen, MNIST-pretrained",
        "transfer[fashion_mnist]": "transfer, Fashion-pretrained",
        "frozen[fashion_mnist]": "frozen, Fashion-pretrained", "scratch": "scratch"}


def arm_name(arm: str) -> str:
    return " − ".join(ARMS.get(part, part) for part in arm.split(" - "))


def render_own_images(report: dict) -> str:
    """results/own_images.json: test accuracy per arm and labels per class, then the paired differences."""
    budgets = [str(b) for b in report["budgets_per_class"]]
    lines = [row(["run", *[f"{b} per class" for b in budgets]]), row(["---"] * (len(budgets) + 1))]
    lines += [row([arm_name(arm), *[interval(report["arms"][arm][b]) for b in budgets]])
              for arm in ARMS if arm in report["arms"]]
    order = [f"{arm} - scratch" for arm in ARMS] + ["transfer[mnist] - transfer[fashion_mnist]"]
    pairs = sorted(report["paired"], key=lambda pair: order.index(pair) if pair in order else len(order))
    lines += [row([f"paired: {arm_name(pair)}", *[interval(report["paired"][pair][b], signed=True) for b in budgets]])
              for pair in pairs]
    images = report["images"]
    more = (f"; {len(report['classes'])} classes, {images['test']:,} test images, mean over {len(report['seeds'])} "
            f"seeds with 95 % t-intervals, {wall_time(report['seconds'])}")
    return "\n".join(lines) + "\n\n" + measured(report["machine"], report["date"], "results/own_images.json", more)


def render_own_answer(report: dict) -> str:
    """The own-images finding in words: each arm at each budget against scratch, significant or not."""
    parts = []
    for pair in ("transfer[mnist] - scratch", "transfer[fashion_mnist] - scratch",
                 "transfer[mnist] - transfer[fashion_mnist]"):
        if pair in report["paired"]:
            parts.append(f"{arm_name(pair)}: {significance(report['paired'][pair])}")
    budgets = listing([str(b) for b in report["budgets_per_class"]])
    return (f"On digits drawn from fonts never seen in training ({len(report['seeds'])} seeds, {budgets} labels per "
            f"class, paired 95 % intervals): " + "; ".join(parts) + ".")


def render_few_labels_answer(report: dict) -> str:
    """The recommended settings' accuracy on the report set, in words."""
    name = next(iter(report["candidates"])) if "recommended" not in report["candidates"] else "recommended"
    result = report["candidates"][name]
    draws = ", ".join(f"{r['accuracy']['transfer']:.4f}" for r in result["folders"].values())
    images = next(iter(result["folders"].values()))["images"]
    return (f"On real handwritten digits that are not MNIST (scikit-learn's UCI digits, scanned at 8×8), with "
            f"{images['train'] + images['val']} labelled images, these settings' transfer model scored "
            f"{result['mean']['transfer']:.4f} on the other {images['test']} (mean of {len(result['folders'])} draws "
            f"of the labels: {draws}), from scratch {result['mean']['scratch']:.4f}. "
            + measured(report["machine"], report["date"], "results/few_labels_report.json"))


def render_few_labels(report: dict) -> str:
    """benchmarks/few_labels*.json: each candidate's overrides and its models' mean accuracy over the folders."""
    folders = report["folders"]
    lines = [row(["candidate", "overrides", "transfer", "frozen head", "scratch", "stages' wall time"]),
             row(["---"] * 6)]
    for name, result in report["candidates"].items():
        overrides = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in result["overrides"].items()) or "(params.yaml)"
        mean = result["mean"]
        seconds = [sum(run["stage_seconds"].values()) for run in result["folders"].values()]
        lines.append(row([name, overrides, f"{mean['transfer']:.4f}", f"{mean['frozen_head']:.4f}",
                          f"{mean['scratch']:.4f}", wall_time(sum(seconds) / len(seconds))]))
    images = next(iter(next(iter(report["candidates"].values()))["folders"].values()))["images"]
    more = (f"; mean test accuracy over {listing(folders)}, each {images['train'] + images['val']} labelled and "
            f"{images['test']} test images")
    return "\n".join(lines) + "\n\n" + measured(report["machine"], report["date"], report["source"], more)


def results(root: Path) -> str:
    compare = load_json(root, "metrics/compare.json")
    return render_results(compare, pipeline_machine(compare, root))


TABLES: dict[str, Callable[[Path], str]] = {
    "answer": lambda root: render_answer(load_json(root, "metrics/compare.json"),
                                         load_json(root, "metrics/data_efficiency.json")),
    "results": results,
    "times": lambda root: render_times(load_json(root, "results/repro_times.json")),
    "scale_out": lambda root: render_times(load_json(root, "results/scale_out.json")),
    "sweep": lambda root: render_sweep(load_json(root, "metrics/data_efficiency.json")),
    "sweep_figure": lambda root: render_sweep_figure(load_json(root, "metrics/data_efficiency.json")),
    "sweep_paired": lambda root: render_sweep_paired(load_json(root, "metrics/data_efficiency.json")),
    "sweep_findings": lambda root: render_sweep_findings(load_json(root, "metrics/data_efficiency.json")),
    "budget_rule": lambda root: render_budget_rule(load_json(root, "metrics/data_efficiency.json")),
    "recipes": lambda root: render_recipes(load_json(root, "results/recipes.json")),
    "performance": lambda root: render_performance(load_json(root, "results/report.json")),
    "targets": lambda root: render_targets(load_json(root, "results/report.json")),
    "bn_momentum": lambda root: render_bn_momentum(load_json(root, "results/history/sweep_bn_momentum.json")),
    "experiments": lambda root: render_experiments(experiment_columns(root)),
    "history": lambda root: render_history(history(root)),
    "own_images": lambda root: render_own_images(load_json(root, "results/own_images.json")),
    "own_answer": lambda root: render_own_answer(load_json(root, "results/own_images.json")),
    "few_labels": lambda root: render_few_labels(load_json(root, "results/few_labels.json")
                                                 | {"source": "results/few_labels.json"}),
    "few_labels_answer": lambda root: render_few_labels_answer(load_json(root, "results/few_labels_report.json")),
    "study_answer": lambda root: render_study_answer(load_json(root, "metrics/study.json"),
                                                     load_json(root, "results/font_pair.json"),
                                                     load_json(root, "metrics/compare.json")),
    "study_figure": lambda root: render_study_figure(load_json(root, "metrics/study.json"),
                                                     load_json(root, "results/font_pair.json")),
    "study": lambda root: render_gains(load_json(root, "metrics/study.json"), "metrics/study.json"),
    "study_pairs": lambda root: render_study_pairs(load_json(root, "metrics/study.json")),
    "convergence": lambda root: render_convergence(load_json(root, "metrics/study.json"), "metrics/study.json"),
    "font_pair": lambda root: render_gains(load_json(root, "results/font_pair.json"), "results/font_pair.json"),
    "font_pair_pairs": lambda root: render_study_pairs(load_json(root, "results/font_pair.json")),
    "study_times": lambda root: render_times({name: t for name, t in load_json(root, "results/repro_times.json")
                                              .items() if name in ("make repro", "make study")}),
    "mcnemar": lambda root: render_mcnemar(load_json(root, "metrics/compare.json")),
    "few_labels_report": lambda root: render_few_labels(load_json(root, "results/few_labels_report.json")
                                                        | {"source": "results/few_labels_report.json"}),
}


def render(name: str, root: Path = ROOT) -> str:
    """Table `name` from the files under `root`; MissingSource if one is missing, KeyError if `name` is unknown."""
    if name not in TABLES:
        raise KeyError(f"unknown table {name!r} (known: {', '.join(TABLES)})")
    try:
        return TABLES[name](root)
    except KeyError as e:  # a results file from before the key existed: as good as missing, not an unknown table
        raise MissingSource(f"the key {e.args[0]!r} of table {name}'s source") from None


# --- markers in a document -----------------------------------------------------------------------------------------


def documents(root: Path) -> list[Path]:
    """README.md and docs/*.md under `root`, those that exist."""
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def blocks(text: str, where: str = "README.md") -> list[tuple[str, int, int]]:
    """(name, start, end) of each marked table: text[start:end] is what lies between its two markers."""
    out, open_ = [], None
    for m in MARKER.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        if m["name"] is not None:
            if open_ is not None:
                raise SystemExit(f"{where} line {line}: table {m['name']!r} starts inside table {open_[0]!r}")
            open_ = (m["name"], m.end())
        else:
            if open_ is None:
                raise SystemExit(f"{where} line {line}: {END} without a `<!-- table: NAME -->` before it")
            out.append((open_[0], open_[1], m.start()))
            open_ = None
    if open_ is not None:
        raise SystemExit(f"{where}: table {open_[0]!r} has no {END}")
    return out


def marked(text: str, where: str = "README.md") -> list[tuple[str, str]]:
    """Each marked table's name and its text between the markers (without the newlines around it)."""
    return [(name, text[start:end].removeprefix("\n").removesuffix("\n")) for name, start, end in blocks(text, where)]


def replace(text: str, tables: dict[str, str], where: str = "README.md") -> str:
    """`text` with each marked table in `tables` replaced by its rendering, on its own lines between the markers."""
    out, last = [], 0
    for name, start, end in blocks(text, where):
        if name in tables:
            out += [text[last:start], "\n", tables[name], "\n"]
            last = end
    return "".join([*out, text[last:]])


def problems(text: str, root: Path, where: str = "README.md") -> list[tuple[str, str]]:
    """(table, what is wrong) for each marked table of `text` that differs from its rendering from `root`'s
    files, whose name is unknown, or whose source is missing. Empty when the document is up to date."""
    found = []
    for name, table_text in marked(text, where):
        try:
            table = render(name, root)
        except KeyError as e:
            found.append((name, str(e.args[0])))
            continue
        except MissingSource as e:
            found.append((name, f"source {e.path} is missing"))
            continue
        if table_text != table:
            diff = difflib.unified_diff(table_text.splitlines(), table.splitlines(), where, "rendered", n=0,
                                        lineterm="")
            found.append((name, "differs from its rendering:\n" + "\n".join(list(diff)[2:])))
    return found


def check_tree(root: Path) -> list[tuple[str, str, str]]:
    """(document, table, what is wrong) for every marked table of the documents under `root`."""
    return [(doc.relative_to(root).as_posix(), name, what) for doc in documents(root)
            for name, what in problems(doc.read_text(), root, doc.relative_to(root).as_posix())]


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True)
    except FileNotFoundError:
        raise Skip("git is not installed: the committed documents cannot be checked") from None


def extract_head(root: Path, dest: Path) -> None:
    """The project at `root` as committed at HEAD, written into `dest`. Skip if there is no commit to read."""
    inside = git(root, "rev-parse", "--is-inside-work-tree")
    if inside.returncode or inside.stdout.strip() != b"true":
        why = inside.stderr.decode(errors="replace").strip().splitlines()
        raise Skip(f"{root} is not inside a git work tree ({why[0] if why else 'git says no'}): "
                   "the check compares what git committed, and nothing is")
    if git(root, "rev-parse", "--verify", "--quiet", "HEAD").returncode:
        raise Skip(f"{root}: no commit yet, so nothing committed to check")
    prefix = git(root, "rev-parse", "--show-prefix").stdout.decode().strip().rstrip("/")
    archive = git(root, "archive", "--format=tar", f"HEAD:{prefix}" if prefix else "HEAD")
    if archive.returncode:
        raise SystemExit(f"git archive HEAD failed: {archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
        else:  # Python before 3.11.4 / 3.12
            tar.extractall(dest)  # noqa: S202 (git's own archive of this repository)


def check_committed(root: Path = ROOT) -> tuple[list[tuple[str, str, str]], int]:
    """The problems of the documents committed at HEAD against their tables rendered from the files committed at
    HEAD by this script as committed at HEAD (so uncommitted work of any kind cannot fail it), and how many
    tables were checked. Raises Skip outside a git work tree, before the first commit, or when HEAD has no
    tools/doc_tables.py to render with."""
    with tempfile.TemporaryDirectory(prefix="doc-tables-") as tmp:
        head = Path(tmp)
        extract_head(root, head)
        script = head / "benchmarks" / "doc_tables.py"
        if not script.is_file():
            raise Skip("HEAD has no tools/doc_tables.py to render its tables with")
        spec = importlib.util.spec_from_file_location("doc_tables_at_head", script)
        committed = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(committed)
        found = committed.check_tree(head)
        count = sum(len(committed.blocks(d.read_text(), d.name)) for d in committed.documents(head))
    return found, count


# --- the command ------------------------------------------------------------------------------------------------


def write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)


def write(root: Path) -> list[str]:
    """Render every marked table of every document under `root` from `root`'s files; return what changed."""
    changed = []
    for doc in documents(root):
        where = doc.relative_to(root).as_posix()
        text = doc.read_text()
        tables = {}
        for name in dict.fromkeys(b[0] for b in blocks(text, where)):
            try:
                tables[name] = render(name, root)
            except KeyError as e:
                raise SystemExit(f"{where}: {e.args[0]}; nothing written") from None
            except MissingSource as e:
                print(f"{where}: table {name} left as it is: {e.path} is missing", file=sys.stderr)
        new = replace(text, tables, where)
        if new != text:
            write_text(doc, new)
            changed.append(where)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"tables to print (of: {', '.join(TABLES)})")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="render the marked tables of README.md and docs/*.md")
    mode.add_argument("--check", action="store_true", help="exit 1 if a committed table differs from its rendering "
                                                            "from the committed files")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project (default: this one)")
    args = parser.parse_args(argv)
    if args.write:
        changed = write(args.root)
        print("rendered " + (", ".join(changed) if changed else "nothing new: every table already up to date"))
        return 0
    if args.check:
        try:
            found, count = check_committed(args.root)
        except Skip as e:
            print(f"skipped: {e}", file=sys.stderr)
            return 0
        for doc, name, what in found:
            print(f"{doc}: table {name}: {what}", file=sys.stderr)
        if found:
            print("out of date at HEAD: render with `make docs` and commit the documents with their sources",
                  file=sys.stderr)
            return 1
        print(f"{count} tables as committed at HEAD match their sources as committed at HEAD")
        return 0
    for name in args.names or TABLES:
        try:
            print(f"{START.format(name=name)}\n{render(name, args.root)}\n{END}\n")
        except KeyError as e:
            raise SystemExit(e.args[0]) from None
        except MissingSource as e:
            print(f"table {name}: {e.path} is missing", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
