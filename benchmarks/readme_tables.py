"""The README's tables, rendered from committed files: no number in a README table is typed in by hand.

    python benchmarks/readme_tables.py                 print every table whose source files exist
    python benchmarks/readme_tables.py results sweep   print just these tables
    python benchmarks/readme_tables.py --write         replace each marked table in README.md with its rendering
    python benchmarks/readme_tables.py --check         exit 1 naming (with a diff) each marked table that differs

In README.md a table sits on its own lines between a pair of markers:

    <!-- table: results -->
    | model | test accuracy | ... |
    |---|---|...|
    <!-- /table -->

Tables and their sources (paths relative to the repository):

    results        metrics/compare.json, params.yaml (frozen_head.epochs), the bars of benchmarks/run.py
    sweep          metrics/data_efficiency.json (test accuracy per run and budget, paired transfer - scratch)
    sweep_paired   metrics/data_efficiency.json (frozen - scratch, transfer - frozen)
    recipes        benchmarks/recipes.json (benchmarks/recipes.py's `render`)
    performance    benchmarks/report.json (benchmarks/run.py's `table`)
    targets        benchmarks/report.json (benchmarks/run.py's `targets`)
    sweep_cost     benchmarks/sweep_cost.json (benchmarks/sweep_cost.py's report)
    frozen_phase   benchmarks/frozen_phase.json (benchmarks/frozen_phase.py: the frozen phase alone, both sides)
    experiments    benchmarks/experiments/*.json (each a copy of an earlier metrics/compare.json, one column per
                   file, named by its stem) and metrics/compare.json (the column "defaults")
    bn_momentum    benchmarks/sweep_bn_momentum.json (benchmarks/sweep_variant.py's report)
    times          benchmarks/repro_times.json (benchmarks/time_command.py's timings)
    predict_sample benchmarks/predict_sample.txt (a `predict` run on tests/data/digits, command and output)
    shards         benchmarks/scale_out.json (benchmarks/scale_out.py: each shard and the collector)
    scale_estimate benchmarks/scale_out.json (its estimate of the sweep's wall time on N machines)

`--write` skips (with a message) a marked table whose sources are missing and leaves its text alone; `--check`
counts it as a failure, like an unknown table name. tests/test_readme.py runs the same check.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

START = "<!-- table: {name} -->"
END = "<!-- /table -->"
MARKER = re.compile(r"<!-- table: (?P<name>[\w-]+) -->|<!-- /table -->")


class MissingSource(Exception):
    """A table's source file does not exist (yet)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: missing")
        self.path = path


# --- formatting helpers --------------------------------------------------------------------------------------


def row(cells: list[str]) -> str:
    """A Markdown table row; an empty cell renders as `| |`."""
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def budget_label(budget: str | int) -> str:
    return f"{int(budget):,}"


def interval(stats: dict, signed: bool = False) -> str:
    """`0.8258 [0.8100, 0.8416]`, or signed `-0.0319 [-0.0545, -0.0094]`; the mean alone when there is no
    interval (one seed: `ci95_low` is None)."""
    spec = "+.4f" if signed else ".4f"
    mean = format(stats["mean"], spec)
    if stats.get("ci95_low") is None or stats.get("ci95_high") is None:
        return mean
    return f"{mean} [{format(stats['ci95_low'], spec)}, {format(stats['ci95_high'], spec)}]"


def gain(compare: dict) -> str:
    """Transfer's test accuracy minus scratch's, signed at 4 decimals (`-0.0016`), as compare.json records it."""
    value = compare.get("gain", {}).get("test_accuracy")
    if value is None:
        value = compare["transfer"]["test_accuracy"] - compare["scratch"]["test_accuracy"]
    return f"{value:+.4f}"


def bars(run_py: Path = ROOT / "benchmarks" / "run.py") -> dict[str, float]:
    """The accuracy bars, `BARS` in benchmarks/run.py (read as a literal: importing run.py imports TensorFlow)."""
    for node in ast.parse(run_py.read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "BARS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"{run_py}: no literal `BARS = {{...}}` (the accuracy bars of the results table)")


def bench_module(name: str):
    """benchmarks/<name>.py, imported on demand (run.py and recipes.py import TensorFlow, which takes seconds)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return importlib.import_module(f"benchmarks.{name}")


# --- one renderer per table: a dict (or dicts) in, a Markdown table out -----------------------------------------


def render_results(compare: dict, frozen_epochs: int, bar: dict[str, float] | None = None) -> str:
    """The "Results" table. `bar` maps pretrain / finetune / scratch to its test-accuracy bar (run.py's BARS)."""
    bar = bars() if bar is None else bar

    def bar_cell(stage: str) -> str:
        return f"≥ {bar[stage]:g}" if stage in bar else ""

    def run_cells(m: dict) -> list[str]:
        reached = m.get("epochs_to_threshold")
        return [f"{m['test_loss']:.4f}", "not reached" if reached is None else str(reached),
                f"{m['train_seconds']:.0f}"]

    lines = [f"| model | test accuracy | bar | test loss | epochs to {compare['threshold']:g} val. acc. "
             "| train seconds |",
             "|---|---|---|---|---|---|",
             row(["Fashion-MNIST pretrain", f"{compare['pretrain']['test_accuracy']:.4f}", bar_cell("pretrain"),
                  "", "", ""]),
             row([f"MNIST frozen head only ({'epoch 1' if frozen_epochs == 1 else f'epochs 1–{frozen_epochs}'})",
                  f"{compare['frozen_head']['test_accuracy']:.4f}", "", "", "", ""]),
             row(["MNIST transfer (frozen head + fine-tune)", f"{compare['transfer']['test_accuracy']:.4f}",
                  bar_cell("finetune"), *run_cells(compare["transfer"])]),
             row(["MNIST from scratch", f"{compare['scratch']['test_accuracy']:.4f}", bar_cell("scratch"),
                  *run_cells(compare["scratch"])])]
    return "\n".join(lines)


def budgets(efficiency: dict) -> list[str]:
    return sorted(efficiency["transfer"], key=int)


def render_sweep(efficiency: dict) -> str:
    """Data efficiency: test accuracy per run and label budget, and the paired transfer − scratch difference."""
    lines = ["| labels | transfer | frozen only | scratch | transfer − scratch (paired) |", "|---:|---|---|---|---|"]
    for b in budgets(efficiency):
        lines.append(row([budget_label(b), *(interval(efficiency[run][b]) for run in ("transfer", "frozen", "scratch")),
                          interval(efficiency["transfer_minus_scratch"][b], signed=True)]))
    return "\n".join(lines)


def render_sweep_paired(efficiency: dict) -> str:
    """Data efficiency: the other two paired differences."""
    lines = ["| labels | frozen − scratch | transfer − frozen |", "|---:|---|---|"]
    for b in budgets(efficiency):
        lines.append(row([budget_label(b), interval(efficiency["frozen_minus_scratch"][b], signed=True),
                          interval(efficiency["transfer_minus_frozen"][b], signed=True)]))
    return "\n".join(lines)


def render_recipes(results: dict) -> str:
    return bench_module("recipes").render(results)


def render_performance(report: dict) -> str:
    return bench_module("run").table(report)


def render_targets(report: dict) -> str:
    return bench_module("run").targets(report)


def render_frozen_phase(report: dict) -> str:
    """benchmarks/frozen_phase.py's report: each side's seconds per round, median and test accuracy."""
    lines = ["| side | seconds per round | median seconds | test accuracy |", "|---|---|---:|---:|"]
    for side, name in (("reference", "reference frozen phase (5 head epochs)"), ("project", "`frozen_head`")):
        rounds = ", ".join(f"{r[side]['seconds']:.1f}" for r in report["rounds"])
        lines.append(f"| {name} | {rounds} | {report['median_seconds'][side]:.1f} "
                     f"| {report['test_accuracy'][side]:.4f} |")
    lines.append(f"| **speedup** (reference / project, medians) | | {report['speedup']:.2f}x | |")
    return "\n".join(lines)


def render_sweep_cost(cost: dict) -> str:
    """benchmarks/sweep_cost.py's report: one row per version, the ratio on the new one."""
    lines = ["| version | processes per seed | seconds per seed (mean over rounds) | seconds per point "
             "| ratio new/old | peak RSS MB (largest process) |", "|---|---:|---:|---:|---:|---:|"]
    for side in ("old", "new"):
        runs = [r for r in cost["runs"] if r["side"] == side]
        seconds = sum(r["seconds"] for r in runs) / len(runs)
        ratio = f"{cost['new_over_old']:.3f}" if side == "new" else ""
        peak = cost.get("peak_rss_mb", {}).get(side)  # recorded since commit 7332dff
        lines.append(row([side, str(runs[0]["processes"]), f"{seconds:.1f}", f"{cost['seconds_per_point'][side]:.2f}",
                          ratio, "" if peak is None else f"{peak:,}"]))
    return "\n".join(lines)


EXPERIMENT_ROWS = [("Fashion-MNIST pretrain", "pretrain"), ("MNIST frozen head only", "frozen_head"),
                   ("MNIST transfer", "transfer"), ("MNIST scratch", "scratch")]


def render_experiments(columns: dict[str, dict]) -> str:
    """Named experiments side by side: column name -> its compare.json; test accuracies and the gain."""
    lines = [row(["test accuracy", *columns]), "|---" * (len(columns) + 1) + "|"]
    for label, key in EXPERIMENT_ROWS:
        lines.append(row([label, *(f"{c[key]['test_accuracy']:.4f}" for c in columns.values())]))
    lines.append(row(["gain (transfer − scratch)", *(gain(c) for c in columns.values())]))
    return "\n".join(lines)


def render_bn_momentum(report: dict) -> str:
    """benchmarks/sweep_variant.py's report: mean validation accuracy per run, baseline against the variant."""
    setting = ", ".join(report["set"])
    lines = [row(["run", "points", "default (mean val. accuracy)", f"{setting} (mean val. accuracy)"]),
             "|---|---:|---:|---:|"]
    for run, base in report["mean_val_accuracy"]["baseline"].items():
        n = sum(p["run"] == run for p in report["points"])
        lines.append(row([run, str(n), f"{base:.4f}", f"{report['mean_val_accuracy']['variant'][run]:.4f}"]))
    return "\n".join(lines)


def render_times(times: dict) -> str:
    """benchmarks/repro_times.json: wall seconds of named commands."""
    lines = ["| what | command | wall seconds | minutes | items/s | peak RSS MB (largest process) | machine, date |",
             "|---|---|---:|---:|---:|---:|---|"]
    for name, t in times.items():
        rate = f"{t['items_per_second']:,.0f}" if "items_per_second" in t else ""
        peak = f"{t['peak_rss_mb']:,}" if "peak_rss_mb" in t else ""  # recorded since commit 7332dff
        lines.append(row([name, f"`{t['command']}`", f"{t['seconds']:.1f}", f"{t['seconds'] / 60:.1f}", rate, peak,
                          f"{t['machine']}, {t['date']}"]))
    return "\n".join(lines)


def render_shards(report: dict) -> str:
    """benchmarks/scale_out.py's report: each shard, then the collector."""
    lines = [row(["step", "stages", "trained", "restored", "seconds (pull / repro / push)", "bytes pushed per point"]),
             "|---|---:|---:|---:|---|---:|"]
    def seconds(s: dict) -> str:
        if s.get("pull_seconds") is None:
            return f"{s['seconds']:.1f}"
        return f"{s['seconds']:.1f} ({s['pull_seconds']:.1f} / {s['repro_seconds']:.1f} / {s['push_seconds']:.1f})"

    for s in report["shards"]:
        lines.append(row([f"shard {s['shard']}", str(len(s["stages"])), str(len(s["trained"])), str(len(s["restored"])),
                          seconds(s), f"{s['bytes_per_point']:,}"]))
    if "shard_again_on_a_fresh_clone" in report:
        s = report["shard_again_on_a_fresh_clone"]
        lines.append(row([f"shard {s['shard']} again, in a fresh clone", str(len(s["stages"])), str(len(s["trained"])),
                          str(len(s["restored"])), seconds(s), ""]))
    c = report["collector"]
    lines.append(row(["collector: `dvc repro --pull data_efficiency` in a fresh clone",
                      str(c["trained"] + c["restored"]), str(c["trained"]), str(c["restored"]), f"{c['seconds']:.1f}",
                      ""]))
    return "\n".join(lines)


def render_scale_estimate(report: dict) -> str:
    """benchmarks/scale_out.py's estimate of the default sweep's wall time on N machines."""
    one = report["estimate_seconds"]["1"]
    lines = [row(["machines", "wall seconds", "minutes", "speed-up"]), "|---:|---:|---:|---:|"]
    for n, seconds in report["estimate_seconds"].items():
        lines.append(row([n, f"{seconds:.0f}", f"{seconds / 60:.1f}", f"{one / seconds:.1f}×"]))
    return "\n".join(lines)


def render_text_block(root: Path, rel: str) -> str:
    """A committed command transcript (e.g. a `predict` run), as a fenced block."""
    path = root / rel
    if not path.is_file():
        raise MissingSource(rel)
    return "```text\n" + path.read_text().rstrip("\n") + "\n```"


# --- sources: each table's files, read relative to a repository root --------------------------------------------


def load_json(root: Path, rel: str) -> dict:
    path = root / rel
    if not path.is_file():
        raise MissingSource(rel)
    return json.loads(path.read_text())


def frozen_head_epochs(root: Path) -> int:
    if not (root / "params.yaml").is_file():
        raise MissingSource("params.yaml")
    return yaml.safe_load((root / "params.yaml").read_text())["frozen_head"]["epochs"]


def experiment_columns(root: Path) -> dict[str, dict]:
    files = sorted((root / "benchmarks" / "experiments").glob("*.json"))
    if not files:
        raise MissingSource("benchmarks/experiments/*.json")
    columns = {f.stem.replace("-", " "): json.loads(f.read_text()) for f in files}
    return columns | {"defaults": load_json(root, "metrics/compare.json")}


TABLES: dict[str, Callable[[Path], str]] = {
    "results": lambda root: render_results(load_json(root, "metrics/compare.json"), frozen_head_epochs(root)),
    "sweep": lambda root: render_sweep(load_json(root, "metrics/data_efficiency.json")),
    "sweep_paired": lambda root: render_sweep_paired(load_json(root, "metrics/data_efficiency.json")),
    "recipes": lambda root: render_recipes(load_json(root, "benchmarks/recipes.json")),
    "performance": lambda root: render_performance(load_json(root, "benchmarks/report.json")),
    "targets": lambda root: render_targets(load_json(root, "benchmarks/report.json")),
    "sweep_cost": lambda root: render_sweep_cost(load_json(root, "benchmarks/sweep_cost.json")),
    "frozen_phase": lambda root: render_frozen_phase(load_json(root, "benchmarks/frozen_phase.json")),
    "experiments": lambda root: render_experiments(experiment_columns(root)),
    "bn_momentum": lambda root: render_bn_momentum(load_json(root, "benchmarks/sweep_bn_momentum.json")),
    "times": lambda root: render_times(load_json(root, "benchmarks/repro_times.json")),
    "predict_sample": lambda root: render_text_block(root, "benchmarks/predict_sample.txt"),
    "shards": lambda root: render_shards(load_json(root, "benchmarks/scale_out.json")),
    "scale_estimate": lambda root: render_scale_estimate(load_json(root, "benchmarks/scale_out.json")),
}


def render(name: str, root: Path = ROOT) -> str:
    """Table `name` from the files under `root`; MissingSource if one is missing, KeyError if `name` is unknown."""
    if name not in TABLES:
        raise KeyError(f"unknown table {name!r} (known: {', '.join(TABLES)})")
    return TABLES[name](root)


# --- markers in the README ---------------------------------------------------------------------------------------


def blocks(readme: str) -> list[tuple[str, int, int]]:
    """(name, start, end) of each marked table: readme[start:end] is the text between its two markers."""
    out, open_ = [], None
    for m in MARKER.finditer(readme):
        line = readme.count("\n", 0, m.start()) + 1
        if m["name"] is not None:
            if open_ is not None:
                raise SystemExit(f"README line {line}: table {m['name']!r} starts inside table {open_[0]!r}")
            open_ = (m["name"], m.end())
        else:
            if open_ is None:
                raise SystemExit(f"README line {line}: {END} without a `<!-- table: NAME -->` before it")
            out.append((open_[0], open_[1], m.start()))
            open_ = None
    if open_ is not None:
        raise SystemExit(f"README: table {open_[0]!r} has no {END}")
    return out


def marked(readme: str) -> list[tuple[str, str]]:
    """Each marked table's name and the table between its markers (without the newlines around it)."""
    return [(name, readme[start:end].removeprefix("\n").removesuffix("\n")) for name, start, end in blocks(readme)]


def replace(readme: str, tables: dict[str, str]) -> str:
    """`readme` with each marked table in `tables` replaced by its rendering, on its own lines between the markers."""
    out, last = [], 0
    for name, start, end in blocks(readme):
        if name in tables:
            out += [readme[last:start], "\n", tables[name], "\n"]
            last = end
    return "".join([*out, readme[last:]])


def check(readme: str, root: Path = ROOT) -> list[tuple[str, str]]:
    """(name, what is wrong, with a diff) for each marked table whose text differs from its rendering, whose
    name is unknown, or whose sources are missing. Empty when the README is up to date."""
    return [p for name, text in marked(readme) for p in problem(name, text, root)]


def problem(name: str, text: str, root: Path) -> list[tuple[str, str]]:
    try:
        table = render(name, root)
    except KeyError as e:
        return [(name, str(e.args[0]))]
    except MissingSource as e:
        return [(name, f"source {e.path} is missing")]
    if text == table:
        return []
    diff = difflib.unified_diff(text.splitlines(), table.splitlines(), "README.md", "rendered", n=0, lineterm="")
    return [(name, "differs from its rendering:\n" + "\n".join(list(diff)[2:]))]


def write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"tables to print (of: {', '.join(TABLES)})")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the marked tables in the README")
    mode.add_argument("--check", action="store_true", help="exit 1 if a marked table differs from its rendering")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--root", type=Path, default=ROOT, help="where the source files are (default: this repo)")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.readme.read_text(), args.root)
        for name, what in problems:
            print(f"table {name}: {what}", file=sys.stderr)
        if problems:
            print(f"{args.readme}: out of date: {', '.join(dict.fromkeys(n for n, _ in problems))} "
                  "(`python benchmarks/readme_tables.py --write` updates what its sources allow)", file=sys.stderr)
            return 1
        print(f"{args.readme}: {len(blocks(args.readme.read_text()))} tables up to date")
        return 0
    if args.write:
        readme = args.readme.read_text()
        tables = {}
        for name in dict.fromkeys(b[0] for b in blocks(readme)):
            try:
                tables[name] = render(name, args.root)
            except KeyError as e:
                raise SystemExit(f"{args.readme}: {e.args[0]}; nothing written") from None
            except MissingSource as e:
                print(f"skipped table {name}: {e.path} is missing", file=sys.stderr)
        new = replace(readme, tables)
        if new != readme:
            write_text(args.readme, new)
        changed = list(dict.fromkeys(n for n, text in marked(readme) if n in tables and text != tables[n]))
        print(f"{args.readme}: " + (f"rewrote {', '.join(changed)}" if changed else "already up to date"))
        return 0
    for name in args.names or TABLES:
        try:
            table = render(name, args.root)
        except KeyError as e:
            raise SystemExit(e.args[0]) from None
        except MissingSource as e:
            if args.names:
                raise SystemExit(f"table {name}: {e.path} is missing") from None
            print(f"skipped table {name}: {e.path} is missing", file=sys.stderr)
            continue
        print(f"{START.format(name=name)}\n{table}\n{END}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
