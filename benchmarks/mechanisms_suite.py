"""Each library mechanism on the cheap suite: Level 1 (the offline researcher) with vs without it.

    python benchmarks/mechanisms_suite.py                      # 10 seeds, 31 trials, every target
    python benchmarks/mechanisms_suite.py --seeds 3 --targets lr_bowl,needle --jobs 2
    python benchmarks/mechanisms_suite.py --targets lr_bowl,coupled,batch,cliff \
        --arms tabu,bandit,orthogonal,step_size,surrogate,pattern,multiscale --seeds 20 --first-seed 1000 \
        --jobs 2 --evidence domains/train_opt/mechanisms/evidence.json   # what Level 2's designer reads

Every arm is the suite's group A — train_opt's real Level-1 loop on a suite target, each trial measured
in-process (:mod:`experiments.suite.groups`) — with one library mechanism attached before the run
(``none``: nothing attached). Seeds are paired: seed ``s`` is the same training seed (measurement
noise) and the same researcher draws in every arm, so a difference is the mechanism's. The run has
the suite's shape: the baseline plus 3 cycles of 10 trials. The proposing templates get the
suite's box as their ``space`` (``TrainDomain.space``). ``memory`` runs the seeds of a target in
order with one memory file per target (a fresh cache), so seed ``s`` remembers seeds ``0..s-1``.

One row per arm: mean regret (noise-free value of the final incumbent minus the known optimum, 3.0)
over targets × seeds, the paired difference to ``none`` (negative: the mechanism helped) with the
count of pairs it won / lost and a two-sided sign test on them (uncorrected: one test per arm),
failed (crash, FAIL, timeout, rejected) and wasted trials per run, and the mechanism's hook calls and
effects per run (effects: calls that changed what happened — see ``TrialRecord.hook_effects``).
It measures the offline stand-in, not an LLM; the lead's ablation is the authority on the groups.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.mechanisms import TEMPLATES, build  # noqa: E402
from core.mechanisms.memory import MemoryMechanism  # noqa: E402
from core.records import Status  # noqa: E402
from core.settings import validate  # noqa: E402
from domains.train_opt import target as tgt  # noqa: E402
from experiments.suite import HELD_OUT, OPTIMUM, TARGETS, space_for, true_value  # noqa: E402
from experiments.suite.groups import GROUPS, SuiteSession, SuiteSettings  # noqa: E402

CYCLES, BUDGET = 3, 10  # the suite's shape: 1 baseline + 3 cycles x 10 = 31 trials
# arm -> (library mechanism, params); the proposing ones get the target's space at run time
ARMS: dict[str, tuple[str, dict[str, Any]] | None] = {
    "none": None,
    "tabu": ("tabu", {}),
    "bandit": ("bandit", {}),
    "orthogonal": ("orthogonal", {}),
    "step_size": ("step_size", {}),
    "surrogate": ("surrogate", {}),
    "surrogate/2": ("surrogate", {"every": 2}),
    "pattern": ("pattern", {}),
    "multiscale": ("multiscale", {}),
    "multiscale/g": ("multiscale", {"mode": "guidance"}),
    "memory": ("memory", {}),
}
PROPOSING = ("surrogate", "pattern", "multiscale")


def run_one(target: str, arm: str, seed: int, cache: Path) -> dict[str, Any]:
    settings = validate(SuiteSettings, {"suite_target": target, "levels": GROUPS["A"], "seed": seed,
                                        "inner_budget": BUDGET, "outer_cycles": CYCLES})
    names = space_for(target).names
    with tempfile.TemporaryDirectory(prefix="bilevel-mech-") as tmp:
        run_dir = Path(tmp) / "run"
        session = SuiteSession.start(settings, run_dir)
        try:
            spec = ARMS[arm]
            mech_name = None
            if spec is not None:
                mech_name, params = spec
                if mech_name == "memory":
                    mechanism = MemoryMechanism(path=str(cache / f"{target}.json"), run_id=f"seed-{seed}", target=target)
                else:
                    if mech_name in PROPOSING:
                        params = {**params, "space": session.domain.space()}
                    mechanism = build(mech_name, **params)
                session.domain.inner.attach(mechanism)
            session.run()
            records = list(session.domain.inner.history)
            incumbent = session.domain.inner.incumbent_record
            values = tgt.values((run_dir / incumbent.artifact).read_text(encoding="utf-8")) \
                if incumbent is not None and incumbent.artifact else dict(TARGETS[target]["start"])
        finally:
            session.close()
    config = {k: values[k] for k in names}
    search = [r for r in records if r.proposal is None or not r.proposal.is_baseline]
    calls = sum(sum(r.hook_calls.get(mech_name, {}).values()) for r in records) if mech_name else 0
    effects: dict[str, int] = {}
    for r in records:
        for hook, n in (r.hook_effects.get(mech_name, {}) if mech_name else {}).items():
            effects[hook] = effects.get(hook, 0) + n
    return {"target": target, "arm": arm, "seed": seed, "regret": true_value(target, config) - OPTIMUM,
            "trials": len(search),
            "failed": sum(r.status in (Status.CRASH, Status.FAIL, Status.TIMEOUT, Status.REJECTED) for r in search),
            "wasted": sum(bool(r.info.get("wasted")) for r in search), "calls": calls, "effects": effects}


def run_unit(target: str, arm: str, seeds: int, first: int = 0) -> list[dict[str, Any]]:
    """One (target, arm): its seeds in order (``memory`` carries what earlier seeds found)."""
    with tempfile.TemporaryDirectory(prefix="bilevel-memory-") as cache:
        return [run_one(target, arm, seed, Path(cache)) for seed in range(first, first + seeds)]


def sign_test(won: int, lost: int) -> float:
    """Two-sided exact sign test of ``won`` vs ``lost`` paired outcomes (ties dropped)."""
    n = won + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(won, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


def table(rows: list[dict[str, Any]], arms: list[str]) -> str:
    base = {(r["target"], r["seed"]): r["regret"] for r in rows if r["arm"] == "none"}
    lines = [f"{'arm':14s} {'regret':>8s} {'Δ vs none':>10s} {'won/lost':>9s} {'p(sign)':>8s} {'failed':>7s} "
             f"{'wasted':>7s} {'calls':>7s}  effects per run"]
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        n = len(mine)
        diffs = [r["regret"] - base[(r["target"], r["seed"])] for r in mine if (r["target"], r["seed"]) in base]
        delta = f"{statistics.fmean(diffs):+.4f}" if diffs and arm != "none" else "-"
        wins, losses = sum(d < -1e-12 for d in diffs), sum(d > 1e-12 for d in diffs)
        won = f"{wins}/{losses}" if arm != "none" else "-"
        p = f"{sign_test(wins, losses):.3f}" if arm != "none" else "-"
        hooks: dict[str, int] = {}
        for r in mine:
            for hook, count in r["effects"].items():
                hooks[hook] = hooks.get(hook, 0) + count
        effects = ", ".join(f"{h} {c / n:.1f}" for h, c in sorted(hooks.items())) or ("-" if arm == "none" else "none")
        lines.append(f"{arm:14s} {statistics.fmean(r['regret'] for r in mine):8.4f} {delta:>10s} {won:>9s} {p:>8s} "
                     f"{statistics.fmean(r['failed'] for r in mine):7.2f} {statistics.fmean(r['wasted'] for r in mine):7.2f} "
                     f"{statistics.fmean(r['calls'] for r in mine):7.1f}  {effects}")
    return "\n".join(lines)


def evidence(rows: list[dict[str, Any]], arms: list[str], targets: list[str], seeds: list[int]) -> dict[str, Any]:
    """Each template arm's effect (an arm that is a template with its default parameters): the paired
    difference to ``none`` and its sign test, as the Level-2 designer's menu shows it."""
    base = {(r["target"], r["seed"]): r["regret"] for r in rows if r["arm"] == "none"}
    out: dict[str, Any] = {}
    for arm in arms:
        if arm not in TEMPLATES or ARMS[arm] != (arm, {}):
            continue
        diffs = [r["regret"] - base[(r["target"], r["seed"])] for r in rows
                 if r["arm"] == arm and (r["target"], r["seed"]) in base]
        won, lost = sum(d < -1e-12 for d in diffs), sum(d > 1e-12 for d in diffs)
        out[arm] = {"delta_regret": round(statistics.fmean(diffs), 4), "won": won, "lost": lost,
                    "p_sign": round(sign_test(won, lost), 3)}
    return {"about": "Level 1 with the template attached vs without it, paired seeds, on the cheap suite's training "
                     "targets, measured with the offline stand-in researcher (not an LLM): "
                     "python benchmarks/mechanisms_suite.py --evidence",
            "targets": targets, "seeds": [seeds[0], seeds[-1]], "trials": 1 + CYCLES * BUDGET, "templates": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mechanisms_suite.py", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds are first..first+seeds-1 (the evidence uses seeds the suite's runs do not)")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--jobs", type=int, default=1, help="(target, arm) units run in parallel processes")
    parser.add_argument("--by-target", action="store_true", help="also print a table per target")
    parser.add_argument("--evidence", metavar="PATH",
                        help="also write each template's measured effect as JSON (the file Level 2's designer "
                             "reads: domains/train_opt/mechanisms/evidence.json); training targets only, every template")
    args = parser.parse_args(argv)
    targets, arms = args.targets.split(","), args.arms.split(",")
    unknown = [t for t in targets if t not in TARGETS] + [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"unknown target(s)/arm(s): {', '.join(unknown)}")
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.evidence and set(TEMPLATES) - set(arms):
        parser.error(f"--evidence measures every template: add {', '.join(sorted(set(TEMPLATES) - set(arms)))} to --arms")
    if args.evidence and set(targets) & set(HELD_OUT):
        parser.error(f"--evidence is measured on training targets only: drop {', '.join(sorted(set(targets) & set(HELD_OUT)))} "
                     f"from --targets (the held-out targets judge the designs it informs)")
    if "none" not in arms:
        arms = ["none", *arms]
    started = time.monotonic()
    units = [(t, a) for t in targets for a in arms]
    rows: list[dict[str, Any]] = []
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for result in pool.map(run_unit, *zip(*units, strict=True), [args.seeds] * len(units),
                                   [args.first_seed] * len(units)):
                rows += result
    else:
        for target, arm in units:
            rows += run_unit(target, arm, args.seeds, args.first_seed)
    print(f"Level 1 (offline researcher) with one library mechanism attached; {len(targets)} target(s) x "
          f"{args.seeds} paired seeds, {1 + CYCLES * BUDGET} trials each; regret = true value of the final "
          f"incumbent - {OPTIMUM}; {time.monotonic() - started:.0f} s")
    print(table(rows, arms))
    if args.by_target:
        for target in targets:
            print(f"\n{target}")
            print(table([r for r in rows if r["target"] == target], arms))
    if args.evidence:
        found = evidence(rows, arms, targets, list(range(args.first_seed, args.first_seed + args.seeds)))
        Path(args.evidence).write_text(json.dumps(found, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"\nwrote {args.evidence}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
