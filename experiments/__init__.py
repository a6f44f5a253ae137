"""The paper's ablation: groups A/B/C/D (which levels run) against reference searches (RANDOM, LOCAL, TPE, CMAES).

``python -m experiments.ablation run ...`` runs it (:mod:`experiments.ablation`), one row per
finished repeat in ``OUT/results.jsonl``; ``python -m experiments.ablation report OUT`` writes the
report (:mod:`experiments.report`).
"""
