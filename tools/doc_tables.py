"""The tables of README.md and docs/*.md, rendered from the results files: no number in them is typed by hand.

    make docs          render every marked table (`<!-- table: NAME -->` ... `<!-- /table -->`) from the workspace
    make docs-check    exit 1 where a document differs from its tables so rendered (.ci/run, on a fresh clone)
    python tools/doc_tables.py results sweep    print tables by name

Table NAME is the Jinja2 template tools/templates/NAME.md.j2 (files starting with `_` are parts that several
tables include): the template loads its results files (`load(path)`, `glob(pattern)`) and holds every word and
column of the table. This file holds what is awkward in a template, as filters (`{{ x|interval }}`) and tests
(`{% if diff is judged %}`). Templates trim the newline after a tag (`+%}` keeps it), and `{% filter oneline %}`
joins a paragraph's lines into one, as the documents keep them.
"""
import argparse
import difflib
import fnmatch
import json
import re
import sys
from pathlib import Path

import jinja2

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path(__file__).resolve().parent / "templates"
BLOCK = re.compile(r"<!-- table: ([\w-]+) -->\n?(.*?)\n?<!-- /table -->", re.S)
# The accuracy bars (test set, default params) and the benchmark's targets: goals, not results.
BARS = {"pretrain": 0.92, "finetune": 0.993, "scratch": 0.993}
TARGETS = {"time_ratio_total": 0.5, "frozen_head": 4.0, "noop_repro_seconds": 3.0, "peak_rss_mb": 3000}
PHASES = {"pretrain": "pretrain", "frozen": "frozen_head", "finetune": "finetune", "scratch": "scratch"}  # ref: ours


class MissingSource(LookupError):
    """A table's source file, or a key in it, does not exist (yet)."""


def labels(budget: str | int) -> str:
    return f"{int(budget):,}"


def budgets(d: dict) -> list[str]:
    return sorted(d, key=int)  # JSON keys, numerically


def interval(s: dict, signed: bool = False, decimals: int = 4) -> str:
    """`0.8258 [0.8100, 0.8416]`, or the mean alone where there is no interval (one seed)."""
    f = f"{'+' if signed else ''}.{decimals}f"
    if s.get("ci95_low") is None or s.get("ci95_high") is None:
        return format(s["mean"], f)
    return f"{s['mean']:{f}} [{s['ci95_low']:{f}}, {s['ci95_high']:{f}}]"


def with_verdict(d: dict) -> str:
    """A paired difference and its verdict against the margin: `+0.0013 [-0.0025, +0.0051] inconclusive`."""
    return f"{interval(d, signed=True)} {d.get('verdict') or ''}".strip()


def machine_name(record: dict, missing: str = "not recorded") -> str:
    m = record.get("machine")  # a CPU model string, or benchmarks/bench.py's cpu_info()
    if isinstance(m, dict):
        return m.get("model", "unknown CPU") + (f", {m['cores']} cores" if m.get("cores") else "")
    return m or missing


def measured(record: dict, source: str, more: str = "") -> str:
    """The line under a table that says where and when it was measured, from its source's own record."""
    more = re.sub(r"\s*\n\s*", " ", more.strip())
    machine, date, where = machine_name(record, ""), record.get("date"), f"`{source}`{more}"
    if machine and date:
        return f"Measured on {machine}, {date} ({where})."
    if machine or date:
        return f"Measured on {machine or date} ({where}, which records no {'date' if machine else 'machine'})."
    return f"Where and when this was measured is not recorded in {where}."


def wall_time(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{seconds:.1f} s" if seconds < 60 else f"{minutes} min {rest:02d} s"


def listing(items) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def seeds(report: dict, run: str = "scratch") -> int:
    return max(s.get("n", 1) for s in report[run].values())


def gain(c: dict) -> float:
    value = c.get("gain", {}).get("test_accuracy")
    return c["transfer"]["test_accuracy"] - c["scratch"]["test_accuracy"] if value is None else value


def significance(difference: dict[str, dict]) -> str:
    """Where a paired difference's 95 % interval lies, budget by budget: above 0, below 0, or around it."""
    side = {"above": [], "below": [], "around": []}
    for b in budgets(difference):
        low, high = difference[b].get("ci95_low"), difference[b].get("ci95_high")
        side["above" if (low or 0) > 0 else "below" if (high or 0) < 0 else "around"].append(labels(b))
    if not side["above"] and not side["below"]:
        return f"not significant at any of the {len(side['around'])} budgets (each 95 % interval contains 0)"
    return listing([f"significantly {k} 0 at {listing(side[k])} labels" for k in ("above", "below") if side[k]]
                   + ([f"not significant at {listing(side['around'])}"] if side["around"] else []))


def verdicts(difference: dict[str, dict], unit: str = " labels") -> str:
    """Verdicts against sweep.margin, grouped: `equivalent at 1,000 and 3,000 labels; ...`."""
    groups = {}
    for b in budgets(difference):
        groups.setdefault(difference[b].get("verdict") or "no interval", []).append(labels(b))
    return "; ".join(f"{v} at {listing(bs)}{unit}" for v, bs in groups.items())


def devices(logs: dict[str, dict]) -> str:
    """The devices the training stages recorded in their DVCLive summaries (metrics/logs/*/metrics.json)."""
    return " and ".join(dict.fromkeys(name for log in logs.values() for name in log.get("devices", {}).values()))


def variants(results: dict) -> list[str]:
    """The recipe variants in order: P (pretrain), S (scratch), T (transfer), H (head), each by its number."""
    return sorted(results, key=lambda n: ("PSTH".find(n[0]), int(re.sub(r"\D", "", n) or 0), n))


def stages_time(folders: dict[str, dict]) -> str:
    """The wall time of a candidate's stages, mean over its folders."""
    return wall_time(sum(sum(f["stage_seconds"].values()) for f in folders.values()) / len(folders))


class Missing(jinja2.StrictUndefined):
    """A key a results file lacks: an error wherever it is used, also in `|fmt`."""
    __format__ = jinja2.StrictUndefined._fail_with_undefined_error


ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=Missing, trim_blocks=True,
                         lstrip_blocks=True, autoescape=False)
ENV.globals.update(BARS=BARS, TARGETS=TARGETS, PHASES=PHASES)
ENV.filters.update(
    fmt=format, percent=lambda x: f"{x * 100:g}", met=lambda ok: "yes" if ok else "**no**", json=json.dumps,
    oneline=lambda text: re.sub(r"\s*\n\s*", " ", text.strip()), labels=labels, budgets=budgets,
    interval=interval, with_verdict=with_verdict, machine=machine_name, measured=measured, wall_time=wall_time,
    listing=listing, seeds=seeds, gain=gain, significance=significance, verdicts=verdicts, devices=devices,
    variants=variants, stages_time=stages_time)
ENV.tests.update(
    judged=lambda difference: all(d.get("verdict") for d in difference.values()),  # a verdict at every budget
    compare=lambda r: all("test_accuracy" in (r.get(k) or {}) for k in ("pretrain", "frozen_head", "transfer",
                                                                          "scratch")))  # holds a compare.json
TABLES = sorted(p.name.removesuffix(".md.j2") for p in TEMPLATES.glob("[!_]*.md.j2"))


def render(name: str, root: Path | dict[str, dict] = ROOT) -> str:
    """Table `name` from the files under `root`, or from a mapping path -> contents; MissingSource if a file, or a
    key in one, is missing."""
    if name not in TABLES:
        raise SystemExit(f"unknown table {name!r} (known: {', '.join(TABLES)})")

    def load(rel: str) -> dict:
        if isinstance(root, dict):
            if rel not in root:
                raise MissingSource(rel)
            return root[rel]
        if not (root / rel).is_file():
            raise MissingSource(rel)
        return json.loads((root / rel).read_text())

    def glob(pattern: str) -> dict[str, dict]:
        paths = fnmatch.filter(root, pattern) if isinstance(root, dict) else [
            p.relative_to(root).as_posix() for p in root.glob(pattern)]
        return {rel: load(rel) for rel in sorted(paths)}

    try:
        return ENV.get_template(f"{name}.md.j2").render(load=load, glob=glob).strip("\n")
    except (KeyError, jinja2.UndefinedError) as e:  # a results file from before the key existed: as good as missing
        raise MissingSource(f"a key of table {name}'s source ({e})") from None


def render_performance(report: dict) -> str:  # for benchmarks/run.py, which prints its report's tables
    return render("performance", {"results/report.json": report})


def render_targets(report: dict) -> str:
    return render("targets", {"results/report.json": report})


def render_recipes(results: dict) -> str:  # for research/recipes.py
    return render("recipes", {"results/recipes.json": results})


def documents(root: Path) -> list[Path]:
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def marked(text: str, where: str = "README.md") -> list[str]:
    """The names of the marked tables; a marker without its pair is an error."""
    names = [name for name, _ in BLOCK.findall(text)]
    if not len(names) == text.count("<!-- table: ") == text.count("<!-- /table -->"):
        raise SystemExit(f"{where}: unpaired <!-- table: NAME --> ... <!-- /table --> markers")
    return names


def rendered(text: str, root: Path, where: str = "README.md") -> tuple[str, list[str]]:
    """`text` with its marked tables rendered from `root`'s files, and the tables left as they were (no source)."""
    tables, missing = {}, []
    for name in dict.fromkeys(marked(text, where)):
        try:
            tables[name] = render(name, root)
        except MissingSource as e:
            missing.append(f"{where}: table {name} left as it is: {e.args[0]} is missing")
    return BLOCK.sub(lambda m: f"<!-- table: {m[1]} -->\n{tables.get(m[1], m[2])}\n<!-- /table -->", text), missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help="tables to print (default: all)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="render the marked tables of README.md and docs/*.md")
    mode.add_argument("--check", action="store_true", help="exit 1 where a document differs from its rendering")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project (default: this one)")
    args, stale = parser.parse_args(argv), []
    if not (args.write or args.check):
        try:
            print("\n\n".join(render(name, args.root) for name in args.names or TABLES))
        except MissingSource as e:
            raise SystemExit(f"{e.args[0]} is missing") from None
        return 0
    for doc in documents(args.root):
        where, text = doc.relative_to(args.root).as_posix(), doc.read_text()
        new, missing = rendered(text, args.root, where)
        for line in missing:
            print(line, file=sys.stderr)
        if args.write and new != text:
            doc.write_text(new)
            print(f"rendered {where}")
        elif args.check and (new != text or missing):  # in CI a table without its committed source is stale too
            diff = difflib.unified_diff(text.splitlines(), new.splitlines(), where, "rendered", n=0, lineterm="")
            print(*diff, sep="\n", file=sys.stderr)
            stale.append(where)
    if stale:
        print(f"out of date: {', '.join(stale)}; `make docs` renders their tables from the results files",
              file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
