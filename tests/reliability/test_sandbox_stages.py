"""Generated article stages run in sandboxed workers too: a hostile stage is contained, a hanging one
is ejected in time, and ``ctx.ask`` reaches the inner model through the controller (never the network)."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

import core.loader as loader_module
from core.host import PROJECT_ROOT
from core.loader import MechanismLoader
from core.sandbox import landlock_abi
from domains.article_opt.mechanism_research import STAGE_CONTRACT
from domains.article_opt.pipeline import Pipeline, SectionView, StageContext
from domains.article_opt.pipeline.contract import Findings
from domains.article_opt.pipeline.remote import RemoteStage


@pytest.fixture(autouse=True)
def no_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader_module, "check_policy", lambda *a, **k: None)  # the lint is not the boundary


ARTICLE = "# T\n\nIntro text.\n\n## Point\n\nA claim here.\n"


def stage_source(body: str, prelude: str = "") -> str:
    return ("import os, socket, subprocess, time\n"
            "from domains.article_opt.pipeline.contract import Finding, Findings, Stage, StageContext\n"
            + textwrap.dedent(prelude)
            + "\n\nclass Probe(Stage):\n    name = 'probe_stage'\n\n    def run(self, ctx):\n"
            + textwrap.indent(textwrap.dedent(body), "        ") + "\n")


def context(asker=None) -> StageContext:
    return StageContext(article=ARTICLE, sections=(SectionView("(lead)", "# T\n\nIntro text.\n"),
                                                   SectionView("Point", "## Point\n\nA claim here.\n")),
                        iteration=1, asker=asker)


def load(tmp_path: Path, source: str) -> RemoteStage:
    loaded = MechanismLoader(tmp_path / "run", contract=STAGE_CONTRACT, check_timeout_s=20).load(source)
    assert isinstance(loaded.instance, RemoteStage)
    return loaded.instance


def test_a_stage_asks_the_inner_model_through_the_controller(tmp_path: Path):
    asked = []

    def asker(instruction: str) -> Findings:
        asked.append(instruction)
        return Findings(summary="from the controller")

    stage = load(tmp_path, stage_source("f = ctx.ask('find vague words')\nreturn Findings(summary=f.summary)"))
    try:
        assert stage.run(context(asker)).summary == "from the controller"
        assert asked == ["find vague words"]
    finally:
        stage.close()


@pytest.mark.parametrize("attempt", ["read env file", "socket", "subprocess", "write project"])
def test_a_hostile_stage_achieves_nothing_outside_its_worker(tmp_path: Path, attempt: str):
    target = PROJECT_ROOT / "core" / "zz_stage_planted.py"
    code = {
        "read env file": f"open({str(PROJECT_ROOT / 'pyproject.toml')!r}).read()",
        "socket": "socket.create_connection(('127.0.0.1', 9), timeout=1)",
        "subprocess": "subprocess.run(['true'], check=True)",
        "write project": f"open({str(target)!r}, 'w').write('x')",
    }[attempt]
    body = f"try:\n    {code}\n    s = 'DONE'\nexcept BaseException as e:\n    s = type(e).__name__\nreturn Findings(summary=s)"
    stage = load(tmp_path, stage_source(body))
    try:
        summary = stage.run(context()).summary
    finally:
        stage.close()
        target.unlink(missing_ok=True) if attempt != "write project" else None
    assert not target.exists()
    if attempt != "read env file" or landlock_abi():
        assert summary != "DONE", summary


def test_a_stage_that_hangs_is_ejected_at_its_deadline_and_its_worker_killed(tmp_path: Path):
    body = "if 'Intro' in ctx.article and ctx.iteration == 1:\n    while True:\n        pass\nreturn Findings()"
    stage = load(tmp_path, stage_source(body))
    pipeline = Pipeline([], stage_timeout_s=1.0)
    pipeline.slots = []
    events = []
    pipeline.on_event = events.append
    from domains.article_opt.pipeline.pipeline import Slot
    pipeline.slots.append(Slot(stage=stage, origin="generated", digest="d", after="x"))
    stage.timeout_s = 1.0
    started = time.monotonic()
    pipeline.run(context())
    assert time.monotonic() - started < 3.0
    assert [e["type"] for e in events] == ["stage_failed", "stage_ejected"]
    assert "deadline" in events[0]["error"]
    assert not stage.worker.alive
