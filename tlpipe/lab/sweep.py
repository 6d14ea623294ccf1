"""The label-budget sweep: nested class-balanced subsets, the budget rule, one point's runs, and the statistics.

A point is (run, budget, seed). The seed picks the labelled subset *and* the initialisation, so the spread
over seeds covers both which images were labelled and the training noise; the three runs of one
(budget, seed) see the same images, so their differences are paired.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tlpipe.core.errors import PipelineError
from tlpipe.core.params import SWEEP_RUNS, Sweep


def labelled_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of the training set whose every prefix is as class-balanced as the data allows.

    Each class is shuffled with `seed`; then images are taken rank by rank (every class's 1st image, then
    every class's 2nd, ...), in a seeded class order within a rank. The budget-b subset is the first b
    images, so smaller budgets are subsets of larger ones; once a class runs out, the rest stay balanced.
    """
    rng = np.random.default_rng(seed)
    rank = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rank[rng.permutation(members)] = np.arange(len(members))
    tiebreak = rng.permutation(len(labels))
    return np.lexsort((tiebreak, rank))


def val_count(budget: int, cfg: Sweep, classes: int = 10) -> int:
    """Size of the validation split drawn from inside a budget of labelled images: val_fraction of it, within
    [one per class, val_max]."""
    return min(max(classes, round(cfg.val_fraction * budget)), cfg.val_max, budget - classes)


def per_class_count(labels: np.ndarray, budget: int) -> int:
    """A budget of labels per class, capped by the smallest class (sweep.per_class)."""
    return min(budget, int(np.unique(labels, return_counts=True)[1].min()))


def split_budget(labels: np.ndarray, budget: int, seed: int, cfg: Sweep) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices) of the budget-`budget` subset for `seed`.

    The validation split is the first images of the subset's balanced order, so it is class-balanced too. With
    sweep.per_class the budget counts labels per class (per_class_count), and the validation split takes
    val_fraction of each class's labels, at least one, leaving one to train on: none at one label per class.
    """
    classes = len(np.unique(labels))
    if cfg.per_class:
        each = per_class_count(labels, budget)
        size = each * classes
        n_val = classes * min(max(1, round(cfg.val_fraction * each)), each - 1, cfg.val_max // classes)
    else:
        if budget > len(labels):
            raise PipelineError(f"params.yaml: sweep.budgets has {budget}, more than the {len(labels)} training "
                                "images")
        if budget < 2 * classes:
            raise PipelineError(f"params.yaml: sweep.budgets has {budget}, fewer than 2 labels for each of the "
                                f"{classes} classes; raise it, or set sweep.per_class: true")
        size, n_val = budget, val_count(budget, cfg, classes)
    subset = labelled_order(labels, seed)[:size]
    return subset[n_val:], subset[:n_val]


def round_up(n: float, multiple: int) -> int:
    return max(multiple, math.ceil(n / multiple) * multiple)


def budget_rule(n_train: int, cfg: Sweep) -> tuple[int, int]:
    """(batch size, optimizer steps) for a training set of n_train images.

    Every run at every budget gets `steps` steps (at least `min_epochs` passes over its training set),
    rounded up to a multiple of `eval_every`; the batch shrinks to the set when the set is smaller.
    """
    batch = min(cfg.batch_size, n_train)
    epochs_floor = math.ceil(cfg.min_epochs * n_train / batch)
    return batch, round_up(max(cfg.steps, epochs_floor), cfg.eval_every)


def split_steps(steps: int, cfg: Sweep) -> tuple[int, int]:
    """Transfer's (head steps, fine-tune steps): head_fraction of the steps on the frozen extractor, the rest on all."""
    head = round_up(steps * cfg.head_fraction, cfg.eval_every)
    if head >= steps:
        raise PipelineError(
            f"params.yaml: sweep.head_fraction={cfg.head_fraction} leaves no fine-tuning step out of {steps}; "
            "raise sweep.steps or lower sweep.head_fraction"
        )
    return head, steps - head


def point_name(run: str, budget: int, seed: int) -> str:
    """File stem of a point's record (see point_path)."""
    return f"{run}-{budget}-{seed}"


def point_path(root: Path, run: str, budget: int, seed: int) -> Path:
    """A point's record under the sweep's folder: dvc.yaml's stage sweep@<seed> writes `<root>/seed-<seed>/`."""
    return root / f"seed-{seed}" / f"{point_name(run, budget, seed)}.json"


def summarize(values: list[float]) -> dict:
    """Mean, sample std (ddof=1) and the two-sided 95 % t confidence interval of the mean.

    One value (one seed) has a mean only: std and the interval are None (a spread of 0 would be made up).
    """
    from scipy import stats  # noqa: PLC0415 (a second's import, for the intervals only)

    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if n > 1 else None
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else None  # no interval from one value
    return {
        "n": n,
        "mean": round(mean, 6),
        "std": None if std is None else round(std, 6),
        "ci95_low": None if half is None else round(mean - half, 6),
        "ci95_high": None if half is None else round(mean + half, 6),
    }


# Paired differences reported besides each run against scratch: what each control separates.
PAIRS = (("transfer", "frozen"), ("adabn", "frozen"), ("adabn", "random_frozen"), ("transfer", "depth3"))


def verdict(summary: dict, margin: float) -> str | None:
    """A paired difference's 95 % interval: inside +-margin "equivalent", above 0 "higher", below 0 "lower",
    else "inconclusive" (None without an interval). Inside the margin wins over excluding 0: a difference
    smaller than the margin is one the margin calls too small to matter."""
    low, high = summary["ci95_low"], summary["ci95_high"]
    if low is None or high is None:
        return None
    if -margin <= low and high <= margin:
        return "equivalent"
    return "higher" if low > 0 else "lower" if high < 0 else "inconclusive"


def first_reaching(curve: list | None, threshold: float) -> int | None:
    """The first step of a [step, validation accuracy] curve at or above `threshold`; None if none is."""
    return next((step for step, accuracy in curve or [] if accuracy >= threshold), None)


def convergence(by_curve: dict, runs: list[str], cfg: Sweep) -> dict:
    """Per run and budget: steps until validation accuracy reaches cfg.converge x scratch's best validation
    accuracy (same labels and seed). `reached` counts the seeds that get there, `steps` summarises theirs, and
    `minus_scratch` pairs them with scratch's only when every seed gets there (else None: the seeds that never do
    would be left out of the mean, and they are the slow ones)."""
    out: dict = {}
    for budget in cfg.budgets:
        if any(by_curve.get(("scratch", budget, s)) is None for s in cfg.seeds):
            continue  # no validation images (one label per class): no curve
        threshold = {s: cfg.converge * max(a for _, a in by_curve[("scratch", budget, s)]) for s in cfg.seeds}
        steps = {run: {s: first_reaching(by_curve.get((run, budget, s)), threshold[s]) for s in cfg.seeds}
                 for run in runs}
        for run in runs:
            reached = [v for v in steps[run].values() if v is not None]
            row = {"reached": len(reached), "steps": summarize(reached) if reached else None}
            if run != "scratch":
                every = len(reached) == len(cfg.seeds)  # scratch always reaches its own threshold
                row["minus_scratch"] = (summarize([steps[run][s] - steps["scratch"][s] for s in cfg.seeds])
                                        if every else None)
            out.setdefault(run, {})[str(budget)] = row
    return out


def aggregate(records: list[dict], cfg: Sweep) -> dict:
    """data_efficiency.json: per run and budget the summary and per-seed test accuracies; paired differences with
    their verdict against sweep.margin; steps to converge; seconds per point.

    `intervals` says whether the summaries have 95 % intervals: with one seed they are means only, and `note`
    says so.
    """
    by_point = {(r["run"], r["budget"], r["seed"]): r["test_accuracy"] for r in records}
    by_curve = {(r["run"], r["budget"], r["seed"]): r.get("selected", {}).get("curve") for r in records}
    runs = [run for run in SWEEP_RUNS if any(key[0] == run for key in by_point)]
    out: dict = {"budget_rule": {"steps": cfg.steps, "batch_size": cfg.batch_size, "min_epochs": cfg.min_epochs,
                                 "eval_every": cfg.eval_every, "head_fraction": cfg.head_fraction},
                 "intervals": len(cfg.seeds) > 1, "per_class": cfg.per_class, "margin": cfg.margin,
                 "runs": runs}
    if not out["intervals"]:
        out["note"] = (f"one seed ({cfg.seeds[0]}): means only, no spread or 95 % interval (std, ci95_low and "
                       "ci95_high are null); list more sweep.seeds for intervals")
    for run in runs:
        out[run] = {}
        for budget in cfg.budgets:
            per_seed = {str(s): by_point[(run, budget, s)] for s in cfg.seeds}
            out[run][str(budget)] = summarize(list(per_seed.values())) | {"per_seed": per_seed}
    # Paired by seed: the same labelled images and the same seed on both sides.
    for a, b in [(run, "scratch") for run in runs if run != "scratch"] + list(PAIRS):
        if a in runs and b in runs:
            out[f"{a}_minus_{b}"] = {}
            for budget in cfg.budgets:
                diff = summarize([by_point[(a, budget, s)] - by_point[(b, budget, s)] for s in cfg.seeds])
                out[f"{a}_minus_{b}"][str(budget)] = diff | {"verdict": verdict(diff, cfg.margin)}
    if "scratch" in runs:
        out["convergence"] = {"converge": cfg.converge} | convergence(by_curve, runs, cfg)
    capped = {str(r["budget"]): r["labels_per_class"] for r in records
              if "labels_per_class" in r and r["labels_per_class"] != r["budget"]}
    if capped:  # budgets of labels per class above what the smallest class has
        out["capped"] = capped
    out["seconds_per_point"] = {run: round(float(np.mean([r["seconds"] for r in records if r["run"] == run])), 2)
                                for run in runs}
    out["train_seconds_total"] = round(sum(r["seconds"] for r in records), 1)
    return out


def curve_rows(records: list[dict], runs: tuple[str, ...] = ("transfer", "scratch")) -> list[dict]:
    """Validation accuracy against optimizer steps, mean over seeds with its 95 % interval, per run and budget."""
    curves: dict = {}
    for r in records:
        if r["run"] in runs and r.get("selected", {}).get("curve"):
            for step, accuracy in r["selected"]["curve"]:
                curves.setdefault((r["budget"], r["run"], step), []).append(accuracy)
    return [{"labels": budget, "run": run, "step": step} | {k: v for k, v in summarize(values).items() if k != "std"}
            for (budget, run, step), values in sorted(curves.items())]


def plot_rows(summary: dict) -> list[dict]:
    """Long-format rows (labels, run, mean, ci95_low, ci95_high) for the DVC plot with error bars.

    Without intervals (one seed) ci95_low and ci95_high stay None (empty in the CSV): the plot draws no bar.
    """
    return [
        {"labels": int(budget), "run": run, "mean": s["mean"], "ci95_low": s["ci95_low"], "ci95_high": s["ci95_high"]}
        for run in SWEEP_RUNS
        if run in summary
        for budget, s in summary[run].items()
    ]
