"""Staged loading of generated mechanisms into sandboxed workers: every stage, and how each one fails."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import core.host as host_module
from core.errors import ConfigError, MechanismError, PolicyViolation
from core.host import RemoteMechanism, Worker
from core.loader import LoadedMechanism, MechanismLoader, load_library_mechanism
from core.mechanism import Mechanism
from core.policy import DEFAULT_ALLOWED
from core.records import FilterVerdict, Proposal, ProposalContext, Status, TrialRecord

AVOID_X = textwrap.dedent(
    '''
    """Reject every proposal in region "x"."""
    from core.mechanism import Mechanism
    from core.records import FilterVerdict


    class AvoidX(Mechanism):
        name = "avoid-x"

        def filter(self, proposal, ctx):
            if proposal.region == "x":
                return FilterVerdict.reject("region x is tabu")
            return None
    '''
)


def source_with_hook(hook: str, body: str, prelude: str = "") -> str:
    return (
        textwrap.dedent(prelude)
        + "from core.mechanism import Mechanism\n\n\nclass Probe(Mechanism):\n"
        + textwrap.indent(textwrap.dedent(f"def {hook}(self, *args):\n") + textwrap.indent(body, "    "), "    ")
        + "\n"
    )


@pytest.fixture
def loader(tmp_path: Path) -> MechanismLoader:
    return MechanismLoader(tmp_path / "run", check_timeout_s=10.0)


def ctx() -> ProposalContext:
    return ProposalContext(loop="test", iteration=3, cycle=1)


def test_valid_mechanism_loads_and_its_filter_hook_runs(loader: MechanismLoader) -> None:
    loaded = loader.load(AVOID_X)

    assert isinstance(loaded, LoadedMechanism)
    assert isinstance(loaded.instance, Mechanism)
    assert (loaded.name, loaded.class_name) == ("avoid-x", "AvoidX")
    assert loaded.hooks_overridden == ("filter",)
    assert re.fullmatch(r"mechanisms/[0-9a-f]{16}\.py", loaded.path)
    assert loaded.path == f"mechanisms/{loaded.digest[:16]}.py"
    assert (loader.run_dir / loaded.path).read_text() == AVOID_X
    assert isinstance(loaded.instance, RemoteMechanism)  # a proxy: the code runs in its worker
    assert loaded.instance.worker.alive and loaded.worker_pid != os.getpid()
    assert not any(name.startswith("bilevel_generated") for name in sys.modules)
    assert 0 < loaded.load_seconds < 10

    verdict = loaded.instance.filter(Proposal(region="x"), ctx())
    assert isinstance(verdict, FilterVerdict) and verdict.action == "reject"
    assert loaded.instance.filter(Proposal(region="y"), ctx()) is None
    with pytest.raises(AttributeError):
        loaded.name = "other"  # type: ignore[misc]  # frozen


def test_same_source_twice_reuses_the_file_in_two_separate_workers(loader: MechanismLoader) -> None:
    first = loader.load(AVOID_X)
    second = loader.load(AVOID_X)

    assert first.path == second.path and first.digest == second.digest
    assert first.worker_pid != second.worker_pid
    assert first.instance.worker.alive and second.instance.worker.alive
    assert [p.name for p in (loader.run_dir / "mechanisms").iterdir()] == [Path(first.path).name]


def test_unload_kills_the_worker_and_never_touches_sys_path(loader: MechanismLoader) -> None:
    path_before = list(sys.path)
    loaded = loader.load(AVOID_X)
    pid = loaded.worker_pid
    loader.unload(loaded)

    assert not loaded.instance.worker.alive
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie
    assert sys.path == path_before
    loader.unload(loaded)  # idempotent


def test_name_falls_back_to_the_class_name_and_params_reach_the_instance(loader: MechanismLoader) -> None:
    source = source_with_hook("decide", "return self.params['verdict']\n")
    loaded = loader.load(source, params={"verdict": True})

    assert loaded.name == "Probe"
    assert loaded.hooks_overridden == ("decide",)
    assert loaded.instance.params == {"verdict": True}


def test_syntax_error_fails_at_the_parse_stage_with_its_line(loader: MechanismLoader) -> None:
    broken = AVOID_X.replace("return None", "return (None")
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if "return (None" in text)
    with pytest.raises(MechanismError) as info:
        loader.load(broken)
    assert info.value.stage == "parse"
    assert f"at line {line}:" in str(info.value)
    assert list((loader.run_dir / "mechanisms").glob("*.py"))  # the write stage came first


def test_policy_violation_stops_before_any_child_process(
    loader: MechanismLoader, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("the contract check must not run for a policy violation")

    monkeypatch.setattr(host_module.subprocess, "Popen", no_child)
    with pytest.raises(PolicyViolation) as info:
        loader.load("import os\n" + AVOID_X)
    assert (info.value.stage, info.value.rule) == ("policy", "import-not-allowed: os")


def test_gp_regressor_import_is_rejected_at_policy_naming_sklearn(loader: MechanismLoader) -> None:
    source = "from sklearn.gaussian_process import GaussianProcessRegressor\n" + AVOID_X
    with pytest.raises(PolicyViolation) as info:
        loader.load(source)
    assert info.value.rule == "import-not-allowed: sklearn.gaussian_process"
    assert str(info.value).startswith("policy: import-not-allowed: sklearn.gaussian_process at line 1: ")


def test_allowed_but_missing_module_fails_cleanly_at_the_contract_stage(tmp_path: Path) -> None:
    missing = "bilevel_no_such_module_for_tests"
    permissive = MechanismLoader(tmp_path, allowed_imports=DEFAULT_ALLOWED | {missing})
    with pytest.raises(MechanismError) as info:
        permissive.load(f"import {missing}\n" + AVOID_X)
    err = info.value
    assert (err.stage, err.rule) == ("contract", "import-failed")
    assert "\n" not in str(err)
    assert f"ModuleNotFoundError: No module named '{missing}'" in str(err)
    assert "Traceback" in err.traceback_tail and len(err.traceback_tail) <= 2000


def test_import_that_loops_forever_times_out_and_the_child_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    children: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        children.append(proc)
        return proc

    monkeypatch.setattr(host_module.subprocess, "Popen", recording_popen)
    timeout = 1.0
    looping = MechanismLoader(tmp_path, check_timeout_s=timeout)
    started = time.monotonic()
    with pytest.raises(MechanismError) as info:
        looping.load("while True:\n    pass\n" + AVOID_X)
    elapsed = time.monotonic() - started

    assert (info.value.stage, info.value.rule) == ("contract", "timeout")
    assert elapsed < timeout + 2
    assert len(children) == 1
    assert children[0].returncode == -signal.SIGKILL  # killed with its group, and reaped


@pytest.mark.parametrize(
    ("hook", "body"),
    [
        ("guidance", "return 'more exploration'\n"),
        ("propose", "return {'LR': 0.1}\n"),
        ("filter", "return False\n"),
        ("decide", "return 1\n"),
    ],
)
def test_hook_returning_a_wrong_type_fails_the_contract_naming_the_hook(
    loader: MechanismLoader, hook: str, body: str
) -> None:
    with pytest.raises(MechanismError) as info:
        loader.load(source_with_hook(hook, body))
    err = info.value
    assert (err.stage, err.rule) == ("contract", f"hook-return-type: {hook}")
    assert f"{hook}() returned" in str(err)


def test_hook_that_raises_fails_the_contract_with_its_traceback(loader: MechanismLoader) -> None:
    with pytest.raises(MechanismError) as info:
        loader.load(source_with_hook("observe", "raise KeyError('missing-metric')\n"))
    err = info.value
    assert (err.stage, err.rule) == ("contract", "hook-raised: observe")
    assert "KeyError" in str(err) and "missing-metric" in err.traceback_tail


def test_constructor_that_rejects_params_fails_the_contract(loader: MechanismLoader) -> None:
    source = source_with_hook("__init__", "raise ValueError('need a window')\n")
    with pytest.raises(MechanismError) as info:
        loader.load(source, params={"window": 0})
    assert (info.value.stage, info.value.rule) == ("contract", "instantiate-failed")


def test_a_constructor_that_fails_only_for_the_live_instance_fails_at_instantiate(loader: MechanismLoader) -> None:
    # the probe instance passes the check; the second (live) one raises: same worker, same module
    source = source_with_hook("__init__", "MADE.append(1)\n"
                              "if len(MADE) > 1:\n    raise ValueError('not here')\n", prelude="MADE = []\n")
    with pytest.raises(MechanismError) as info:
        loader.load(source)
    assert (info.value.stage, info.value.rule) == ("instantiate", "instantiate-failed")
    assert "ValueError: not here" in str(info.value) and "ValueError" in info.value.traceback_tail
    assert not any(name.startswith("bilevel_generated") for name in sys.modules)


def test_params_that_are_not_json_fail_at_the_contract_stage(loader: MechanismLoader) -> None:
    with pytest.raises(MechanismError) as info:
        loader.load(AVOID_X, params={"callback": object()})
    assert (info.value.stage, info.value.rule) == ("contract", "params-not-json")


def test_huge_allocation_at_import_fails_under_the_memory_cap(tmp_path: Path) -> None:
    capped = MechanismLoader(tmp_path, check_memory_bytes=1024**3)
    with pytest.raises(MechanismError) as info:
        capped.load("BIG = bytearray(4 * 1024 ** 3)\n" + AVOID_X)
    assert (info.value.stage, info.value.rule) == ("contract", "import-failed")
    assert "MemoryError" in str(info.value)


def test_mechanism_output_cannot_forge_the_verdict() -> None:
    # The policy rejects SystemExit by name; the worker is checked on its own, as the layer behind it.
    forged = '{"ok": true, "class_name": "X", "name": "x", "hooks": [], "env_keys": []}'
    worker = Worker()
    with pytest.raises(MechanismError) as info:
        worker.load(f"print({forged!r})\nraise SystemExit(0)\n" + AVOID_X, filename="forger.py", params=None,
                    context=None, timeout_s=20)
    assert (info.value.stage, info.value.rule) == ("contract", "import-failed")
    assert "SystemExit" in str(info.value)
    assert not worker.alive


def test_worker_environment_holds_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-sentinel-should-not-leak")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-sentinel")
    monkeypatch.setenv("SOME_SECRET", "sentinel")
    monkeypatch.setenv("PYTHONPATH", "/tmp/a-writable-tree")

    worker = Worker()
    try:
        info = worker.load(AVOID_X, filename="avoid_x.py", params=None, context=None, timeout_s=20)
    finally:
        worker.close()
    assert info["class_name"] == "AvoidX"
    secret_like = [k for k in info["env_keys"] if re.search("KEY|TOKEN|SECRET", k, re.IGNORECASE)]
    assert secret_like == []
    # Python may add LC_CTYPE itself (PEP 538 locale coercion); nothing else gets in.
    assert set(info["env_keys"]) <= {"PATH", "HOME", "LANG", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "LC_CTYPE"}


def test_contract_check_uses_the_callers_context_when_given(loader: MechanismLoader) -> None:
    source = source_with_hook("guidance", "assert args[0].search['domain'] == 'article'\nreturn None\n")
    record = TrialRecord(loop="inner", iteration=0, status=Status.KEEP, proposal=Proposal(region="r"))
    context = ProposalContext(loop="inner", iteration=1, cycle=0, history=(record,), search={"domain": "article"})
    assert loader.load(source, context=context).hooks_overridden == ("guidance",)
    with pytest.raises(MechanismError) as info:
        loader.load(source)  # the synthetic probe has no 'domain' key
    assert info.value.rule == "hook-raised: guidance"


def test_library_mechanism_loads_by_import_path_without_the_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "bilevel_test_library"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tabu.py").write_text(
        "import os  # trusted library code is not policed\n" + AVOID_X.replace("AvoidX", "TabuMechanism")
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    instance = load_library_mechanism("bilevel_test_library.tabu:TabuMechanism", {"size": 4})
    assert isinstance(instance, Mechanism) and instance.params == {"size": 4}
    assert instance.filter(Proposal(region="x"), ctx()).action == "reject"

    for bad in ("no-colon", "bilevel_test_library.nope:X", "bilevel_test_library.tabu:Nope",
                "bilevel_test_library.tabu:FilterVerdict"):
        with pytest.raises(ConfigError):
            load_library_mechanism(bad, None)
