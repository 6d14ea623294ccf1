"""The frozen phase alone: the reference's (5 head epochs through the whole model) against `frozen_head`.

    python benchmarks/frozen_phase.py --rounds 2 --out benchmarks/frozen_phase.json

A quicker check than `make bench` of the one target that is about this phase (`frozen_head` >= 4x faster than
the reference's frozen phase, at no lower test accuracy). Both sides start from the same Fashion-MNIST
extractor, this repository's `models/fashion.named.h5` (in `make bench` the reference starts from its own
pretraining), so the accuracies compare the two head recipes on one extractor. Rounds alternate the sides
(reference, project, reference, project, ...), each one process timed from start to exit as `make bench`
times them; the project's stage runs as dvc.yaml's `cmd` with the repository's params. The frozen_head
weights are then scored on the MNIST test set (reported, never used to choose anything).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable when run as a script
from benchmarks.run import ROOT, prepare_project, reference_command, stage_env  # noqa: E402
from tlpipe.bench import cpu_info, timed  # noqa: E402
from tlpipe.io import write_json  # noqa: E402


def project_test_accuracy(work: Path, data: Path) -> float:
    """Test accuracy of the frozen_head stage's weights in `work` (the model as the pipeline builds it)."""
    from tlpipe.data import load_npz
    from tlpipe.model import build_model
    from tlpipe.params import load_params
    from tlpipe.train import evaluate
    from tlpipe.transfer import load_weights

    params = load_params(work / "params.yaml")
    model = build_model("mnist", params.model, params.base.image_size)
    load_weights(model, work / "models" / "frozen_head.named.h5")
    arrays = load_npz(data / "mnist.npz")
    return evaluate(model, arrays["x_test"], arrays["y_test"], params.base.batch_size)["test_accuracy"]


def summarize(rounds: list[dict]) -> dict:
    """Median seconds per side, their ratio (reference / project) and the test accuracies."""
    median = {side: round(statistics.median(r[side]["seconds"] for r in rounds), 2)
              for side in ("reference", "project")}
    return {
        "rounds": rounds,
        "median_seconds": median,
        "speedup": round(median["reference"] / median["project"], 2),
        "test_accuracy": {side: rounds[-1][side]["test_accuracy"] for side in ("reference", "project")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "frozen_phase.json")
    args = parser.parse_args()
    fashion = ROOT / "models" / "fashion.named.h5"
    for path in (fashion, args.data / "mnist.npz"):
        if not path.is_file():
            raise SystemExit(f"{path}: missing; run `dvc repro pretrain` first")
    # dvc.yaml's `python` is this interpreter (the venv's), as under `make`
    env = stage_env()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="tlpipe-frozen-") as tmp:
        ref_work, proj_work = Path(tmp) / "ref", Path(tmp) / "project"
        ref_work.mkdir()
        commands = prepare_project(proj_work, args.data, [])
        (proj_work / "models").mkdir()
        (proj_work / "metrics").mkdir()
        shutil.copy(fashion, proj_work / "models" / "fashion.named.h5")
        shutil.copy(fashion, ref_work / "pretrain.named.h5")  # what reference.py's frozen phase starts from
        for i in range(args.rounds):
            ref = timed(reference_command("frozen", args.data, ref_work), cwd=str(ROOT), env=env)
            if ref["returncode"]:
                raise SystemExit(f"round {i + 1}: reference frozen phase failed (exit {ref['returncode']})")
            ref |= json.loads((ref_work / "frozen.json").read_text())
            proj = timed(commands["frozen_head"], cwd=str(proj_work), env=env)
            if proj["returncode"]:
                raise SystemExit(f"round {i + 1}: project stage frozen_head failed (exit {proj['returncode']})")
            proj["test_accuracy"] = project_test_accuracy(proj_work, args.data)
            rounds.append({"reference": ref, "project": proj})
            print(f"round {i + 1}: reference {ref['seconds']:.1f} s, project {proj['seconds']:.1f} s", flush=True)
    report = {"command": " ".join(["python", "benchmarks/frozen_phase.py", *sys.argv[1:]]), "machine": cpu_info(),
              "fashion_weights": str(fashion.relative_to(ROOT))} | summarize(rounds)
    write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("median_seconds", "speedup", "test_accuracy")}, indent=2))


if __name__ == "__main__":
    main()
