"""What the train_opt prompts tell a real model: Level 1.5's guidance, the terms, budget, noise and
crash reasons at Level 1; the protocol, the code rules and why earlier designs failed at Level 2.

Level-1 requests go through the real ``openai`` SDK to a fake server on 127.0.0.1, which captures
the prompt exactly as a model would receive it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.llm_client import RetryPolicy, make_client
from core.loader import MechanismLoader
from core.policy import STDLIB_ALLOWED
from core.records import Guidance, Proposal, ProposalContext, Status, TrialRecord
from domains.train_opt import target as tgt
from domains.train_opt.design_prompt import EXAMPLE, render_design_prompt
from domains.train_opt.mechanism_research import template_menu
from domains.train_opt.runner import LLMProposer
from tests.core.llm.conftest import FakeLLMServer

STANDIN_TRAIN = Path(__file__).parent / "standin_target" / "train.py"
SPECS = tgt.discover(STANDIN_TRAIN.read_text(encoding="utf-8"))
PARAMS = [name for name, spec in SPECS.items() if spec.editable]


@pytest.fixture
def server():
    fake = FakeLLMServer()
    try:
        yield fake
    finally:
        fake.close()


def search(**overrides) -> dict:
    return {"active_params": PARAMS, "frozen_params": [], "strategy": "explore", "step_scale": 1.0,
            "max_changes": 1, "guidance": ""} | overrides


def record(iteration: int, changes: dict, status: Status, *, score=None, error="", log_tail="", cycle=0,
           origin="proposer", metrics=None, info=None) -> TrialRecord:
    return TrialRecord(loop="inner", iteration=iteration, cycle=cycle, status=status, score=score, error=error,
                       log_tail=log_tail, proposal=Proposal(changes=changes, origin=origin, region="r"),
                       metrics=metrics or {}, info=info or {})


def level1_prompt(server: FakeLLMServer, tmp_path: Path, monkeypatch, ctx: ProposalContext, settings: dict) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    name = PARAMS[0]
    value = SPECS[name].default
    new = value * 2 if isinstance(value, (int, float)) and not isinstance(value, bool) and value else value
    server.script(server.openai_reply(json.dumps({"changes": {name: new}, "hypothesis": "h"})))
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    client = make_client("openai", base_url=server.openai_base_url, timeout_s=5, retry=RetryPolicy(max_retries=0))
    try:
        LLMProposer(client=client, run_dir=tmp_path, original=STANDIN_TRAIN, specs=SPECS).propose(ctx)
    except Exception:  # noqa: BLE001 - only the prompt that went out matters here
        pass
    finally:
        client.close()
    return server.requests[0].body["messages"][-1]["content"]


def test_level_1_5_guidance_reaches_the_level_1_prompt(server, tmp_path, monkeypatch):
    ctx = ProposalContext(loop="inner", iteration=4, cycle=1,
                          search=search(guidance="Warmdown helped twice; refine WARMDOWN_RATIO around 0.6."),
                          guidance=Guidance(text="tabu: avoid DEPTH:up"))
    prompt = level1_prompt(server, tmp_path, monkeypatch, ctx, {})
    assert "Warmdown helped twice; refine WARMDOWN_RATIO around 0.6." in prompt
    assert "tabu: avoid DEPTH:up" in prompt  # the mechanisms' guidance stays too


def test_level_1_prompt_defines_its_terms_and_states_budget_baseline_and_noise(server, tmp_path, monkeypatch):
    baseline = record(0, {}, Status.KEEP, score=1.234, origin="baseline", log_tail="device: cpu | threads: 2\n",
                      metrics={"val_bpb": 1.234, "training_seconds": 20.0, "num_steps": 300})
    earlier = record(1, {PARAMS[0]: 1}, Status.DISCARD, score=1.3, cycle=1)
    ctx = ProposalContext(loop="inner", iteration=2, cycle=1, history=(baseline, earlier),
                          search=search(strategy="exploit", step_scale=0.5))
    prompt = level1_prompt(server, tmp_path, monkeypatch, ctx,
                           {"inner_budget": 5, "outer_cycles": 3, "time_budget": 20, "noise_floor": 0.004})
    assert 'strategy "exploit": refine around the best configuration' in prompt
    assert "step scale 0.5: how far to move a value" in prompt
    assert "trial 2 of 5 in cycle 2 of 3" in prompt
    assert "each trial trains for 20 s" in prompt
    assert "val_bpb 1.234000, training_seconds 20, num_steps 300 (device: cpu | threads: 2)" in prompt
    assert "a gain must exceed 0.004 val_bpb" in prompt and "by more than the noise floor (0.004)" in prompt


def test_level_1_prompt_without_a_noise_floor_says_it_is_not_measured(server, tmp_path, monkeypatch):
    ctx = ProposalContext(loop="inner", iteration=1, cycle=0, search=search())
    assert "noise floor: not measured" in level1_prompt(server, tmp_path, monkeypatch, ctx, {})


def test_failed_trials_show_their_reason_in_the_level_1_history(server, tmp_path, monkeypatch):
    crash = record(3, {PARAMS[0]: 64}, Status.CRASH, error="no val_bpb line (exit 1)",
                   log_tail="step 10\nRuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    fail = record(4, {PARAMS[0]: 9.0}, Status.FAIL, error="FAIL reported (exit 1)")
    ctx = ProposalContext(loop="inner", iteration=5, cycle=0, history=(crash, fail), search=search())
    prompt = level1_prompt(server, tmp_path, monkeypatch, ctx, {})
    assert "[crash] (no val_bpb line (exit 1) | RuntimeError: CUDA out of memory" in prompt
    assert "[fail] (FAIL reported (exit 1))" in prompt


def design_prompt(history: tuple[TrialRecord, ...]) -> str:
    context = {"diagnosis": {"repeats": 0.8, "plateau": 0.1}, "templates": template_menu(), "inner_budget": 3}
    ctx = ProposalContext(loop="mechanism", iteration=len(history) + 1, cycle=2, history=history)
    return render_design_prompt(context, ctx, hook_timeout_s=5.0)


def test_level_2_prompt_tells_the_designer_why_each_design_failed():
    refused = TrialRecord(
        loop="mechanism", iteration=1, cycle=1, status=Status.CRASH,
        proposal=Proposal(changes={"template": None}, region="custom:ab12", origin="designer"),
        error="load failed at policy: policy: forbidden-import at line 3: import only the allowed modules",
        info={"stage": "policy", "rule": "forbidden-import"})
    raised = TrialRecord(
        loop="mechanism", iteration=2, cycle=2, status=Status.CRASH, score=0.0,
        proposal=Proposal(changes={"template": None}, region="custom:cd34", origin="designer"),
        error="mechanism was detached during the cycle (hook failure)",
        log_tail="Traceback (most recent call last):\nKeyError: 'WARMUP'\n", info={"mechanism": "warm_guard#2"})
    kept = TrialRecord(loop="mechanism", iteration=3, cycle=3, status=Status.KEEP, score=0.012,
                       proposal=Proposal(changes={"template": "tabu"}, region="template:tabu", origin="designer"),
                       info={"mechanism": "tabu#3"})
    prompt = design_prompt((refused, raised, kept))
    assert "#1 custom:ab12: failed (crash)" in prompt
    assert "stage policy, rule forbidden-import; load failed at policy: policy: forbidden-import at line 3" in prompt
    assert "#2 warm_guard#2: failed (crash), gain +0.000000. Why: mechanism was detached" in prompt
    assert "KeyError: 'WARMUP'" in prompt
    assert "#3 tabu#3: kept, gain +0.012000" in prompt


def test_level_2_prompt_states_the_protocol_and_the_rules_of_the_isolated_host():
    prompt = design_prompt(())
    for module in sorted(STDLIB_ALLOWED - {"__future__"}) + ["core.mechanism", "core.records"]:
        assert module in prompt
    for fact in ("ProposalContext:", "TrialRecord:", "FilterVerdict.reject", "Constraints(avoid_regions",
                 "no network, no files, no subprocesses", "JSON", "5 s", "eval/exec", "exactly one class"):
        assert fact in prompt, fact
    assert len(prompt) < 7_000  # seven templates in the menu; the old prompt sent a 5,000-character example alone


def test_the_level_2_example_is_a_valid_mechanism(tmp_path):
    loader = MechanismLoader(tmp_path, check_timeout_s=20.0)
    loaded = loader.load(EXAMPLE)
    try:
        assert loaded.name == "crash_cooldown"
        assert set(loaded.hooks_overridden) == {"observe", "filter"}
    finally:
        loader.unload(loaded)
