"""The measured effects Level 2's designer reads: where they come from and what they may not touch.

``domains/train_opt/mechanisms/evidence.json`` is written by ``benchmarks/mechanisms_suite.py --evidence`` from
paired runs on the cheap suite's *training* targets; the held-out targets judge the designs it
informs, so the benchmark refuses to measure evidence on them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from core.mechanisms import TEMPLATES
from domains.train_opt import mechanism_research
from domains.train_opt.mechanism_research import EVIDENCE_PATH, template_evidence, template_menu
from experiments.suite import HELD_OUT, TARGETS

ROOT = Path(__file__).resolve().parents[3]


def bench():
    spec = importlib.util.spec_from_file_location("mechanisms_suite", ROOT / "benchmarks" / "mechanisms_suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_evidence_covers_every_template_from_training_targets_only():
    data = json.loads(EVIDENCE_PATH.read_text(encoding="utf-8"))
    assert set(data["targets"]) <= set(TARGETS) and not set(data["targets"]) & set(HELD_OUT)
    assert "stand-in" in data["about"]  # never presented as a model's result
    assert set(data["templates"]) == set(TEMPLATES)
    menu = template_menu()
    for name in TEMPLATES:
        assert menu[name]["evidence"] == data["templates"][name]
        assert set(menu[name]["evidence"]) == {"delta_regret", "won", "lost", "p_sign"}


def test_the_library_itself_carries_no_domain_measurements():
    # what a template was measured to do on train_opt's suite is train_opt's knowledge
    assert all("evidence" not in meta for meta in TEMPLATES.values())


@pytest.mark.parametrize("text", [
    "{not json",
    '{"about": "x", "targets": [], "seeds": [], "trials": 31}',  # no templates
    '{"about": "x", "targets": [], "seeds": [], "trials": 31, "templates": {"tabu": {"delta_regret": -0.1}}}',
    '{"about": "x", "targets": [], "seeds": [], "trials": 31, "templates": {"tabu": '
    '{"delta_regret": -0.1, "won": 3, "lost": 1, "p_sign": 7}}}',  # a p-value above 1
    '[1, 2, 3]',
])
def test_a_damaged_evidence_file_is_one_clear_error_naming_the_command_that_rewrites_it(tmp_path, text):
    path = tmp_path / "evidence.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as err:
        template_evidence(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith("evidence.json is damaged") and "--evidence" in message


def test_without_an_evidence_file_every_template_is_shown_as_not_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(mechanism_research, "template_evidence", lambda: template_evidence(tmp_path / "none.json"))
    assert all(entry["evidence"] is None for entry in template_menu().values())


@pytest.mark.parametrize("targets", [",".join(HELD_OUT), "lr_bowl,ridge", "needle,batch,cliff"])
def test_the_benchmark_refuses_to_measure_evidence_on_a_held_out_target(targets, tmp_path, capsys):
    out = tmp_path / "evidence.json"
    with pytest.raises(SystemExit) as stop:
        bench().main(["--targets", targets, "--seeds", "1", "--evidence", str(out)])
    assert stop.value.code == 2 and not out.exists()
    assert "training targets only" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--seeds", "0"], ["--seeds", "-3"], ["--arms", "nope"], ["--targets", "nope"],
                                  ["--targets", "lr_bowl", "--arms", "tabu,pattern", "--evidence", "out.json"]])
def test_the_benchmark_refuses_bad_arguments_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        bench().main(argv)
    assert stop.value.code == 2
    assert ": error: " in capsys.readouterr().err.strip().splitlines()[-1]


def test_evidence_is_the_paired_difference_to_no_mechanism_with_its_sign_test():
    module = bench()
    rows = [{"target": t, "arm": "none", "seed": s, "regret": 0.5} for t in ("lr_bowl", "cliff") for s in range(3)]
    # tabu: better on 5 pairs by 0.1, worse on 1 by 0.3; pattern: identical everywhere (no evidence either way)
    rows += [{"target": t, "arm": "tabu", "seed": s, "regret": 0.8 if (t, s) == ("cliff", 2) else 0.4}
             for t in ("lr_bowl", "cliff") for s in range(3)]
    rows += [{"target": t, "arm": "pattern", "seed": s, "regret": 0.5} for t in ("lr_bowl", "cliff") for s in range(3)]
    rows += [{"target": "lr_bowl", "arm": "surrogate/2", "seed": 0, "regret": 0.0}]  # a variant, not a template
    found = module.evidence(rows, ["none", "tabu", "pattern", "surrogate/2"], ["lr_bowl", "cliff"], [0, 1, 2])
    assert set(found["templates"]) == {"tabu", "pattern"}
    tabu = found["templates"]["tabu"]
    assert tabu["won"] == 5 and tabu["lost"] == 1 and tabu["delta_regret"] == pytest.approx((5 * -0.1 + 0.3) / 6, abs=1e-4)
    assert tabu["p_sign"] == pytest.approx(module.sign_test(5, 1), abs=1e-3)
    assert found["templates"]["pattern"] == {"delta_regret": 0.0, "won": 0, "lost": 0, "p_sign": 1.0}
    assert found["seeds"] == [0, 2] and found["targets"] == ["lr_bowl", "cliff"]
