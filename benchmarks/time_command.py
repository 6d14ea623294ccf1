"""Run a command and record its wall time in a JSON file of named timings, with the machine and the date, and
the peak RSS of its largest process (for `dvc repro` or `make repro`, the largest stage's).

    python3 benchmarks/time_command.py --name "make repro" --out results/repro_times.json -- make repro
    python3 benchmarks/time_command.py --name "make test" --out results/repro_times.json -- make test

The quick start's timings (README.md) are this file's, rendered by `make docs`. Needs only Python 3 (no .venv), so
it can time the first `make repro` of a fresh clone. Exits with the command's exit code; records nothing on failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable when run as a script
from benchmarks.bench import cpu_info, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--items", type=int, help="how many items (e.g. images) the command handles, for items/s")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    result = timed(command)
    if result["returncode"]:
        sys.exit(result["returncode"])
    times = json.loads(args.out.read_text()) if args.out.exists() else {}
    times[args.name] = {"command": " ".join(command), "seconds": result["seconds"],
                        "date": time.strftime("%Y-%m-%d"), "machine": cpu_info()["model"],
                        "peak_rss_mb": result["peak_rss_mb"]}
    if args.items:
        times[args.name] |= {"items": args.items, "items_per_second": round(args.items / result["seconds"], 1)}
    args.out.write_text(json.dumps(times, indent=2, sort_keys=True) + "\n")
    print(f"{args.name}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
