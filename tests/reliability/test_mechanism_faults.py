"""Mechanism faults: a hook that raises, returns the wrong type, overruns its deadline, rewrites the
records it is handed, or allocates without bound is detached and journaled; the loop runs every
iteration it was asked for, and the journal replays to exactly the state the controller holds.

Scenarios that could hang the interpreter if containment failed run in a child Python with a hard
timeout, so a regression fails the test instead of stalling the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.inner_loop import InnerLoopController
from core.mechanism import HOOKS, Mechanism
from core.records import FilterVerdict, Guidance, Proposal, Status
from core.state import RunDir
from tests.core.helpers import QuadraticExecutor, QuadraticProposer, RecordingEvaluator, make_mechanism
from tests.reliability.conftest import REPO, journal_sound, trials

ITERATIONS = 6


def build(path: Path, **kwargs) -> InnerLoopController:
    run = RunDir.open(path, fsync=False) if (path / "journal.jsonl").exists() else RunDir.create(path, fsync=False)
    return InnerLoopController(run=run, proposer=QuadraticProposer(), executor=QuadraticExecutor(),
                               evaluator=RecordingEvaluator(), **kwargs)


def run_with(path: Path, mechanism: Mechanism, *, iterations: int = ITERATIONS, hook_timeout_s: float = 5.0):
    controller = build(path, hook_timeout_s=hook_timeout_s)
    controller.attach(mechanism)
    controller.ensure_baseline()
    controller.run_cycle(0, iterations)
    controller.run.close()
    return controller


def assert_replay_matches(path: Path, controller: InnerLoopController) -> None:
    """A controller rebuilt from the journal holds exactly the records the live one holds."""
    journal_sound(path)
    replayed = build(path)
    try:
        assert [r.model_dump(mode="json") for r in replayed.history] == \
               [r.model_dump(mode="json") for r in controller.history]
        assert replayed.best_score == controller.best_score
    finally:
        replayed.run.close()


def detached_events(path: Path) -> list[dict]:
    return [e for e in journal_sound(path) if e["type"] == "mechanism_detached"]


def assert_detached_once_and_loop_finished(path: Path, controller: InnerLoopController, hook: str) -> dict:
    records = trials(journal_sound(path))
    assert len(records) == 1 + ITERATIONS, "the loop stopped short"
    events = detached_events(path)
    assert len(events) == 1 and events[0]["hook"] == hook, events
    assert events[0]["traceback_tail"], "the detach was journaled without its traceback"
    assert controller.mechanisms == []
    assert_replay_matches(path, controller)
    return events[0]


# -- raises / wrong type --------------------------------------------------------------------------------


def _raise(*_args):
    raise RuntimeError("mechanism bug")


@pytest.mark.parametrize("hook", HOOKS)
def test_a_hook_that_raises_is_detached_and_the_loop_finishes(tmp_path: Path, hook: str):
    controller = run_with(tmp_path / "run", make_mechanism("broken", **{hook: _raise}))
    event = assert_detached_once_and_loop_finished(tmp_path / "run", controller, hook)
    assert "RuntimeError: mechanism bug" in event["reason"]


WRONG = {"guidance": "more exploration please", "propose": {"x": 1.0}, "filter": True, "decide": 1}


@pytest.mark.parametrize("hook", sorted(WRONG))
def test_a_hook_that_returns_the_wrong_type_is_detached(tmp_path: Path, hook: str):
    controller = run_with(tmp_path / "run", make_mechanism("wrong", **{hook: lambda *_a: WRONG[hook]}))
    event = assert_detached_once_and_loop_finished(tmp_path / "run", controller, hook)
    assert "TypeError" in event["reason"] and "expected" in event["reason"]


@pytest.mark.parametrize("hook", ["guidance", "filter", "observe"])
def test_a_hook_that_raises_system_exit_is_detached_not_a_stop_of_the_run(tmp_path: Path, hook: str):
    def leave(*_args):
        raise SystemExit(0)

    controller = run_with(tmp_path / "run", make_mechanism("quitter", **{hook: leave}))
    assert_detached_once_and_loop_finished(tmp_path / "run", controller, hook)


# -- deadline -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("hook", HOOKS)
def test_a_hook_that_sleeps_past_its_deadline_is_detached_in_time(tmp_path: Path, hook: str):
    started = time.monotonic()
    controller = run_with(tmp_path / "run", make_mechanism("sleepy", **{hook: lambda *_a: time.sleep(30)}),
                          hook_timeout_s=0.2)
    assert time.monotonic() - started < 5, "the overrunning hook was waited for"
    event = assert_detached_once_and_loop_finished(tmp_path / "run", controller, hook)
    assert "HookTimeout" in event["reason"]


def run_scenario(tmp_path: Path, body: str, *, timeout: float = 60, memory_bytes: int | None = None) -> dict:
    """Run ``body`` (which must define ``MECH``, a Mechanism instance) in a child Python: attach it,
    run a baseline and ITERATIONS trials with a 0.3 s hook deadline; return what happened."""
    script = textwrap.dedent('''
        import json, resource, sys, time
        from pathlib import Path
        if {memory!r}:
            resource.setrlimit(resource.RLIMIT_AS, ({memory!r}, {memory!r}))
        from core.inner_loop import InnerLoopController
        from core.mechanism import Mechanism
        from core.records import Guidance
        from core.state import RunDir
        from tests.core.helpers import QuadraticExecutor, QuadraticProposer, RecordingEvaluator
    ''').format(memory=memory_bytes) + textwrap.dedent(body) + textwrap.dedent(f'''
        run = RunDir.create(Path({str(tmp_path / "run")!r}), fsync=False)
        c = InnerLoopController(run=run, proposer=QuadraticProposer(), executor=QuadraticExecutor(),
                                evaluator=RecordingEvaluator(), hook_timeout_s=0.3)
        c.attach(MECH)
        started = time.monotonic()
        c.ensure_baseline()
        c.run_cycle(0, {ITERATIONS})
        print(json.dumps({{"records": len(c.history), "attached": [m.name for m in c.mechanisms],
                          "seconds": time.monotonic() - started}}))
    ''')
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_hook_that_swallows_its_timeout_and_loops_in_finally_is_still_stopped(tmp_path: Path):
    result = run_scenario(tmp_path, '''
        class Stubborn(Mechanism):
            name = "stubborn"
            def guidance(self, ctx):
                while True:
                    try:
                        while True:
                            pass
                    except BaseException:
                        pass
                    finally:
                        while True:
                            pass
        MECH = Stubborn()
    ''')
    assert result == {**result, "records": 1 + ITERATIONS, "attached": []}
    assert detached_events(tmp_path / "run")[0]["hook"] == "guidance"


def test_a_hook_hidden_behind_a_property_cannot_hang_the_lookup(tmp_path: Path):
    result = run_scenario(tmp_path, '''
        def forever(self):
            while True:
                pass
        Trap = type("Trap", (Mechanism,), {"name": "trap", "filter": property(forever)})
        MECH = Trap()
    ''')
    assert result["records"] == 1 + ITERATIONS and result["attached"] == []


def test_a_hook_that_allocates_without_bound_is_detached_by_memory_error(tmp_path: Path):
    result = run_scenario(tmp_path, '''
        class Hog(Mechanism):
            name = "hog"
            def observe(self, record):
                self.chunks = []
                while True:
                    self.chunks.append(bytearray(64 * 1024 * 1024))
        MECH = Hog()
    ''', memory_bytes=1536 * 1024 * 1024)
    assert result["records"] == 1 + ITERATIONS and result["attached"] == []
    event = detached_events(tmp_path / "run")[0]
    assert event["hook"] == "observe" and ("MemoryError" in event["reason"] or "HookTimeout" in event["reason"])


def test_a_single_impossible_allocation_is_a_memory_error_and_a_detach(tmp_path: Path):
    controller = run_with(tmp_path / "run", make_mechanism("greedy", guidance=lambda ctx: bytearray(1 << 55)))
    event = assert_detached_once_and_loop_finished(tmp_path / "run", controller, "guidance")
    assert "MemoryError" in event["reason"] or "OverflowError" in event["reason"]


# -- mutation of what a hook is handed --------------------------------------------------------------------


def _zero_metrics(record):
    record.metrics["loss"] = 0.0


def _rewrite_history(ctx):
    ctx.history[0].metrics["loss"] = -1.0


def _widen_search(ctx):
    ctx.search["active_params"].append("EVIL")


def _rewrite_changes(proposal, ctx):
    proposal.changes["x"] = 0.0  # "improve" the candidate behind the proposer's back


def _tag_info(record, ctx):
    record.info["forged"] = True


MUTATORS = {
    "observe": {"observe": _zero_metrics},
    "guidance-history": {"guidance": _rewrite_history},
    "guidance-search": {"guidance": _widen_search},
    "filter": {"filter": _rewrite_changes},
    "decide": {"decide": _tag_info},
}


@pytest.mark.parametrize("case", sorted(MUTATORS))
def test_a_hook_that_mutates_what_it_is_given_cannot_rewrite_the_journal_or_history(tmp_path: Path, case: str):
    hooks = MUTATORS[case]
    (hook,) = hooks
    path = tmp_path / "run"
    controller = build(path)
    controller.search = {"active_params": ["x"]}
    controller.attach(make_mechanism("mutator", **hooks))
    controller.ensure_baseline()
    controller.run_cycle(0, ITERATIONS)
    controller.run.close()
    event = assert_detached_once_and_loop_finished(path, controller, hook)
    assert "TypeError" in event["reason"] and "read-only" in event["reason"]
    for record in trials(journal_sound(path)):
        assert record.metrics["loss"] == record.score, "a journaled metric no longer matches its score"
        assert record.metrics["loss"] == pytest.approx(record.metrics["x"] ** 2)
        assert "forged" not in record.info
    assert list(controller.search["active_params"]) == ["x"]


def test_records_handed_out_are_read_only_yet_serialise_and_copy_as_plain_data():
    proposal = Proposal(changes={"BETAS": [0.9, 0.95], "LR": 0.01})
    for mutate in (lambda: proposal.changes.update(LR=1.0), lambda: proposal.changes["BETAS"].append(1.0),
                   lambda: proposal.changes.pop("LR"), lambda: proposal.changes.setdefault("X", 1)):
        with pytest.raises(TypeError, match="read-only"):
            mutate()
    assert json.loads(proposal.model_dump_json()) == {"changes": {"BETAS": [0.9, 0.95], "LR": 0.01}, "hypothesis": "",
                                                     "region": "", "origin": "proposer", "payload": None}
    copy = proposal.model_copy(update={"changes": {"LR": 0.02}})
    with pytest.raises(TypeError):
        copy.changes["LR"] = 3.0
    mine = dict(proposal.changes)
    mine["LR"] = 5.0  # a plain copy is the holder's to change
    assert proposal.changes["LR"] == 0.01
    import copy as copy_module
    import pickle

    assert pickle.loads(pickle.dumps(proposal)) == proposal
    deep = copy_module.deepcopy(dict(proposal.changes))
    deep["BETAS"].append(1.0)
    assert list(proposal.changes["BETAS"]) == [0.9, 0.95]


def test_a_filter_that_rewrites_through_a_verdict_still_works(tmp_path: Path):
    """The sanctioned way to change a candidate is untouched by read-only records."""
    # a different snap each iteration: the same configuration twice would be refused as already measured
    rewrite = make_mechanism("rewriter", filter=lambda p, ctx: FilterVerdict.rewrite(
        p.model_copy(update={"changes": {"x": 0.5 + ctx.iteration / 100}}), "snap near 0.5"))
    controller = run_with(tmp_path / "run", rewrite)
    assert [r.proposal.changes["x"] for r in controller.history[1:]] == [0.5 + i / 100 for i in range(1, ITERATIONS + 1)]
    assert controller.mechanisms and not detached_events(tmp_path / "run")


def test_guidance_keeps_working_for_a_well_behaved_mechanism(tmp_path: Path):
    calm = make_mechanism("calm", guidance=lambda ctx: Guidance(text="steady"))
    controller = run_with(tmp_path / "run", calm)
    assert all(r.hook_calls.get("calm", {}).get("guidance") == 1 for r in controller.history[1:])
    assert all(r.status in (Status.KEEP, Status.DISCARD) for r in controller.history)


# -- in a whole train_opt run: a generated mechanism breaks mid-cycle ------------------------------------

BROKEN_SOURCES = {
    "raises-after-passing-the-check": ("filter", "RuntimeError", '''
        def filter(self, proposal, ctx):
            self.calls += 1
            if self.calls > 1:  # on trial it filters half the iterations (ABBA): the 2nd call is mid-cycle
                raise RuntimeError("design bug on call " + str(self.calls))
            return None
    '''),
    "rewrites-the-records-it-observes": ("observe", "read-only", '''
        def observe(self, record):
            self.calls += 1
            if self.calls > 6:  # past the 5 records replayed on attach: mid-cycle
                record.metrics["val_bpb"] = 0.0
    '''),
    "overruns-its-deadline": ("guidance", "HookTimeout", '''
        def guidance(self, ctx):
            self.calls += 1
            if self.calls > 1:
                time.sleep(60)
            return None
    '''),
}


@pytest.mark.parametrize("case", sorted(BROKEN_SOURCES))
def test_a_generated_mechanism_that_breaks_mid_cycle_is_reverted_and_the_run_finishes(
        case: str, standin: Path, plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import domains.train_opt.session as session_module
    from core.llm_client import RetryPolicy
    from domains.train_opt.session import TrainSession, make_settings
    from tests.reliability.conftest import executions, ran
    from tests.reliability.fake_researcher import FakeResearcher

    hook, evidence, body = BROKEN_SOURCES[case]
    source = ("import time\n\nfrom core.mechanism import Mechanism\n\n\nclass Broken(Mechanism):\n"
              "    name = \"broken\"\n\n    def __init__(self, **params):\n        super().__init__(**params)\n"
              "        self.calls = 0\n" + textwrap.indent(textwrap.dedent(body), "    "))
    monkeypatch.chdir(tmp_path)
    server = FakeResearcher(design_source=source)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-reliability-test")
    real = session_module.make_client
    monkeypatch.setattr(session_module, "make_client", lambda *a, **k: real(
        *a, **{"timeout_s": 5.0, "retry": RetryPolicy(max_retries=1, base_delay_s=0.001), **k}))
    settings = make_settings(target_dir=str(standin), provider="openai", inner_budget=4, outer_cycles=2,
                             hook_timeout_s=0.5)
    run_dir = tmp_path / "run"
    try:
        for start in (True, False):  # run, then resume: nothing is left to do
            session = TrainSession.start(settings, run_dir) if start else TrainSession.resume(run_dir)
            try:
                summary = session.run()
            finally:
                session.close()
            assert summary["complete"], summary["stopped"]
    finally:
        server.close()
    events = journal_sound(run_dir)
    inner, designs = trials(events), trials(events, "mechanism")
    assert len(inner) == 1 + 4 * 2 and len(designs) == 2
    assert designs[1].status is Status.CRASH and "detached during the cycle" in designs[1].error
    detached = [e for e in events if e["type"] == "mechanism_detached" and e["loop"] == "inner"]
    assert len(detached) == 1 and detached[0]["hook"] == hook and evidence in detached[0]["reason"]
    assert all(r.metrics.get("val_bpb") != 0.0 for r in inner), "a mechanism rewrote a journaled metric"
    assert len(executions(plan.ledger)) == len(ran(inner))
    assert [e["type"] for e in events].count("run_resumed") == 1
