"""The append-only journal and run directories (core/state.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core import state
from core.errors import JournalCorruptError, RunDirError
from core.state import JOURNAL_NAME, Journal, RunDir, atomic_write_json, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[2]


def _journal_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# -- journal ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fsync", [True, False])
def test_journal_round_trips_events_through_replay(tmp_path: Path, fsync: bool) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = Journal(path, fsync=fsync)
    written = [journal.append({"type": "trial", "n": i, "nested": {"x": [i, i + 0.5]}}) for i in range(5)]
    journal.append({"type": "note", "text": "ünïcode ✓"})

    replayed = Journal(path, fsync=fsync)

    assert list(replayed.events()) == [*written, journal.last("note")]
    assert [e["n"] for e in replayed.events("trial")] == [0, 1, 2, 3, 4]
    assert replayed.last("note")["text"] == "ünïcode ✓"
    assert all("ts" in e for e in replayed.events())
    assert len(_journal_lines(path)) == 6


def test_journal_fsync_flag_decides_whether_appends_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(state.os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))

    Journal(tmp_path / "a.jsonl", fsync=True).append({"type": "x"})
    assert len(calls) == 1
    Journal(tmp_path / "b.jsonl", fsync=False).append({"type": "x"})
    assert len(calls) == 1


def test_journal_seq_is_dense_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    first = Journal(path, fsync=False)
    for _ in range(3):
        first.append({"type": "a"})
    second = Journal(path, fsync=False)
    for _ in range(2):
        second.append({"type": "b"})

    assert [e["seq"] for e in Journal(path).events()] == [0, 1, 2, 3, 4]
    assert len(Journal(path)) == 5


def test_journal_event_without_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="type"):
        Journal(tmp_path / JOURNAL_NAME).append({"n": 1})


def test_journal_filters_events_by_type_and_fields(tmp_path: Path) -> None:
    journal = Journal(tmp_path / JOURNAL_NAME, fsync=False)
    journal.append({"type": "trial", "loop": "inner", "i": 0})
    journal.append({"type": "trial", "loop": "outer", "i": 1})
    journal.append({"type": "proposal", "loop": "inner", "i": 2})
    journal.append({"type": "trial", "loop": "inner", "i": 3})

    assert [e["i"] for e in journal.events("trial", loop="inner")] == [0, 3]
    assert journal.last("trial", loop="outer")["i"] == 1
    assert journal.last("missing") is None


def test_journal_torn_last_line_is_trimmed_and_appends_continue(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = Journal(path, fsync=False)
    journal.append({"type": "a"})
    journal.append({"type": "b"})
    intact = path.read_bytes()
    with open(path, "ab") as fh:  # the process died half-way through writing the third line
        fh.write(b'{"seq":2,"ts":"2026-01-01T00:00:00.000+00:00","type":"c","pay')

    reopened = Journal(path, fsync=False)

    assert [e["type"] for e in reopened.events()] == ["a", "b"]
    assert path.read_bytes() == intact  # trimmed on disk, not just ignored in memory
    reopened.append({"type": "d"})
    again = Journal(path)
    assert [(e["seq"], e["type"]) for e in again.events()] == [(0, "a"), (1, "b"), (2, "d")]


def test_journal_torn_last_line_followed_by_blank_lines_is_trimmed(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    Journal(path, fsync=False).append({"type": "a"})
    with open(path, "ab") as fh:
        fh.write(b'{"seq":1,"ty\n\n')

    assert [e["type"] for e in Journal(path).events()] == ["a"]


def test_journal_last_line_missing_its_newline_is_not_glued_to_next_append(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = Journal(path, fsync=False)
    journal.append({"type": "a"})
    journal.append({"type": "b"})
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # died after the JSON, before the newline

    Journal(path, fsync=False).append({"type": "c"})

    assert [e["type"] for e in Journal(path).events()] == ["a", "b", "c"]


def test_journal_corrupt_middle_line_raises_with_line_number_and_advice(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    journal = Journal(path, fsync=False)
    for i in range(4):
        journal.append({"type": "t", "i": i})
    lines = _journal_lines(path)
    lines[2] = lines[2][:10] + "###garbage"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    with pytest.raises(JournalCorruptError) as info:
        Journal(path)

    message = str(info.value)
    assert "line 3" in message
    assert "backup" in message and "--run-dir" in message
    assert _journal_lines(path)[2].endswith("###garbage")  # a damaged journal is never "repaired" silently


def test_journal_non_object_line_in_middle_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    path.write_text('{"type":"a","seq":0}\n[1,2,3]\n{"type":"b","seq":2}\n', encoding="utf-8")
    with pytest.raises(JournalCorruptError, match="line 2"):
        Journal(path)


# -- atomic writes ----------------------------------------------------------------------------------
def test_atomic_write_text_replaces_content(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text(encoding="utf-8") == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]


def test_atomic_write_text_failure_leaves_old_file_and_no_temp(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "config.json"
    atomic_write_text(target, "old content")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state.os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new content that never lands")

    assert target.read_text(encoding="utf-8") == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_atomic_write_json_is_readable_json(tmp_path: Path) -> None:
    target = tmp_path / "data.json"
    atomic_write_json(target, {"b": 1, "a": [1.5, "x"]})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": [1.5, "x"], "b": 1}


# -- run directories --------------------------------------------------------------------------------
def test_rundir_create_then_open_replays_the_journal(tmp_path: Path) -> None:
    with RunDir.create(tmp_path / "run", fsync=False) as run:
        run.journal.append({"type": "note", "i": 0})  # a run's journal is typed: "trial" needs a real record
        written = run.write_json("meta/info.json", {"k": "v"})
        assert run.rel(written) == "meta/info.json"
        assert run.read_json("meta/info.json") == {"k": "v"}
        assert run.trial_dir("inner", 7) == run.path / "trials" / "inner" / "00007"
        assert run.trial_dir("inner", 7).is_dir()
    with RunDir.open(tmp_path / "run") as reopened:
        assert [e["i"] for e in reopened.journal.events("note")] == [0]


def test_rundir_create_without_path_makes_a_fresh_folder_under_root(tmp_path: Path) -> None:
    with RunDir.create(root=tmp_path, prefix="exp", fsync=False) as run:
        assert run.path.parent == tmp_path
        assert run.path.name.startswith("exp-")


def test_rundir_create_refuses_an_existing_run(tmp_path: Path) -> None:
    with RunDir.create(tmp_path / "run", fsync=False) as run:
        run.journal.append({"type": "start"})
    with pytest.raises(RunDirError, match="already holds a run") as info:
        RunDir.create(tmp_path / "run")
    assert "\n" not in str(info.value)
    assert len(Journal(tmp_path / "run" / JOURNAL_NAME)) == 1


def test_rundir_open_missing_directory_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="does not exist") as info:
        RunDir.open(tmp_path / "nope")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "nope").exists()  # opening never creates


def test_rundir_open_directory_without_journal_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match=JOURNAL_NAME) as info:
        RunDir.open(tmp_path / "empty")
    assert "\n" not in str(info.value)


def test_rundir_lock_refuses_a_second_process(tmp_path: Path) -> None:
    path = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import sys
        from core.errors import RunDirError
        from core.state import RunDir
        try:
            RunDir.open({str(path)!r})
        except RunDirError as exc:
            print(exc)
            sys.exit(3)
        sys.exit(0)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with RunDir.create(path, fsync=False) as run:
        run.journal.append({"type": "start"})
        held = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
        assert held.returncode == 3, held.stderr
        assert "in use" in held.stdout
        assert str(os.getpid()) in held.stdout  # names the holder

    released = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert released.returncode == 0, released.stdout + released.stderr


def test_a_run_journal_refuses_an_event_that_breaks_its_model_on_write(tmp_path: Path) -> None:
    with RunDir.create(tmp_path / "run", fsync=False) as run:
        with pytest.raises(ValueError, match="'level15_verdict': kept"):
            run.journal.append({"type": "level15_verdict", "cycle": 0, "governed": 1, "kept": "maybe", "score": 0.0,
                                "gain": 0.0, "parent_gain": 0.0, "decided_by": "x"})
        with pytest.raises(ValueError, match="'stopped': .*unexpected|Extra inputs"):
            run.journal.append({"type": "stopped", "loop": "inner", "iteration": 0, "reason": "r", "surprise": 1})
        assert len(run.journal) == 0


def test_a_run_journal_edited_by_hand_is_refused_on_replay(tmp_path: Path) -> None:
    with RunDir.create(tmp_path / "run", fsync=False) as run:
        run.journal.append({"type": "stopped", "loop": "inner", "iteration": 2, "reason": "budget"})
    path = tmp_path / "run" / JOURNAL_NAME
    path.write_text(path.read_text().replace('"iteration":2', '"iteration":-2'))
    with pytest.raises(JournalCorruptError, match="line 1: journal event 'stopped': iteration"):
        RunDir.open(tmp_path / "run")
