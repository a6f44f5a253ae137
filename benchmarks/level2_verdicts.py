"""Level 2's verdicts on the cheap suite: how often group C keeps its first and second design, and which.

    python benchmarks/level2_verdicts.py                         # seeds 0-4 of every target (~2 min, 2 cores)
    python benchmarks/level2_verdicts.py --seeds 10 --targets coupled,needle --jobs 2

Each run is group C (Levels 1 + 1.5 + 2, the offline stand-in researcher, not an LLM) on a suite
target, the suite's shape (baseline + 3 cycles of 10 trials): Level 2's baseline is cycle 0, its
first design is on trial in cycle 1 and its second in cycle 2. The table counts, per design slot,
the verdicts (kept, inconclusive and retested in the next cycle, reverted, crashed; a retest takes
the next design slot) and the templates the designer chose, read back from each
run's journal (the ``mechanism`` loop's records); with ``--arms`` it also prints the paired arms'
mean gain per iteration (the design's and its parent set's) over the trials.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.suite import TARGETS  # noqa: E402
from experiments.suite.groups import run_group  # noqa: E402

CYCLES, BUDGET = 3, 10


def designs(target: str, seed: int) -> list[dict[str, Any]]:
    """The Level-2 design records of one group-C run, in order."""
    with tempfile.TemporaryDirectory(prefix="bilevel-verdicts-") as tmp:
        run_dir = Path(tmp) / "run"
        run_group(target, "C", seed, cycles=CYCLES, budget=BUDGET, run_dir=run_dir)
        out = []
        with (run_dir / "journal.jsonl").open(encoding="utf-8") as journal:
            for line in journal:
                event = json.loads(line)
                record = event.get("record") or {}
                if event.get("type") != "trial" or record.get("loop") != "mechanism" or not record.get("iteration"):
                    continue
                verdict = (record.get("info", {}).get("decision") or {}).get("verdict")
                out.append({"slot": record["iteration"], "status": "retest" if verdict == "retest" else record["status"],
                            "is_retest": (record.get("proposal") or {}).get("origin") == "replicate",
                            "template": ((record.get("proposal") or {}).get("changes") or {}).get("template"),
                            "metrics": record.get("metrics", {})})
        return out


def _unit(job: tuple[str, int]) -> tuple[str, int, list[dict[str, Any]]]:
    target, seed = job
    return target, seed, designs(target, seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--arms", action="store_true", help="also print the paired arms' mean gains")
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be >= 1")
    jobs = [(t, s) for t in targets for s in range(args.first_seed, args.first_seed + args.seeds)]
    verdicts: dict[int, Counter] = defaultdict(Counter)
    templates: dict[int, Counter] = defaultdict(Counter)
    arms: dict[int, list[tuple[float, float]]] = defaultdict(list)
    with ProcessPoolExecutor(args.jobs) as pool:
        for _, _, records in pool.map(_unit, jobs):
            for record in records:
                verdicts[record["slot"]][record["status"]] += 1
                verdicts[record["slot"]]["of which retests"] += record["is_retest"]
                templates[record["slot"]][record["template"] or "source"] += 1
                m = record["metrics"]
                if "design_gain" in m:
                    arms[record["slot"]].append((m["design_gain"], m["parent_arm_gain"]))
    print(f"group C (offline stand-in), {len(jobs)} runs: {', '.join(targets)} x seeds "
          f"{args.first_seed}-{args.first_seed + args.seeds - 1}")
    for slot in sorted(verdicts):
        v, t = verdicts[slot], templates[slot]
        runs = v["keep"] + v["retest"] + v["discard"] + v["crash"]
        retests = f" ({v['of which retests']} of them a retest of design {slot - 1})" if v["of which retests"] else ""
        line = (f"design {slot}{retests}: kept {v['keep']}, inconclusive {v['retest']} (retested next cycle), "
                f"reverted {v['discard']}, crashed {v['crash']} of {runs}; "
                f"templates {', '.join(f'{k} {n}' for k, n in t.most_common())}")
        if args.arms and arms[slot]:
            line += (f"; arms: design {statistics.fmean(a for a, _ in arms[slot]):.4g}, "
                     f"parent {statistics.fmean(b for _, b in arms[slot]):.4g} per iteration")
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
