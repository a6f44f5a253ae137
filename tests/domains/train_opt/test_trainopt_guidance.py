"""Level 1.5 that helps: its guidance reaches the proposer (the prompt and the offline researcher read
the same text), it never freezes a parameter with an untried direction, and the offline researcher
never proposes a configuration already measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.llm_client import make_client
from core.records import Guidance, Proposal, ProposalContext, Status, TrialRecord
from core.search import ConfigPatch, initial_config
from core.state import RunDir
from domains.train_opt import offline
from domains.train_opt import target as tgt
from domains.train_opt.outer import analyze_and_patch
from domains.train_opt.runner import ChangeReply, LLMProposer

STANDIN_TRAIN = Path(__file__).parent / "standin_target" / "train.py"
SPECS = tgt.discover(STANDIN_TRAIN.read_text(encoding="utf-8"))
CURRENT = {name: spec.default for name, spec in SPECS.items()}
ALL = list(SPECS)


@pytest.fixture(autouse=True, scope="module")
def _handlers():
    offline.register()


def proposer(client: Any = None, seed: int = 0) -> LLMProposer:
    client = client or make_client("offline", level="inner", seed=seed)
    return LLMProposer(client=client, run_dir=STANDIN_TRAIN.parent, original=STANDIN_TRAIN, specs=SPECS)


def context(iteration: int, *, guidance: str = "", mechanism_text: str = "") -> ProposalContext:
    config = initial_config(ALL).model_copy(update={"guidance": guidance})
    return ProposalContext(loop="inner", iteration=iteration, cycle=1, search=config.model_dump(mode="json"),
                           guidance=Guidance(text=mechanism_text))


class Recording:
    """A client that records what it was asked and answers with a fixed change."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def structured(self, *, purpose: str, schema: Any, messages: list, context: dict) -> Any:
        self.requests.append({"prompt": messages[-1]["content"], "context": context})
        return ChangeReply(changes={"MATRIX_LR": 0.05}, hypothesis="recorded")


def test_level_1_5_guidance_reaches_the_prompt_and_the_researchers_context():
    client = Recording()
    proposer(client).propose(context(1, guidance="Not tried yet: TOTAL_BATCH_SIZE:down.", mechanism_text="[bandit] x"))
    request = client.requests[0]
    assert "Not tried yet: TOTAL_BATCH_SIZE:down." in request["prompt"]
    assert request["context"]["guidance_text"].splitlines() == ["Not tried yet: TOTAL_BATCH_SIZE:down.", "[bandit] x"]


def test_the_offline_researcher_follows_the_guidance_it_is_given():
    def moves(guidance: str) -> tuple[int, int]:
        hits = downs = 0
        for seed in range(1):
            for iteration in range(1, 31):
                changes = proposer(seed=seed).propose(context(iteration, guidance=guidance)).changes
                if "TOTAL_BATCH_SIZE" in changes:
                    hits += 1
                    downs += changes["TOTAL_BATCH_SIZE"] < CURRENT["TOTAL_BATCH_SIZE"]
        return hits, downs

    guided, guided_down = moves("Not tried yet: TOTAL_BATCH_SIZE:down.")
    plain, _ = moves("")
    assert guided >= 15 and guided > 3 * plain
    assert guided_down >= 0.7 * guided
    # a line that says to avoid something is not read as a wish
    avoided, _ = moves("Avoid TOTAL_BATCH_SIZE for now.")
    assert avoided <= plain + 3


def test_the_offline_researcher_never_proposes_a_measured_configuration():
    p = proposer()
    for iteration in range(1, 31):
        ctx = context(iteration)
        request = p.request_context(ctx, CURRENT)
        first = p.client.structured(purpose=offline.PURPOSE_PROPOSE, schema=ChangeReply,
                                    messages=[{"role": "user", "content": "propose"}], context=request)
        again = p.client.structured(purpose=offline.PURPOSE_PROPOSE, schema=ChangeReply,
                                    messages=[{"role": "user", "content": "propose"}],
                                    context={**request, "measured": [dict(first.changes)]})
        assert again.changes != first.changes, f"iteration {iteration} re-proposed a measured configuration"


def test_the_proposer_lists_the_measured_configurations_from_the_trial_files(tmp_path: Path):
    trial = tmp_path / "trials" / "inner" / "00001"
    trial.mkdir(parents=True)
    (trial / "train.py").write_text(tgt.apply_changes(STANDIN_TRAIN.read_text(), {"DEPTH": 10}))
    record = TrialRecord(loop="inner", iteration=1, status=Status.DISCARD, score=1.0,
                         proposal=Proposal(changes={"DEPTH": 10}), artifact="trials/inner/00001/train.py")
    p = LLMProposer(client=None, run_dir=tmp_path, original=STANDIN_TRAIN, specs=SPECS)
    ctx = ProposalContext(loop="inner", iteration=2, cycle=0, history=(record,))
    assert p.measured_changes(ctx, CURRENT) == [{"DEPTH": 10}]


class Freezer:
    def structured(self, *, purpose: str, schema: Any, messages: list, context: dict) -> ConfigPatch:
        self.context = context
        return ConfigPatch(freeze=["TOTAL_BATCH_SIZE", "DEPTH"], reason="tried twice without a keep")


def _history() -> list[TrialRecord]:
    def rec(i: int, changes: dict) -> TrialRecord:
        return TrialRecord(loop="inner", iteration=i, status=Status.DISCARD, score=1.1,
                           proposal=Proposal(changes=changes, region=tgt.region(SPECS, CURRENT, changes)))

    baseline = TrialRecord(loop="inner", iteration=0, status=Status.KEEP, score=1.0, proposal=Proposal(origin="baseline"))
    # TOTAL_BATCH_SIZE only ever moved up; DEPTH both ways
    return [baseline, rec(1, {"TOTAL_BATCH_SIZE": 2**20}), rec(2, {"TOTAL_BATCH_SIZE": 2**21}),
            rec(3, {"DEPTH": 6}), rec(4, {"DEPTH": 12})]


def test_level_1_5_never_freezes_a_parameter_whose_direction_is_untried(tmp_path: Path):
    with RunDir.create(tmp_path / "run") as run:
        client = Freezer()
        new = analyze_and_patch(client=client, journal=run.journal, config=initial_config(ALL), history=_history(),
                                cycle=0)
        assert client.context["untried"]["TOTAL_BATCH_SIZE"] == ["down"]
        assert new.frozen_params == ("DEPTH",) and "TOTAL_BATCH_SIZE" in new.active_params
        assert "TOTAL_BATCH_SIZE:down" in new.guidance
        event = run.journal.last("config")
        assert event["not_frozen"] == ["TOTAL_BATCH_SIZE not frozen: never tried down"]
        # the offline analyzer does not even ask for it
        offline_new = analyze_and_patch(client=make_client("offline", level="outer"), journal=run.journal,
                                        config=initial_config(ALL), history=_history(), cycle=0)
        assert "TOTAL_BATCH_SIZE" not in offline_new.frozen_params


def test_the_offline_researcher_keeps_to_a_parameters_pattern():
    import dataclasses
    import re

    from core.records import Constraints

    pattern = "^(L|SL|SSL|SSSL|SSLL)$"  # a target that allows fewer window patterns than the default list
    specs = {**SPECS, "WINDOW_PATTERN": dataclasses.replace(SPECS["WINDOW_PATTERN"], pattern=pattern)}
    p = LLMProposer(client=make_client("offline", level="inner", seed=0), run_dir=STANDIN_TRAIN.parent,
                    original=STANDIN_TRAIN, specs=specs)
    config = initial_config(["WINDOW_PATTERN", "DEPTH", "MATRIX_LR"])
    seen = set()
    for iteration in range(1, 21):
        ctx = ProposalContext(loop="inner", iteration=iteration, cycle=0, search=config.model_dump(mode="json"),
                              guidance=Guidance(constraints=Constraints(prefer_params=("WINDOW_PATTERN",))))
        changes = p.propose(ctx).changes  # an invalid value twice would raise InvalidProposal
        if "WINDOW_PATTERN" in changes:
            seen.add(changes["WINDOW_PATTERN"])
    assert seen and all(re.fullmatch(pattern, v) for v in seen)
