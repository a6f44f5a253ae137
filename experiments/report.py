"""``REPORT.md`` and figures for an ablation directory, computed from its ``results.jsonl`` alone.

The runner (:mod:`experiments.ablation`) appends one JSON line per finished repeat; this module
reads them, computes per-group statistics of Δ = best − baseline val_bpb (negative = better) and
tests every group against group A and the LLM groups against the classical ones, then writes:

* ``REPORT.md``          settings, a generated reading, tables, the Level-2 mechanisms of C and D;
* ``best_so_far.png``    best-so-far val_bpb against iteration, mean ± std per group;
* ``delta_by_group.png`` every repeat's Δ per group, over a box plot.

No number is typed in: rerun the ablation and the report changes with it. :func:`analyse` is also
what :mod:`experiments.paper_tables` uses, so the paper and the report cannot disagree.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from experiments import stats

log = logging.getLogger(__name__)

RESULTS_NAME = "results.jsonl"
ARGS_NAME = "ablation.json"
REPORT_NAME = "REPORT.md"
BEST_SO_FAR_PNG = "best_so_far.png"
DELTA_PNG = "delta_by_group.png"
GROUP_ORDER: tuple[str, ...] = ("A", "B", "C", "D", "RANDOM", "LOCAL", "TPE", "CMAES")
LLM_GROUPS: tuple[str, ...] = ("A", "B", "C", "D")
CLASSIC_GROUPS: tuple[str, ...] = ("RANDOM", "LOCAL", "TPE", "CMAES")
REFERENCE = "A"
NO_LLM = "none"  # the provider of a row whose group uses no researcher (the references)
ALPHA = 0.05
CI_LEVEL = 0.95
DEFAULT_LABELS = {"A": "Level 1", "B": "Levels 1 + 1.5", "C": "Levels 1 + 1.5 + 2", "D": "Levels 1 + 2",
                  "RANDOM": "random search", "LOCAL": "coordinate search", "TPE": "Optuna TPE",
                  "CMAES": "Optuna CMA-ES"}
SETTING_KEYS = ("time_budget", "flop_budget", "endpoint_seeds", "iterations", "cycles", "threads", "target")
OFFLINE_NOTE = (
    "The researcher in this ablation is the **offline** provider: a deterministic, seeded stand-in that "
    "answers each request from its structured context by fixed rules. What it shows: the machinery runs "
    "end to end in every group; the groups are set up alike (same starting train.py, seeds, trial budget "
    "and executor); and whether attaching Level-1.5 patches and Level-2 mechanisms measurably changes the "
    "search's behaviour (hook calls, keep rates, Δ). What it does not show: anything about how an LLM "
    "researcher would do — neither the size nor the sign of an LLM's gain from the outer levels."
)


# --- reading results.jsonl ---------------------------------------------------------------------


def load_results(path: Path) -> list[dict[str, Any]]:
    """Rows of ``results.jsonl``. A torn last line (a writer killed mid-line) is dropped with a
    warning; a damaged line elsewhere is an error. When a (group, repeat) appears twice, the last wins."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                log.warning("%s: ignoring a torn last line", path)
                continue
            raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
        rows[(str(row["group"]), int(row["repeat"]))] = row
    return list(rows.values())


def group_order(groups: Iterable[str]) -> list[str]:
    present = set(groups)
    return [g for g in GROUP_ORDER if g in present] + sorted(present - set(GROUP_ORDER))


# --- analysis ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupSummary:
    group: str
    label: str
    rows: tuple[dict[str, Any], ...]
    deltas: tuple[float, ...]  # one per repeat that has a Δ
    mean: float | None
    std: float | None
    ci: tuple[float, float] | None
    ratio_vs_a: float | None  # mean Δ / group A's mean Δ (> 1: a larger change than A's)

    @property
    def n(self) -> int:
        return len(self.deltas)

    @property
    def missing(self) -> int:
        return len(self.rows) - len(self.deltas)


@dataclass(frozen=True)
class Comparison:
    """Group ``group`` against group ``reference``: diff = mean Δ(group) − mean Δ(reference)."""

    group: str
    reference: str
    n: int
    n_ref: int
    diff: float | None
    welch: stats.Welch | None
    permutation: stats.Permutation | None
    bootstrap: tuple[float, float] | None
    verdict: str  # "within noise" | "beyond noise" | "untested"

    @property
    def permutation_cannot_reject(self) -> bool:
        return self.permutation is not None and self.permutation.min_p >= ALPHA


@dataclass(frozen=True)
class Analysis:
    groups: dict[str, GroupSummary]
    vs_reference: dict[str, Comparison]
    vs_classic: dict[tuple[str, str], Comparison]
    settings: dict[str, dict[str, Any]]  # setting → group → value
    providers: tuple[str, ...]
    models: tuple[str, ...]
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def offline(self) -> bool:
        return any(p.split(":")[0] == "offline" for p in self.providers)

    def baselines(self) -> dict[int, dict[str, float]]:
        """repeat → group → baseline val_bpb. Same ``train.py`` and seed: these should agree."""
        out: dict[int, dict[str, float]] = defaultdict(dict)
        for g, s in self.groups.items():
            for r in s.rows:
                if r.get("baseline") is not None:
                    out[int(r["repeat"])][g] = float(r["baseline"])
        return dict(sorted(out.items()))

    def baseline_spread(self) -> tuple[float, int] | None:
        """The largest (max − min) baseline across groups for one repeat index, and that repeat."""
        spreads = [(max(v.values()) - min(v.values()), r) for r, v in self.baselines().items() if len(v) > 1]
        return max(spreads) if spreads else None


FAILED_STATUSES = ("crash", "fail", "timeout")


def failed_trials(summary: GroupSummary) -> tuple[int, int]:
    """(trials that crashed, failed or timed out, all search trials) over the group's repeats."""
    failed = sum(int((r.get("counts") or {}).get(k, 0)) for r in summary.rows for k in FAILED_STATUSES)
    return failed, sum(int(r.get("iterations") or 0) for r in summary.rows)


def _label(group: str, rows: Sequence[dict[str, Any]]) -> str:
    if group in DEFAULT_LABELS and group not in LLM_GROUPS:
        return DEFAULT_LABELS[group]
    levels = next((r.get("levels") for r in rows if r.get("levels")), None)
    if levels:
        return ("Level " if len(levels) == 1 else "Levels ") + " + ".join(str(x) for x in levels)
    return DEFAULT_LABELS.get(group, group)


def compare(group: GroupSummary, reference: GroupSummary, *, seed: int = stats.DEFAULT_SEED) -> Comparison:
    a, b = list(group.deltas), list(reference.deltas)
    welch = stats.welch(a, b)
    perm = stats.permutation_test(a, b, seed=seed) if a and b else None
    boot = stats.bootstrap_diff_ci(a, b, level=CI_LEVEL, seed=seed)
    diff = (group.mean - reference.mean) if group.mean is not None and reference.mean is not None else None
    if welch is None or perm is None or boot is None:
        verdict = "untested"
    else:
        # Every test able to reject must reject; the exact permutation test cannot at tiny n (min p ≥ α).
        rejects = welch.p < ALPHA and not boot[0] <= 0.0 <= boot[1]
        if perm.min_p < ALPHA:
            rejects = rejects and perm.p < ALPHA
        verdict = "beyond noise" if rejects else "within noise"
    return Comparison(group=group.group, reference=reference.group, n=len(a), n_ref=len(b), diff=diff,
                      welch=welch, permutation=perm, bootstrap=boot, verdict=verdict)


def analyse(rows: Sequence[dict[str, Any]], args: dict[str, Any] | None = None) -> Analysis:
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: (str(r["group"]), int(r["repeat"]))):
        by_group[str(row["group"])].append(row)
    groups: dict[str, GroupSummary] = {}
    for g in group_order(by_group):
        deltas = tuple(float(r["delta"]) for r in by_group[g] if r.get("delta") is not None)
        groups[g] = GroupSummary(group=g, label=_label(g, by_group[g]), rows=tuple(by_group[g]), deltas=deltas,
                                 mean=stats.mean(deltas), std=stats.std(deltas),
                                 ci=stats.mean_ci(deltas, CI_LEVEL), ratio_vs_a=None)
    ref = groups.get(REFERENCE)
    if ref is not None and ref.mean:
        for g, s in groups.items():
            if s.mean is not None:
                groups[g] = replace(s, ratio_vs_a=s.mean / ref.mean + 0.0)  # + 0.0: no -0.00
    vs_reference = {g: compare(s, ref) for g, s in groups.items() if ref is not None and g != REFERENCE}
    vs_classic = {(g, c): compare(groups[g], groups[c]) for g in LLM_GROUPS for c in CLASSIC_GROUPS
                  if g in groups and c in groups}
    settings: dict[str, dict[str, Any]] = {}
    for key in SETTING_KEYS:
        values = {g: _uniform([(r.get("settings") or {}).get(key) for r in s.rows]) for g, s in groups.items()}
        if any(v is not None for v in values.values()):
            settings[key] = values
    return Analysis(groups=groups, vs_reference=vs_reference, vs_classic=vs_classic, settings=settings,
                    providers=tuple(sorted({str(r["provider"]) for r in rows if r.get("provider") not in (None, NO_LLM)})),
                    models=tuple(sorted({str(r["model"]) for r in rows
                                         if r.get("model") and r.get("provider") not in (None, NO_LLM)})),
                    args=dict(args or {}))


def _uniform(values: list[Any]) -> Any:
    distinct = {json.dumps(v, sort_keys=True) for v in values}
    return values[0] if len(distinct) == 1 else "varies: " + ", ".join(sorted(distinct))


def mechanism_rows(summary: GroupSummary) -> list[dict[str, Any]]:
    """Level-2 mechanisms of one group, by design region (template or custom hash), over all repeats."""
    acc: dict[str, dict[str, Any]] = {}
    for row in summary.rows:
        for m in row.get("mechanisms") or ():
            region = str(m.get("region") or m.get("name") or "?")
            entry = acc.setdefault(region, {"region": region, "generated": 0, "retested": 0, "kept": 0, "reverted": 0,
                                            "other": 0, "hook_calls": Counter(), "hook_effects": Counter(),
                                            "repeats": set(), "uncalled_kept": 0})
            # a retest is the same design tried again in the next cycle: one design, judged by its last trial
            if m.get("retest_of") is None:
                entry["generated"] += 1
            verdict = m.get("verdict")
            if verdict == "retest":
                entry["retested"] += 1
            else:
                entry[verdict if verdict in ("kept", "reverted") else "other"] += 1
            calls = Counter({h: int(c) for h, c in (m.get("hook_calls") or {}).items()})
            entry["hook_calls"].update(calls)
            entry["hook_effects"].update({h: int(c) for h, c in (m.get("hook_effects") or {}).items()})
            entry["repeats"].add(row["repeat"])
            if verdict == "kept" and not sum(calls.values()):
                entry["uncalled_kept"] += 1
    out = []
    for region in sorted(acc):
        e = acc[region]
        out.append({**e, "calls": sum(e["hook_calls"].values()), "hook_calls": dict(sorted(e["hook_calls"].items())),
                    "effects": sum(e["hook_effects"].values()), "hook_effects": dict(sorted(e["hook_effects"].items())),
                    "repeats": len(e["repeats"])})
    return out


# --- formatting ----------------------------------------------------------------------------------


def delta_decimals(analysis: Analysis) -> int:
    """Decimals that show the largest |mean Δ| / std with three significant digits (3 to 8)."""
    scale = max([abs(v) for s in analysis.groups.values() for v in (s.mean, s.std) if v] or [1.0])
    return max(3, min(8, 2 - math.floor(math.log10(scale))))


def fmt_num(value: float | None, decimals: int, *, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_ci(ci: tuple[float, float] | None, decimals: int) -> str:
    return "–" if ci is None else f"[{ci[0]:.{decimals}f}, {ci[1]:.{decimals}f}]"


def fmt_t(w: stats.Welch | None) -> tuple[str, str]:
    if w is None:
        return "–", "–"
    return ("±inf" if math.isinf(w.t) else f"{w.t:.2f}"), f"{w.df:.1f}"


# --- the reading ---------------------------------------------------------------------------------


def p_phrase(name: str, p: float | None) -> str:
    """``Welch p=0.012`` or ``Welch p<0.001``."""
    text = fmt_p(p)
    return f"{name} p{text}" if text.startswith("<") else f"{name} p={text}"


def _sentence(c: Comparison, d: int, *, full: bool = True) -> str:
    if c.verdict == "untested":
        return f"{c.group} vs {c.reference}: not tested (n={c.n} vs {c.n_ref}; a test needs at least 2 repeats each)"
    assert c.welch is not None and c.permutation is not None and c.bootstrap is not None
    tests = f"{p_phrase('Welch', c.welch.p)}, {p_phrase('permutation', c.permutation.p)}"
    if full:
        tests += f", bootstrap {CI_LEVEL:.0%} CI of the difference {fmt_ci(c.bootstrap, d)}"
    if c.verdict == "within noise":
        return (f"{c.group} vs {c.reference}: difference {fmt_num(c.diff, d, signed=True)} is within noise "
                f"at n={c.n} vs {c.n_ref} ({tests})")
    direction = "better (lower Δ)" if (c.diff or 0.0) < 0 else "worse (higher Δ)"
    return (f"{c.group} vs {c.reference}: {c.group} is {direction} by {fmt_num(abs(c.diff or 0.0), d)}, "
            f"beyond noise at n={c.n} vs {c.n_ref} ({tests})")


def reading(analysis: Analysis) -> str:
    """One paragraph generated from the numbers; it says plainly what is within noise."""
    d = delta_decimals(analysis)
    parts = ["Lower val_bpb is better, so a more negative Δ is a larger improvement."]
    for g, s in analysis.groups.items():
        ratio = f", {s.ratio_vs_a:.2f}× group {REFERENCE}'s" if s.ratio_vs_a is not None and g != REFERENCE else ""
        parts.append(f"Group {g} ({s.label}): mean Δ {fmt_num(s.mean, d, signed=True)} "
                     f"(std {fmt_num(s.std, d)}, n={s.n}{ratio}).")
    if REFERENCE not in analysis.groups:
        parts.append(f"Group {REFERENCE} is missing, so no group is tested against it.")
    comparisons = list(analysis.vs_reference.values())
    if comparisons:
        parts.append(f"Against group {REFERENCE} — " + "; ".join(_sentence(c, d) for c in comparisons) + ".")
        tested = [c for c in comparisons if c.verdict != "untested"]
        if tested and all(c.verdict == "within noise" for c in tested):
            parts.append(f"No group differs from {REFERENCE} by more than noise at these sample sizes.")
    bilevel = [c for (g, _), c in analysis.vs_classic.items() if g != REFERENCE]
    level1 = [c for (g, _), c in analysis.vs_classic.items() if g == REFERENCE]
    if bilevel or level1:
        parts.append("Against classical search — "
                     + "; ".join(_sentence(c, d, full=False) for c in bilevel + level1) + ".")
    if bilevel:
        ahead = [f"{c.group} vs {c.reference}" for c in bilevel if c.verdict == "beyond noise" and (c.diff or 0) < 0]
        behind = [f"{c.group} vs {c.reference}" for c in bilevel if c.verdict == "beyond noise" and (c.diff or 0) > 0]
        parts.append("Bilevel groups ahead of classical search beyond noise: " + (", ".join(ahead) or "none")
                     + "; behind it beyond noise: " + (", ".join(behind) or "none") + ".")
    everything = [c for c in comparisons + bilevel + level1 if c.verdict != "untested"]
    floors = sorted({c.permutation.min_p for c in everything if c.verdict == "beyond noise" and c.permutation_cannot_reject})
    if floors:
        parts.append(f"At these repeat counts the exact permutation test cannot go below p={floors[0]:.3f}, so "
                     "those beyond-noise calls rest on Welch's test and the bootstrap alone.")
    if len(everything) > 1:
        threshold = ALPHA / len(everything)
        beyond = [c for c in everything if c.verdict == "beyond noise"]
        held = sum(c.welch is not None and c.welch.p < threshold for c in beyond)
        parts.append(f"The p-values are not corrected for the {len(everything)} comparisons made; at a Bonferroni "
                     f"threshold of {threshold:.4f}, {held} of the {len(beyond)} beyond-noise calls have Welch p below it.")
    spread = analysis.baseline_spread()
    if spread is not None and spread[0] > 0:
        text = (f"Baselines measured from the same train.py with the same seed differ across groups by up to "
                f"{fmt_num(spread[0], d)} val_bpb (repeat {spread[1]}); that is measurement noise (for instance a "
                f"time budget that buys fewer steps on a busy machine), and every Δ carries it")
        called = [abs(c.diff) for c in everything if c.verdict == "beyond noise" and c.diff is not None]
        if called and spread[0] >= min(called):
            text += ", at least as large as a difference called beyond noise above, so such a call may reflect baseline noise rather than the search"
        parts.append(text + ".")
    for g, s in analysis.groups.items():
        failed, total = failed_trials(s)
        if total and failed * 2 >= total:
            parts.append(f"In group {g}, {failed} of {total} trials crashed, failed or timed out, so its Δ says more "
                         "about broken trials than about its search.")
    if analysis.offline:
        parts.append("The researcher was the offline stand-in, so none of this says how an LLM researcher would do.")
    return " ".join(parts)


# --- figures -------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _traces(summary: GroupSummary):
    import numpy as np

    traces = [[math.nan if v is None else float(v) for v in (r.get("trace") or [])] for r in summary.rows]
    traces = [t for t in traces if t]
    if not traces:
        return None
    width = max(len(t) for t in traces)
    return np.array([t + [math.nan] * (width - len(t)) for t in traces])


def plot_best_so_far(analysis: Analysis, path: Path) -> Path:
    """Best-so-far val_bpb (left) and its change from each repeat's own baseline (right) per
    iteration: mean line, ±1 std band, n per group in the legend."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    for i, (g, s) in enumerate(analysis.groups.items()):
        data = _traces(s)
        if data is None:
            continue
        color = f"C{i}"  # the same colour per group in both figures
        for ax, values in ((axes[0], data), (axes[1], data - data[:, :1])):
            with warnings.catch_warnings():  # an all-NaN column: a trace shorter than the others
                warnings.simplefilter("ignore", RuntimeWarning)
                m = np.nanmean(values, axis=0)
                sd = np.nanstd(values, axis=0, ddof=1) if len(values) > 1 else np.zeros_like(m)
            x = np.arange(len(m))
            ax.plot(x, m, color=color, marker="o", ms=3, label=f"{g}: {s.label} (n={len(values)})")
            ax.fill_between(x, m - np.nan_to_num(sd), m + np.nan_to_num(sd), color=color, alpha=0.15)
    axes[0].set_ylabel("best-so-far val_bpb (lower is better)")
    axes[1].set_ylabel("best-so-far − own baseline")
    for ax in axes:
        ax.set_xlabel("inner iteration (0 = baseline)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[1].axhline(0.0, color="black", lw=0.8)
    axes[0].legend(fontsize=8, loc="upper right")
    fig.suptitle("Best-so-far val_bpb per group: mean ± 1 std over repeats")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_delta_by_group(analysis: Analysis, path: Path) -> Path:
    """Every repeat's Δ as a dot over a box plot per group, n under each group's name."""
    import numpy as np

    plt = _pyplot()
    names = [g for g, s in analysis.groups.items() if s.deltas]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(names) + 2), 4.5), dpi=110)
    if names:
        data = [list(analysis.groups[g].deltas) for g in names]
        ax.boxplot(data, positions=range(len(names)), widths=0.5, showfliers=False)
        rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
        colors = {g: f"C{i}" for i, g in enumerate(analysis.groups)}
        for i, (g, values) in enumerate(zip(names, data, strict=True)):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=22, color=colors[g], zorder=3)
        ax.set_xticks(range(len(names)), [f"{g}\nn={analysis.groups[g].n}" for g in names])
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_ylabel("Δ val_bpb = best − baseline (negative is better)")
    ax.set_title("Δ per repeat, by group")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# --- REPORT.md -----------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _settings_lines(analysis: Analysis) -> list[str]:
    lines = []
    for key, per_group in analysis.settings.items():
        values = {json.dumps(v, sort_keys=True) for v in per_group.values()}
        shown = (next(iter(per_group.values())) if len(values) == 1
                 else "; ".join(f"{g}: {v}" for g, v in per_group.items()))
        lines.append(f"- {key}: {shown}")
    no_llm = [g for g, s in analysis.groups.items() if any(r.get("provider") == NO_LLM for r in s.rows)]
    lines.append(f"- provider: {', '.join(analysis.providers) or 'none recorded'}"
                 + (f" (model {', '.join(analysis.models)})" if analysis.models else "")
                 + (f"; {', '.join(no_llm)} use no researcher" if no_llm else ""))
    lines.append("- repeats per group: " + ", ".join(f"{g}={len(s.rows)}" for g, s in analysis.groups.items()))
    if analysis.args:
        lines.append("- ablation arguments (`ablation.json`): `" + json.dumps(analysis.args, sort_keys=True, default=str) + "`")
    return lines


def _comparison_row(c: Comparison, d: int) -> list[str]:
    t, df = fmt_t(c.welch)
    perm = "–" if c.permutation is None else (
        f"{fmt_p(c.permutation.p)} ({'exact, ' + str(c.permutation.resamples) + ' splits' if c.permutation.exact else str(c.permutation.resamples) + ' resamples'})")
    return [c.group, c.reference, f"{c.n} vs {c.n_ref}", fmt_num(c.diff, d, signed=True), t, df,
            fmt_p(c.welch.p if c.welch else None), perm, fmt_ci(c.bootstrap, d), c.verdict]


def _endpoint_delta(row: dict[str, Any]) -> float | None:
    endpoint = row.get("endpoint") or {}
    return endpoint.get("delta")


def paired_comparisons(analysis: Analysis) -> list[tuple[str, str, stats.Paired, float | None, float | None]]:
    """Every group against group A, paired by repeat (the same seed), on the search Δ and on the
    endpoint Δ: (group, measure, paired statistics, paired-t p and Wilcoxon p, both Holm-corrected
    over all rows)."""
    reference = analysis.groups.get(REFERENCE)
    if reference is None:
        return []
    by_repeat = {r["repeat"]: r for r in reference.rows}
    found = []
    for g, s in analysis.groups.items():
        if g == REFERENCE:
            continue
        for label, value in (("search Δ", lambda r: r.get("delta")), ("endpoint Δ", _endpoint_delta)):
            pairs = [(value(r), value(by_repeat[r["repeat"]])) for r in s.rows if r["repeat"] in by_repeat]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            if len(pairs) >= 2:
                found.append((g, label, stats.paired([a for a, _ in pairs], [b for _, b in pairs])))
    t_holm = stats.holm([p.t_p for *_, p in found])
    w_holm = stats.holm([p.wilcoxon_p for *_, p in found])
    return [(g, label, p, tp, wp) for (g, label, p), tp, wp in zip(found, t_holm, w_holm, strict=True)]


def failure_rates(analysis: Analysis) -> dict[str, tuple[int, int]]:
    return {g: failed_trials(s) for g, s in analysis.groups.items()}


def paired_lines(analysis: Analysis) -> list[str]:
    """The report's section of :func:`paired_comparisons`, with the failed-trial rate of each group."""
    if REFERENCE not in analysis.groups:
        return []
    lines = ["", "## Paired by seed: each group − group A", "",
             "Repeat r of every group uses seed base + r: the same training seed and, for the offline researcher, "
             "the same random draws. *Search Δ* is the run's own best − its baseline (biased: a minimum over noisy "
             "trials); *endpoint Δ* re-measures the baseline and the final incumbent on held-out training seeds "
             "no trial used. Negative = the group did better than A. Paired t and Wilcoxon signed-rank p, "
             "Holm-corrected over the rows of this table.", ""]
    failures = [f"{g} {f}/{t} ({f / t:.0%})" if t else f"{g} –" for g, (f, t) in failure_rates(analysis).items()]
    found = paired_comparisons(analysis)
    if not found:
        return lines + ["Fewer than two paired repeats: nothing to compare.", "",
                        "Failed trials (crash, fail, timeout) by group: " + "; ".join(failures) + "."]
    d = delta_decimals(analysis)
    rows = [[g, label, p.n, fmt_num(p.mean_diff, d, signed=True), fmt_ci(p.ci, d), fmt_p(tp), fmt_p(wp)]
            for g, label, p, tp, wp in found]
    lines += _table(["group", "measure", "n", "mean diff", f"{CI_LEVEL:.0%} CI", "paired t p (Holm)",
                     "Wilcoxon p (Holm)"], rows)
    lines += ["", "Failed trials (crash, fail, timeout) by group: " + "; ".join(failures) + "."]
    return lines


def render(analysis: Analysis, title: str, n_rows: int) -> str:
    d = delta_decimals(analysis)
    n_text = ", ".join(f"{g} n={s.n}" for g, s in analysis.groups.items())
    lines = [f"# Ablation report — `{title}`", "",
             f"Generated by `experiments.report` from `{RESULTS_NAME}` ({n_rows} rows); every number below "
             "is computed from it. Regenerate with `python -m experiments.ablation report DIR`; do not edit by hand.",
             "", "## Settings", "", *_settings_lines(analysis), ""]
    if analysis.offline:
        lines += ["## About the researcher", "", OFFLINE_NOTE, ""]
    lines += ["## Reading", "", reading(analysis), ""]
    lines += ["## Δ val_bpb by group", "",
              f"Δ = best − baseline val_bpb per repeat (negative = better); mean, sample std, t-based {CI_LEVEL:.0%} "
              f"CI of the mean; ratio = mean Δ / group {REFERENCE}'s mean Δ.", ""]
    lines += _table(["group", "levels", "n", "mean Δ", "std", f"{CI_LEVEL:.0%} CI", f"ratio vs {REFERENCE}", "no Δ"],
                    [[g, s.label, s.n, fmt_num(s.mean, d, signed=True), fmt_num(s.std, d), fmt_ci(s.ci, d),
                      "–" if s.ratio_vs_a is None else f"{s.ratio_vs_a:.2f}", s.missing]
                     for g, s in analysis.groups.items()])
    header = ["group", "vs", "n", "Δ diff", "Welch t", "df", "Welch p", "permutation p",
              f"bootstrap {CI_LEVEL:.0%} CI of diff", "reading"]
    if analysis.vs_reference:
        lines += ["", f"### Against group {REFERENCE}", ""]
        lines += _table(header, [_comparison_row(c, d) for c in analysis.vs_reference.values()])
    if analysis.vs_classic:
        lines += ["", "### Against classical search", ""]
        lines += _table(header, [_comparison_row(c, d) for c in analysis.vs_classic.values()])
    lines += paired_lines(analysis)
    lines += ["", "## Figures", "", f"![best-so-far val_bpb per group]({BEST_SO_FAR_PNG})", "",
              f"Best-so-far val_bpb per iteration, mean ± 1 std over repeats ({n_text}).", "",
              f"![Δ per repeat by group]({DELTA_PNG})", "", f"Δ of every repeat, by group ({n_text}).", ""]
    lines += ["## Runs", ""]
    run_rows = []
    for g, s in analysis.groups.items():
        counts: Counter = Counter()
        usage: Counter = Counter()
        for r in s.rows:
            counts.update({k: int(v) for k, v in (r.get("counts") or {}).items()})
            usage.update({k: v for k, v in (r.get("usage") or {}).items() if isinstance(v, (int, float))})
        iters = sorted({int(r.get("iterations", 0)) for r in s.rows})
        base = stats.mean([float(r["baseline"]) for r in s.rows if r.get("baseline") is not None])
        best = stats.mean([float(r["best"]) for r in s.rows if r.get("best") is not None])
        run_rows.append([g, len(s.rows), fmt_num(base, 4), fmt_num(best, 4), "/".join(map(str, iters)),
                         " ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "–",
                         int(usage.get("calls", 0)), int(usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)),
                         f"{usage.get('cost_usd', 0.0):.4f}",
                         f"{sum(float(r.get('wall_s') or 0) for r in s.rows) / 60:.1f}"])
    lines += _table(["group", "repeats", "mean baseline", "mean best", "iterations/repeat", "trial outcomes (sum)",
                     "LLM calls", "tokens", "cost (USD)", "wall (min, sum)"], run_rows)
    baselines = analysis.baselines()
    if baselines:
        lines += ["", "### Baselines by repeat", "",
                  "Every group measures its baseline from the same `train.py` with the repeat's seed, so a row "
                  "should read the same across groups; a spread is measurement noise that Δ includes.", ""]
        names = list(analysis.groups)
        lines += _table(["repeat", *names, "spread"],
                        [[r, *(fmt_num(v.get(g), 6) for g in names), fmt_num(max(v.values()) - min(v.values()), 6)]
                         for r, v in baselines.items()])
    mech_groups = [(g, s) for g, s in analysis.groups.items() if any(r.get("mechanisms") for r in s.rows)
                   or g in ("C", "D")]
    if mech_groups:
        lines += ["", "## Level-2 mechanisms", "",
                  "Each design Level 2 generated, by region (library template or hash of custom code), summed over "
                  "the group's repeats. Hook calls are counted by the controller in the journal, so a mechanism "
                  "that was loaded but never called shows 0; *effects* are the calls that changed what happened "
                  "(a filter rejected or rewrote, a propose hook supplied the candidate, a decide hook overrode, "
                  "guidance changed what the proposer was told). *Retested*: designs whose first trial was inconclusive "
                  "and that were tried again in the next cycle; kept, reverted and failed count each design's last "
                  "verdict. *Failed*: the design crashed, failed to load or timed out.", ""]
        mech = []
        uncalled = 0
        for g, s in mech_groups:
            for m in mechanism_rows(s):
                uncalled += m["uncalled_kept"]
                hooks = ", ".join(f"{h}={c} ({m['hook_effects'].get(h, 0)})" for h, c in m["hook_calls"].items()) or "0"
                mech.append([g, f"`{m['region']}`", m["generated"], m["retested"], m["kept"], m["reverted"], m["other"], m["calls"],
                             m["effects"], hooks, f"{m['repeats']}/{len(s.rows)}"])
            if not mechanism_rows(s):
                mech.append([g, "(none generated)", 0, 0, 0, 0, 0, 0, 0, "–", f"0/{len(s.rows)}"])
        lines += _table(["group", "design", "generated", "retested", "kept", "reverted", "failed", "hook calls", "effects",
                         "by hook (effects)", "repeats"], mech)
        if uncalled:
            lines += ["", f"**{uncalled} kept mechanism(s) received no hook call** — a loaded mechanism that is "
                      "never called is a bug; see those repeats' journals."]
    lines += ["", "## How the statistics are computed", "",
              f"- {CI_LEVEL:.0%} CI of a mean: mean ± t(n−1) · s/√n, with the Student-t quantile from the "
              "regularized incomplete beta function (`experiments/stats.py`, no scipy).",
              "- Welch's t-test: unequal variances, Welch–Satterthwaite df, two-sided p from the Student-t CDF.",
              f"- Permutation test: two-sided, on the difference of means; exact (every split) up to "
              f"{stats.EXACT_PERMUTATION_LIMIT} splits, else {stats.DEFAULT_RESAMPLES} seeded resamples "
              "with p = (hits + 1)/(resamples + 1). With 3 vs 3 repeats its smallest possible p is 0.1.",
              f"- Bootstrap: percentile {CI_LEVEL:.0%} interval of the difference of means, {stats.DEFAULT_RESAMPLES} "
              "seeded resamples per group; too narrow at very small n, so it is never used alone.",
              f"- A difference is called *beyond noise* only when Welch p < {ALPHA}, the bootstrap interval excludes 0 "
              f"and the permutation p < {ALPHA} (where that test can reach it); otherwise *within noise*.", ""]
    return "\n".join(lines)


def load(directory: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    directory = Path(directory)
    results = directory / RESULTS_NAME
    if not results.exists():
        raise FileNotFoundError(f"{directory} has no {RESULTS_NAME}; pass the --out folder of an ablation run")
    args_path = directory / ARGS_NAME
    args = json.loads(args_path.read_text(encoding="utf-8")) if args_path.exists() else {}
    return load_results(results), args


TRIALS_NAME = "trials.jsonl.gz"
TRIAL_KEYS = ("group", "repeat", "seed", "loop", "iteration", "cycle", "status", "score", "changes", "region", "origin",
              "decided_by", "error", "hook_calls", "hook_effects", "duration_s")


def export_trials(directory: Path, rows: Sequence[dict[str, Any]]) -> Path | None:
    """One row per trial of every repeat (both loops), from the run journals, into ``trials.jsonl.gz``:
    what the per-repeat rows were computed from, small enough to commit. Without ``runs/`` (a
    committed results folder) the existing file is kept."""
    import gzip

    out = directory / TRIALS_NAME
    trials = []
    rank = {g: i for i, g in enumerate(group_order(r["group"] for r in rows))}
    for row in sorted(rows, key=lambda r: (rank[r["group"]], int(r["repeat"]))):
        journal = directory / str(row.get("run_dir") or "") / "journal.jsonl"
        if not row.get("run_dir") or not journal.is_file():
            return None if not out.exists() else out
        for line in journal.read_text(encoding="utf-8").splitlines():
            event = json.loads(line) if line.strip() else {}
            if event.get("type") != "trial":
                continue
            record = event["record"]
            proposal = record.get("proposal") or {}
            trials.append({"group": row["group"], "repeat": row["repeat"], "seed": row["seed"],
                           "loop": record["loop"], "iteration": record["iteration"], "cycle": record["cycle"],
                           "status": record["status"], "score": record.get("score"),
                           "changes": proposal.get("changes"), "region": proposal.get("region"),
                           "origin": proposal.get("origin"), "decided_by": record.get("decided_by"),
                           "error": (record.get("error") or "")[:200], "hook_calls": record.get("hook_calls") or {},
                           "hook_effects": record.get("hook_effects") or {}, "duration_s": record.get("duration_s")})
    with gzip.open(out.with_suffix(".tmp"), "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(t, sort_keys=False) + "\n" for t in trials))
    out.with_suffix(".tmp").replace(out)
    return out


def write_report(directory: Path) -> Path:
    """Write ``REPORT.md``, ``best_so_far.png``, ``delta_by_group.png`` and (from the run journals,
    when they are there) ``trials.jsonl.gz`` into ``directory``."""
    from core.state import atomic_write_text

    directory = Path(directory)
    rows, args = load(directory)
    export_trials(directory, rows)
    analysis = analyse(rows, args)
    plot_best_so_far(analysis, directory / BEST_SO_FAR_PNG)
    plot_delta_by_group(analysis, directory / DELTA_PNG)
    out = directory / REPORT_NAME
    atomic_write_text(out, render(analysis, directory.resolve().name, len(rows)))
    return out

