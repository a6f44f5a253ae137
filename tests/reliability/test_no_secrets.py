"""No API key reaches a trial, a mechanism's check process, a log, the journal, a cassette or a
report. Unique sentinel values stand in for the keys (in the environment and in a ``.env`` file);
after a full run every byte of the run directory is searched for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import domains.train_opt.session as session_module
from core.llm_client import RetryPolicy
from core.loader import MechanismLoader
from core.mechanisms import render_template
from domains.train_opt.report import write_report
from domains.train_opt.session import TrainSession, make_settings
from tests.reliability.conftest import cli_env, journal_sound, trials
from tests.reliability.fake_researcher import FakeResearcher

SENTINELS = {
    "OPENAI_API_KEY": "sk-SENTINEL-openai-7f3a9c",
    "ANTHROPIC_API_KEY": "sk-ant-SENTINEL-anthropic-51be02",
    "DEEPSEEK_API_KEY": "sk-SENTINEL-deepseek-c48d11",
    "OPENROUTER_API_KEY": "sk-or-SENTINEL-openrouter-0a9e77",
    "HF_TOKEN": "hf_SENTINEL_token_93ad",
}


def leaks(run_dir: Path) -> list[str]:
    """``path: NAME`` for every file under ``run_dir`` holding a sentinel (or its base64/hex forms)."""
    import base64

    forms = {name: [v.encode(), base64.b64encode(v.encode()), v.encode().hex().encode()] for name, v in SENTINELS.items()}
    found = []
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path.relative_to(run_dir)}: {name}" for name, fs in forms.items() if any(f in data for f in fs)]
    return found


def test_a_full_offline_run_with_every_level_and_a_cassette_holds_no_key(standin: Path, tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    (work / ".env").write_text("".join(f"{k}={v}\n" for k, v in SENTINELS.items()))
    env = cli_env(STANDIN_DUMP_ENV="1", **SENTINELS)
    run_dir = work / "run"
    done = subprocess.run(
        [sys.executable, "-m", "domains.train_opt.cli", "--target-dir", str(standin), "--run-dir", str(run_dir),
         "bilevel", "--inner-budget", "3", "--outer-cycles", "3", "--record-cassette"],
        cwd=work, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not any(v in done.stdout + done.stderr for v in SENTINELS.values())
    events = journal_sound(run_dir)
    assert len(trials(events)) == 1 + 3 * 3
    assert [e for e in events if e["type"] == "config"], "Level 1.5 never acted"
    assert [r for r in trials(events, "mechanism") if r.info.get("mechanism")], "Level 2 loaded nothing"
    assert (run_dir / "cassette.jsonl").stat().st_size > 0 and (run_dir / "REPORT.md").is_file()
    logs = list(run_dir.glob("trials/inner/*/run.log"))
    assert logs and all("env PATH=" in log.read_text() for log in logs), "the trial did not dump its environment"
    assert leaks(run_dir) == []


def test_the_contract_check_child_sees_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name, value in SENTINELS.items():
        monkeypatch.setenv(name, value)
    loaded = MechanismLoader(tmp_path).load(render_template("tabu", {}))
    loaded.instance.close()
    env_keys = loaded.instance.worker.info["env_keys"]
    assert env_keys and not [k for k in env_keys if k in SENTINELS or "KEY" in k or "TOKEN" in k]


def test_a_cassette_recorded_from_the_openai_sdk_holds_no_key_or_auth_header(
        standin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    for name, value in SENTINELS.items():
        monkeypatch.setenv(name, value)
    server = FakeResearcher()
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    real = session_module.make_client
    monkeypatch.setattr(session_module, "make_client", lambda *a, **k: real(
        *a, **{"timeout_s": 5.0, "retry": RetryPolicy(max_retries=1, base_delay_s=0.001), **k}))
    run_dir = tmp_path / "run"
    try:
        session = TrainSession.start(make_settings(target_dir=str(standin), provider="openai", inner_budget=2,
                                                   outer_cycles=2, record_cassette=True), run_dir)
        try:
            assert session.run()["complete"]
        finally:
            session.close()
        write_report(run_dir)
    finally:
        server.close()
    auth = {r["headers"].get("Authorization") or r["headers"].get("authorization") for r in server.requests}
    assert auth == {f"Bearer {SENTINELS['OPENAI_API_KEY']}"}, "the key was not what the SDK sent"
    cassette = (run_dir / "cassette.jsonl").read_text()
    assert cassette.count("\n") == len(server.requests) and "authorization" not in cassette.lower()
    assert leaks(run_dir) == []
    assert os.environ["OPENAI_API_KEY"] == SENTINELS["OPENAI_API_KEY"]  # the run did not need to unset it
