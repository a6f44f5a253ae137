"""The tiny ablation through a local Ray instance: every repeat a Ray task, rows back in the driver."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiments import distributed
from experiments.ablation import app, read_rows

ray = pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]'")

STANDIN = Path(__file__).resolve().parents[1] / "domains" / "train_opt" / "standin_target"
TINY = ["--groups", "A,C", "--repeats", "2", "--iterations", "2", "--cycles", "2", "--threads", "1",
        "--trial-timeout", "20"]


def stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("wall_s", "finished_at")}


@pytest.mark.slow  # starts a local Ray instance (~15 s); Ray is an optional extra
def test_tiny_ablation_runs_as_ray_tasks_and_matches_the_local_run(tmp_path: Path):
    target = tmp_path / "clone"
    shutil.copytree(STANDIN, target, ignore=shutil.ignore_patterns("__pycache__"))
    local = CliRunner().invoke(app, ["run", *TINY, "--target-dir", str(target), "--out", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output

    # The suite allows loopback only, so the instance binds to 127.0.0.1; the project's packages
    # reach the workers as the job's py_modules, as they would on a cluster.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             runtime_env=distributed.job_runtime_env("offline"))
    try:
        result = CliRunner().invoke(app, ["run", *TINY, "--target-dir", str(target), "--out", str(tmp_path / "ray"),
                                          "--executor", "ray"])
        assert result.exit_code == 0, result.output
        assert ray.is_initialized()  # the runner used this instance and left it running
    finally:
        ray.shutdown()
    rows = read_rows(tmp_path / "ray")
    assert sorted((r["group"], r["repeat"]) for r in rows) == [("A", 0), ("A", 1), ("C", 0), ("C", 1)]
    key = lambda r: (r["group"], r["repeat"])  # noqa: E731
    assert sorted(map(stable, rows), key=key) == sorted(map(stable, read_rows(tmp_path / "local")), key=key)
    assert all((tmp_path / "ray" / r["run_dir"] / "journal.jsonl").is_file() for r in rows)
