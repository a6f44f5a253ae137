"""Level 1.5 for train_opt: read the inner loop's trace, return a validated ``SearchConfig`` patch.

The analyzer (an LLM, or the offline stand-in's fixed rules) sees trace statistics — per-parameter
tries and keeps, repeated regions, crash rate, plateau length, the directions not tried yet — and the
recent trials. A freeze of a parameter with an untried direction is dropped and turned into guidance
(:func:`~core.search.guard_patch`); the patch is validated by :func:`~core.search.apply_patch`; an invalid patch, or no answer at all (the provider
failed after its retries), is journaled as rejected and the configuration stays as it was: the run
goes on. Whether an applied patch is kept is decided by the schedule after the cycle it governs
(:class:`core.schedule.BilevelRun`), which journals the verdict and restores the parent on a revert.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from core.errors import ConfigError, ProviderError
from core.records import TrialRecord
from core.search import ConfigPatch, SearchConfig, apply_patch, guard_patch, untried_directions
from core.state import Journal
from domains.train_opt.offline import PURPOSE_ANALYZE
from domains.train_opt.runner import load_prompt
from domains.train_opt.trace import search_records, trace_stats

log = logging.getLogger(__name__)


def analyze_and_patch(*, client: Any, journal: Journal, config: SearchConfig, history: list[TrialRecord],
                      cycle: int) -> SearchConfig:
    """Run one Level-1.5 step after ``cycle`` and journal its outcome. Returns the config in force."""
    cycle_records = [r for r in search_records(history) if r.cycle == cycle]
    stats = trace_stats(search_records(history))
    stats["cycle"] = trace_stats(cycle_records)
    untried = untried_directions(history, config.active_params)
    context = {"config": config.model_dump(mode="json"), "stats": stats, "untried": untried,
               "history": [{"iteration": r.iteration, "changes": r.proposal.changes, "status": r.status.value,
                            "score": r.score} for r in cycle_records]}
    prompt = load_prompt("analyze").substitute(
        config=json.dumps(context["config"], indent=1), stats=json.dumps(stats, indent=1, default=str),
        history="\n".join(f"#{h['iteration']} {json.dumps(h['changes'])} → {h['score']} [{h['status']}]"
                          for h in context["history"]) or "(none)",
        max_freeze=config.max_freeze_per_cycle, min_active=config.min_active,
        untried="\n".join(f"- {p}: {', '.join(d)}" for p, d in untried.items()) or "(none: every direction was tried)",
    )
    try:
        patch = client.structured(purpose=PURPOSE_ANALYZE, schema=ConfigPatch,
                                  messages=[{"role": "user", "content": prompt}], context=context)
        patch, notes = guard_patch(patch, untried)  # never freeze a parameter with an untried direction
        new = apply_patch(config, patch)
    except (ConfigError, ProviderError) as exc:  # an unusable answer, or no answer after the retries
        log.warning("Level 1.5 patch rejected after cycle %d: %s", cycle, exc)
        journal.append({"type": "config_rejected", "cycle": cycle, "error": str(exc)})
        return config
    journal.append({"type": "config", "cycle": cycle, "patch": patch.model_dump(mode="json"),
                    "config": new.model_dump(mode="json"), "stats": {k: v for k, v in stats.items() if k != "per_param"},
                    **({"not_frozen": notes} if notes else {})})
    return new
