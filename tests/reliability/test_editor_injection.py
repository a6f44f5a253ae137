"""The train.py editor: a value crafted to inject code is rejected, whatever its shape, and the file a
trial would run is left as it was. Values reach the editor from an LLM's JSON (plain types) and from
mechanisms that rewrite proposals in-process (any Python object), so both kinds are tried.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from core.plugins import ExecContext
from core.records import Proposal
from domains.train_opt import target as tgt
from domains.train_opt.executor import TrainExecutor
from tests.reliability.conftest import executions

TRAIN = '''"""A target with one knob of every kind."""
SEED = 42  # not editable
DEPTH = 8  # blocks
MATRIX_LR = 0.04  # learning rate
WINDOW_PATTERN = "SSSL"  # attention spans
ADAM_BETAS = (0.8, 0.95)  # betas
USE_BIAS = False  # bias terms


def main():
    print("---")
'''


class EvilStr(str):
    def __repr__(self) -> str:
        return "'SSSL'\nimport os; os.system('echo pwned')\n_ = 'x'"


class EvilFloat(float):
    def __repr__(self) -> str:
        return "__import__('os').system('echo pwned') or 0.04"


class EvilInt(int):
    def __repr__(self) -> str:
        return "8; import os"


INJECTIONS = [
    ("MATRIX_LR", "0.05\nimport os"),
    ("MATRIX_LR", "__import__('os').system('id')"),
    ("MATRIX_LR", "0.05  # harmless?"),
    ("MATRIX_LR", float("nan")),
    ("MATRIX_LR", float("inf")),
    ("MATRIX_LR", -float("inf")),
    ("MATRIX_LR", 10**400),
    ("MATRIX_LR", 1e308 * 10),
    ("MATRIX_LR", True),
    ("MATRIX_LR", None),
    ("MATRIX_LR", [0.05]),
    ("MATRIX_LR", {"value": 0.05}),
    ("MATRIX_LR", b"0.05"),
    ("MATRIX_LR", complex(0.05, 1)),
    ("MATRIX_LR", 5.0),  # out of range
    ("DEPTH", 3.5),
    ("DEPTH", "8"),
    ("DEPTH", "8; import os"),
    ("DEPTH", 2**70),
    ("DEPTH", -1),
    ("DEPTH", False),
    ("WINDOW_PATTERN", EvilStr("SSSL")),
    ("WINDOW_PATTERN", "SSSL'\nimport os\n_ = '"),
    ("WINDOW_PATTERN", 'SSSL"; import os; "'),
    ("WINDOW_PATTERN", "SSSL\n"),
    ("WINDOW_PATTERN", "S" * 17),
    ("WINDOW_PATTERN", ""),
    ("WINDOW_PATTERN", "ssl"),
    ("WINDOW_PATTERN", "SS\u0000SL"),
    ("WINDOW_PATTERN", 42),
    ("ADAM_BETAS", (0.9,)),
    ("ADAM_BETAS", (0.9, "0.95")),
    ("ADAM_BETAS", (0.9, 0.95, 0.99)),
    ("ADAM_BETAS", "(0.9, 0.95)"),
    ("ADAM_BETAS", [0.9, float("nan")]),
    ("ADAM_BETAS", [[0.9], [0.95]]),
    ("ADAM_BETAS", (True, False)),
    ("USE_BIAS", 1),
    ("USE_BIAS", "True"),
    ("USE_BIAS", "__import__('os') or True"),
    ("SEED", 7),
    ("os.system", "id"),
    ("DEPTH; import os", 8),
    ("__import__", 1),
]


@pytest.mark.parametrize(("name", "value"), INJECTIONS, ids=[f"{n}={v!r:.30}" for n, v in INJECTIONS])
def test_an_injected_value_is_rejected_and_the_source_is_untouched(name: str, value):
    with pytest.raises(ValueError):
        tgt.apply_changes(TRAIN, {name: value})


@pytest.mark.parametrize("value", [EvilFloat(0.05), EvilInt(8)], ids=["float-subclass", "int-subclass"])
def test_a_number_subclass_is_written_as_the_plain_literal_of_its_value(value):
    name = "MATRIX_LR" if isinstance(value, float) else "DEPTH"
    edited = tgt.apply_changes(TRAIN, {name: value})
    line = next(line for line in edited.splitlines() if line.startswith(f"{name} ="))
    assert line.split("=", 1)[1].split("#")[0].strip() == repr(type(value).__mro__[1](value))
    assert "import" not in edited and "pwned" not in edited
    ast.parse(edited)


def test_every_accepted_edit_is_a_one_line_literal_diff():
    edited = tgt.apply_changes(TRAIN, {"MATRIX_LR": 0.05, "DEPTH": 10, "WINDOW_PATTERN": "SLSL",
                                      "ADAM_BETAS": [0.9, 0.99], "USE_BIAS": True})
    patch = tgt.diff(TRAIN, edited)
    changed = [line for line in patch.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert len(changed) == 5
    for line in changed:
        value = line[1:].split("=", 1)[1].split("#")[0].strip()
        ast.literal_eval(value)


def test_a_mechanism_rewritten_injection_never_reaches_the_trial(tmp_path: Path, standin: Path, plan):
    """The path a rewriting mechanism takes: a Proposal carrying the object goes to the executor."""
    run_dir = tmp_path / "run"
    shutil.copytree(standin, run_dir / "target")
    before = (run_dir / "target" / "train.py").read_bytes()
    executor = TrainExecutor(workdir=run_dir / "target", original=standin / "train.py", timeout_s=30)
    for value in ("0.1\nimport os", float("nan"), 10**400, [0.1]):
        trial_dir = run_dir / "trials" / "inner" / "00001"
        trial_dir.mkdir(parents=True, exist_ok=True)
        ctx = ExecContext(loop="inner", iteration=1, cycle=0, run_dir=run_dir, trial_dir=trial_dir, incumbent=None)
        result = executor.execute(Proposal(changes={"WEIGHT_DECAY": value}), ctx)
        assert result.status == "crash" and "edit rejected" in result.detail["error"]
    assert (run_dir / "target" / "train.py").read_bytes() == before
    assert executions(plan.ledger) == [], "a rejected edit still started a trial"
