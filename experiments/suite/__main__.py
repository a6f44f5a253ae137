"""Run the reference searches on the frozen cheap suite, with paired seeds; report regret.

    python -m experiments.suite run --seeds 50 --trials 30 --out experiments/results/suite_pilot
    python -m experiments.suite report experiments/results/suite_pilot

A run appends one row per trial to ``trials.jsonl.gz`` (target, arm, seed, trial, configuration,
measured value or crash, kept) — what every table is computed from — and is resumable: finished
(target, arm, seed) runs are skipped. Seed ``s`` is the same training seed (measurement noise) and
the same searcher seed in every arm, so arms are compared pairwise. Regret is the noise-free value
of the configuration an arm ends with (its incumbent) minus the known optimum.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

from experiments import stats
from experiments.suite import HELD_OUT, OPTIMUM, TARGETS, Crash, measure, space_for, true_value
from experiments.suite.references import REFERENCES, make_searcher, run_search

ROWS = "trials.jsonl.gz"
GROUP_NAMES = ("A", "B", "C", "D", "P", "S")
ARMS = (*GROUP_NAMES, *REFERENCES)


def run_one(target: str, arm: str, seed: int, trials: int) -> list[dict[str, Any]]:
    if arm in GROUP_NAMES:
        return run_llm_group(target, arm, seed, trials)
    space = space_for(target)
    start = dict(TARGETS[target]["start"])

    def measure_config(config: dict[str, Any]) -> float | None:
        try:
            return measure(target, config, seed)
        except Crash:
            return None

    history = run_search(make_searcher(arm, space, start, seed), start, measure_config, trials)
    return [{"target": target, "arm": arm, "seed": seed, "trial": t.index, "config": t.config,
             "value": t.value, "kept": t.kept} for t in history]


def run_llm_group(target: str, group: str, seed: int, trials: int) -> list[dict[str, Any]]:
    """One bilevel run (offline researcher) with ``trials`` trials in all: the baseline plus
    ``CYCLES`` cycles of equal size."""
    import tempfile

    from domains.train_opt import target as tgt
    from experiments.suite.groups import run_group

    budget, rest = divmod(trials - 1, CYCLES)
    if rest:
        raise ValueError(f"--trials minus the baseline must split into {CYCLES} equal cycles for the LLM groups")
    names = space_for(target).names
    rows = []
    with tempfile.TemporaryDirectory(prefix="bilevel-suite-") as tmp:
        run_dir = Path(tmp) / "run"
        records = run_group(target, group, seed, cycles=CYCLES, budget=budget, run_dir=run_dir)
        for r in records:
            config = None
            if r.artifact and (run_dir / r.artifact).is_file():
                values = tgt.values((run_dir / r.artifact).read_text(encoding="utf-8"))
                config = {k: values[k] for k in names}
            elif r.proposal is not None and r.proposal.is_baseline:
                config = dict(TARGETS[target]["start"])
            rows.append({"target": target, "arm": group, "seed": seed, "trial": r.iteration, "config": config,
                         "value": r.score, "kept": r.status.value == "keep", "status": r.status.value,
                         "wasted": r.info.get("wasted"), "replicate": r.info.get("replicate_of") is not None,
                         "hook_calls": r.hook_calls, "hook_effects": r.hook_effects})
    return rows


CYCLES = 3


def done_runs(out: Path, trials: int) -> set[tuple[str, str, int]]:
    """The (target, arm, seed) runs whose ``trials`` rows are all on disk. A file damaged by an
    interrupted append is rewritten with the complete runs it holds, so what is appended next stays
    readable and an interrupted run is run again from its start."""
    path = out / ROWS
    if not path.exists():
        return set()
    rows, damaged = read_rows(path)
    counts: dict[tuple[str, str, int], int] = defaultdict(int)
    for row in rows:
        counts[(row["target"], row["arm"], row["seed"])] += 1
    done = {run for run, n in counts.items() if n >= trials}
    if damaged or len(done) < len(counts):
        kept = [r for r in rows if (r["target"], r["arm"], r["seed"]) in done]
        with gzip.open(path.with_suffix(".tmp"), "wt", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in kept))
        path.with_suffix(".tmp").replace(path)
    return done


def read_rows(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """Every readable row, and whether the file ended damaged (a torn line or gzip member)."""
    rows: list[dict[str, Any]] = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                rows.append(json.loads(line))
    except (EOFError, OSError, zlib.error, json.JSONDecodeError):
        return rows, True
    return rows, False


def cmd_run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    targets = args.targets.split(",") if args.targets else list(TARGETS)
    arms = args.arms.split(",")
    for name in targets:
        if name not in TARGETS:
            print(f"error: unknown target {name!r}; choose from {', '.join(TARGETS)}", file=sys.stderr)
            return 2
    for arm in arms:
        if arm not in ARMS:
            print(f"error: unknown arm {arm!r}; choose from {', '.join(ARMS)}", file=sys.stderr)
            return 2
    settings = {"trials": args.trials, "seeds": args.seeds, "targets": targets, "arms": arms}
    settings_path = out / "settings.json"
    if settings_path.exists():
        previous = json.loads(settings_path.read_text())
        if previous["trials"] != args.trials:
            print(f"error: {out} was run with --trials {previous['trials']}; use another --out", file=sys.stderr)
            return 2
    settings_path.write_text(json.dumps(settings, indent=1))
    done = done_runs(out, args.trials)
    units = [(name, arm) for name in targets for arm in arms]
    jobs = max(1, int(getattr(args, "jobs", 1) or 1))
    with gzip.open(out / ROWS, "at", encoding="utf-8") as fh:
        def write(name: str, arm: str, runs: list[list[dict[str, Any]]]) -> None:
            fh.write("".join(json.dumps(r) + "\n" for rows in runs for r in rows))
            fh.flush()  # one (target, arm) at a time: an interrupted run loses at most the unit in flight
            print(f"{name:8s} {arm:7s} {args.seeds} seeds done", flush=True)

        todo = [(name, arm, [s for s in range(args.seeds) if (name, arm, s) not in done]) for name, arm in units]
        if jobs == 1:
            for name, arm, seeds in todo:
                write(name, arm, [run_one(name, arm, seed, args.trials) for seed in seeds])
        else:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=jobs) as pool:
                futures = [(name, arm, pool.submit(run_unit, name, arm, seeds, args.trials)) for name, arm, seeds in todo]
                for name, arm, future in futures:  # written in the canonical order, whatever finishes first
                    write(name, arm, future.result())
    return cmd_report(argparse.Namespace(out=str(out)))


def run_unit(name: str, arm: str, seeds: list[int], trials: int) -> list[list[dict[str, Any]]]:
    """Every given seed of one (target, arm), in a worker process."""
    return [run_one(name, arm, seed, trials) for seed in seeds]


def load(out: Path) -> list[dict[str, Any]]:
    return read_rows(out / ROWS)[0]


def summarize(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[int, dict[str, float]]]:
    """Per (target, arm): per seed, the final regret, the crash count and the trials used."""
    runs: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        runs[(row["target"], row["arm"], row["seed"])].append(row)
    table: dict[tuple[str, str], dict[int, dict[str, float]]] = defaultdict(dict)
    for (target, arm, seed), trials in runs.items():
        kept = [t for t in trials if t["kept"] and t["config"] is not None]
        final = kept[-1]["config"] if kept else TARGETS[target]["start"]
        # a replicate (the same configuration on another training seed, asked for by the noise-aware
        # decider) is a measurement by design, not a wasted trial; it is counted apart
        configs = [json.dumps(t["config"], sort_keys=True) for t in trials
                   if t["config"] is not None and t["value"] is not None and not t.get("replicate")]
        duplicates = len(configs) - len(set(configs))
        wasted = duplicates + sum(1 for t in trials if t.get("wasted"))
        start_value = true_value(target, TARGETS[target]["start"])
        regret = true_value(target, final) - OPTIMUM
        table[(target, arm)][seed] = {"regret": regret, "start_regret": start_value - OPTIMUM,
                                      "crashes": sum(t["value"] is None for t in trials), "trials": len(trials),
                                      "wasted": wasted, "replicates": sum(1 for t in trials if t.get("replicate")),
                                      "hook_calls": sum(sum(c.values()) for t in trials for c in (t.get("hook_calls") or {}).values()),
                                      "hook_effects": sum(sum(c.values()) for t in trials
                                                          for c in (t.get("hook_effects") or {}).values())}
    return table


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.out)
    rows = load(out)
    table = summarize(rows)
    targets = list(dict.fromkeys(t for t, _ in table))
    present = list(dict.fromkeys(a for _, a in table))
    arms = [a for a in ARMS if a in present] + [a for a in present if a not in ARMS]  # canonical order
    lines = ["# Cheap suite: bilevel groups (offline stand-in researcher) and reference searches", "",
             "Groups A (Level 1), B (1 + 1.5), C (1 + 1.5 + 2), D (1 + 2) use the **offline researcher** — a "
             "deterministic rule-based stand-in, not an LLM; their figures say what the machinery does with it, "
             "not what a language model would do. P (placebo) is group A plus a mechanism loaded like a generated one "
             "(sandboxed worker, proxy) whose hooks are called and change nothing: its effect count reads 0, and a "
             "difference between P and A would be the machinery's, not a mechanism's. S is group A keeping by strict "
             "improvement instead of the default noise-aware rule. "
             "References: random, coordinate search, TPE, CMA-ES.", "",
             f"Rows: `{ROWS}` ({len(rows)} trials). Regret = noise-free value of the final incumbent − known optimum "
             f"({OPTIMUM}); lower is better. Held-out targets: {', '.join(HELD_OUT)}. Wasted: a trial spent on a "
             "configuration already measured, or on one that could never run. Replicates: the same configuration on "
             "another training seed, asked for by the noise-aware keep rule (they count in the budget).", "",
             "| target | arm | seeds | regret mean [95% CI] | start regret | crash rate | wasted trials / run | "
             "replicates / run | mechanism hook calls (effects) / run |",
             "|---|---|---|---|---|---|---|---|---|"]
    for target in targets:
        for arm in arms:
            per_seed = table.get((target, arm))
            if not per_seed:
                continue
            regrets = [v["regret"] for v in per_seed.values()]
            ci = stats.mean_ci(regrets)
            crashes = sum(v["crashes"] for v in per_seed.values()) / max(1, sum(v["trials"] for v in per_seed.values()))
            ci_text = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
            start = next(iter(per_seed.values()))["start_regret"]
            wasted = stats.mean([v["wasted"] for v in per_seed.values()])
            replicates = stats.mean([v.get("replicates", 0) for v in per_seed.values()])
            calls = stats.mean([v["hook_calls"] for v in per_seed.values()])
            effects = stats.mean([v["hook_effects"] for v in per_seed.values()])
            lines.append(f"| {target} | {arm} | {len(regrets)} | {stats.mean(regrets):.4f} {ci_text} | {start:.3f} | "
                         f"{crashes:.1%} | {wasted:.2f} | {replicates:.2f} | {calls:.1f} ({effects:.1f}) |")
    lines += ["", "## Paired comparisons (same seeds), regret difference row − column arm, Holm-corrected", "",
              "| target | comparison | n | mean diff [95% CI] | paired t p (Holm) | Wilcoxon p (Holm) |", "|---|---|---|---|---|---|"]
    comparisons = []
    for target in targets:
        for i, a in enumerate(arms):
            for b in arms[i + 1:]:
                ta, tb = table.get((target, a), {}), table.get((target, b), {})
                seeds = sorted(set(ta) & set(tb))
                if len(seeds) >= 2:
                    comparisons.append((target, a, b, stats.paired([ta[s]["regret"] for s in seeds],
                                                                  [tb[s]["regret"] for s in seeds])))
    t_holm = stats.holm([c[3].t_p for c in comparisons])
    w_holm = stats.holm([c[3].wilcoxon_p for c in comparisons])
    for (target, a, b, p), tp, wp in zip(comparisons, t_holm, w_holm, strict=True):
        ci = f"[{p.ci[0]:+.4f}, {p.ci[1]:+.4f}]" if p.ci else ""
        lines.append(f"| {target} | {a} − {b} | {p.n} | {p.mean_diff:+.4f} {ci} | {fmt(tp)} | {fmt(wp)} |")
    (out / "REPORT.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.suite", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run reference searches on the suite (resumable)")
    run.add_argument("--arms", default=",".join(ARMS))
    run.add_argument("--targets", default="")
    run.add_argument("--seeds", type=int, default=50)
    run.add_argument("--trials", type=int, default=31, help="trials per run, baseline included (LLM groups: 1 + 3 cycles)")
    run.add_argument("--out", required=True)
    run.add_argument("--jobs", type=int, default=1, help="(target, arm) units run in parallel processes (rows identical)")
    report = sub.add_parser("report", help="regenerate REPORT.md from the trial rows")
    report.add_argument("out")
    mat = sub.add_parser("materialize", help="write a suite target as a train.py + prepare.py folder")
    mat.add_argument("target", choices=sorted(TARGETS))
    mat.add_argument("folder")
    args = parser.parse_args(argv)
    if args.command == "materialize":
        from experiments.suite.groups import materialize

        folder = materialize(args.target, Path(args.folder))
        print(f"wrote {folder / 'train.py'} and {folder / 'prepare.py'}; run it with "
              f"`python -m domains.train_opt.cli --target-dir {folder} bilevel`")
        return 0
    if args.command == "run":
        if args.seeds < 1 or args.trials < 2 or args.jobs < 1:
            print("error: --seeds and --jobs must be >= 1 and --trials >= 2", file=sys.stderr)
            return 2
        return cmd_run(args)
    if not (Path(args.out) / ROWS).exists():
        print(f"error: {args.out} holds no {ROWS}; run `python -m experiments.suite run --out {args.out}` first",
              file=sys.stderr)
        return 2
    return cmd_report(args)


if __name__ == "__main__":
    sys.exit(main())
