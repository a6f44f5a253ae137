"""The adversarial corpus: generated-mechanism sources that try to escape (shell-outs, sockets, writes
outside the run directory, secrets, reflection and eval gadgets, class tricks, resource bombs). Each
file under ``adversarial/`` states the stage and rule that must stop it on its first line::

    # expect: policy import-not-allowed: os
    # expect: contract timeout

and the test loads it through the real staged loader and checks exactly that. None may reach the
import stage, so none of them runs in this process.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from core.errors import MechanismError
from core.loader import MechanismLoader

CORPUS = Path(__file__).parent / "adversarial"
SOURCES = sorted(CORPUS.glob("*.py"))
EXPECT = re.compile(r"^# expect: (?P<stage>policy|contract) (?P<rule>.+)$")


def expectation(path: Path) -> tuple[str, str]:
    match = EXPECT.match(path.read_text().splitlines()[0])
    assert match, f"{path.name} does not start with '# expect: <stage> <rule>'"
    return match["stage"], match["rule"]


def test_the_corpus_is_large_and_covers_both_layers():
    stages = [expectation(p)[0] for p in SOURCES]
    assert len(SOURCES) >= 30
    assert stages.count("policy") >= 30 and stages.count("contract") >= 5


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_every_adversarial_source_is_stopped_by_the_stage_and_rule_it_names(path: Path, tmp_path: Path):
    stage, rule = expectation(path)
    loader = MechanismLoader(tmp_path, check_timeout_s=2.0)
    modules_before = set(sys.modules)
    with pytest.raises(MechanismError) as info:
        loader.load(path.read_text())
    err = info.value
    assert (err.stage, err.rule) == (stage, rule), f"{path.name}: stopped at {err.stage}/{err.rule}: {err}"
    message = str(err)
    assert "\n" not in message and rule in message, message
    assert not {m for m in set(sys.modules) - modules_before if m.startswith("bilevel_mech_")}, \
        "a rejected mechanism was imported into the controller"
    assert not Path("/tmp/bilevel-pwned").exists()


ORDINARY = '''
"""What a reasonable generated mechanism writes must still pass every new rule."""
from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

from core.mechanism import Mechanism
from core.records import FilterVerdict, Proposal, ProposalContext


class Mode(enum.Enum):
    EXPLORE = "explore"
    EXPLOIT = "exploit"


class Saturated(ValueError):
    pass


@dataclass
class _Memory:
    seen: Counter = field(default_factory=Counter)


class Careful(Mechanism):
    name = "careful"

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.memory = _Memory()
        self.mode = Mode.EXPLORE

    def filter(self, proposal: "Proposal", ctx: ProposalContext) -> "FilterVerdict | None":
        key = proposal.key()
        self.memory.seen[key] += 1
        label = f"{type(self).__name__}:{key}"
        if type(proposal) is not Proposal or isinstance(proposal.changes, str):
            return None
        cached = getattr(self, "_cache", None)
        if cached is None:
            self._cache = {"label": "{} seen {} times".format(label, self.memory.seen[key])}
        try:
            ratio = 1 / (self.memory.seen[key] - 1)
        except ZeroDivisionError:
            ratio = 0.0
        if ratio > 0.5:
            return FilterVerdict.reject(self._cache["label"])
        return None
'''


def test_ordinary_mechanism_code_still_passes_the_policy_and_loads(tmp_path: Path):
    loaded = MechanismLoader(tmp_path, check_timeout_s=10.0).load(ORDINARY)
    assert loaded.name == "careful" and loaded.hooks_overridden == ("filter",)
