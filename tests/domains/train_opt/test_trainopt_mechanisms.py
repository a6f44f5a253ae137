"""train_opt's wiring of the mechanism library: the parameter space the proposing templates read, the
Level-2 designer filling it in, and the opt-in persistent memory (``--memory``) across runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from core.mechanism import ParamSpace
from core.mechanisms import space_param
from core.records import Proposal, ProposalContext
from domains.train_opt import target as tgt
from domains.train_opt.mechanism_research import DesignReply, MechanismDesigner, template_menu
from domains.train_opt.mechanisms import space_dims
from domains.train_opt.session import TrainSession, make_settings

STANDIN = Path(__file__).parent / "standin_target"


def standin_space() -> dict[str, dict[str, Any]]:
    source = (STANDIN / "train.py").read_text()
    return space_dims(tgt.discover(source), tgt.values(source))


def test_space_dims_cover_the_numeric_constants_with_their_ranges():
    dims = standin_space()
    specs = tgt.discover((STANDIN / "train.py").read_text())
    assert dims["TOTAL_BATCH_SIZE"]["kind"] == "pow2" and dims["TOTAL_BATCH_SIZE"]["value"] == 2**19
    assert dims["MATRIX_LR"]["kind"] == "float" and dims["MATRIX_LR"]["log"] is True
    assert dims["DEPTH"] == {"kind": "int", "low": 1, "high": 32, "value": 8}
    numeric = {n for n, s in specs.items() if s.editable and s.kind in ("int", "float") and s.low is not None}
    assert numeric <= set(dims)
    space = ParamSpace(dims)  # valid for the mechanisms as it is
    assert all(tgt.coerce(specs[n], space.move(n, dims[n]["value"], 1.0, __import__("random").Random(0))) is not None
               for n in numeric)


def test_space_dims_read_choices_from_a_pattern_alternation():
    source = 'WINDOW_PATTERN = "SL"  # pattern\n'
    specs = {"WINDOW_PATTERN": tgt.ParamSpec(name="WINDOW_PATTERN", kind="str", default="SL", pattern="^(L|SL|SSL)$")}
    assert space_dims(specs, tgt.values(source)) == {"WINDOW_PATTERN": {"kind": "choice", "choices": ["L", "SL", "SSL"],
                                                                         "value": "SL"}}
    free = {"WINDOW_PATTERN": tgt.ParamSpec(name="WINDOW_PATTERN", kind="str", default="SL", pattern=r"^[SL]{1,16}$")}
    assert space_dims(free, tgt.values(source)) == {}


class FixedDesigner:
    def __init__(self, reply: DesignReply) -> None:
        self.reply = reply

    def structured(self, **kwargs: Any) -> DesignReply:
        return self.reply


class FakeInner:
    search = type("S", (), {"active_params": ("DEPTH",)})()
    mechanisms: list = []
    history: list = []
    hook_timeout_s = 5.0


@pytest.mark.parametrize("template", ["surrogate", "pattern", "multiscale"])
def test_level2_designer_fills_the_space_of_a_proposing_template(template: str):
    assert "space" not in template_menu()[template]["default_params"]  # the researcher never writes it
    space = space_param(standin_space())
    designer = MechanismDesigner(client=FixedDesigner(DesignReply(template=template, params={"every": 2})),
                                 inner=FakeInner(), inner_budget=3, space=lambda: space)
    proposal = designer.propose(ProposalContext(loop="mechanism", iteration=1, cycle=1))
    assert isinstance(proposal, Proposal) and proposal.changes["params"] == {"every": 2}
    assert f'"space": {space!r}' in proposal.payload and '"every": 2' in proposal.payload


def test_memory_flag_remembers_a_run_for_the_next_one_on_the_same_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    clone = tmp_path / "clone"
    shutil.copytree(STANDIN, clone, ignore=shutil.ignore_patterns("__pycache__"))
    sessions = []
    for name in ("first", "second"):
        settings = make_settings(target_dir=str(clone), levels=("1",), inner_budget=4, outer_cycles=1, memory=True,
                                 seed=len(sessions))
        session = TrainSession.start(settings, tmp_path / name)
        try:
            assert [m.name for m in session.inner.mechanisms] == ["memory"]
            session.run()
            sessions.append(list(session.inner.history))
        finally:
            session.close()
    files = list((tmp_path / "cache" / "bilevel-autoresearch" / "memory").glob("*.json"))
    assert len(files) == 1  # one target, one file
    entries = json.loads(files[0].read_text())["entries"]
    first = sessions[0]
    kept = [r for r in first[1:] if r.kept]
    assert kept, "the stand-in run kept nothing: the test needs a keep to remember"
    assert any(e["run_id"] == "first" and e["score"] == min(r.score for r in kept) for e in entries)
    second = sessions[1]
    assert second[1].proposal.hypothesis.startswith("[memory] run first")
    assert second[1].hook_effects.get("memory", {}).get("propose") == 1


class MenuSpy(FixedDesigner):
    def structured(self, **kwargs: Any) -> DesignReply:
        self.menu = kwargs["context"]["templates"]
        return self.reply


@pytest.mark.parametrize(("kept", "offered"), [("tabu", False), ("bandit", False), ("surrogate", True),
                                               ("pattern", True), ("multiscale", True)])
def test_a_kept_template_is_offered_again_only_when_it_proposes(kept: str, offered: bool):
    # a kept filter or guidance mechanism keeps acting behind the next design; a kept proposer would be
    # answered for by the next design (attached in front), so designing it again is how to keep it
    from core.records import TrialRecord

    record = TrialRecord(iteration=1, cycle=1, loop="mechanism", status="keep", info={"mechanism": f"{kept}#1"},
                         proposal=Proposal(changes={"template": kept, "params": {}}, region=f"template:{kept}"))
    inner = FakeInner()
    inner.mechanisms = [type("M", (), {"name": f"{kept}#1"})()]
    spy = MenuSpy(DesignReply(template="tabu", params={}))
    MechanismDesigner(client=spy, inner=inner, inner_budget=3, space=lambda: space_param(standin_space())).propose(
        ProposalContext(loop="mechanism", iteration=2, cycle=2, history=(record,)))
    assert (kept in spy.menu) is offered
    assert all(name in spy.menu for name in template_menu() if name != kept)
