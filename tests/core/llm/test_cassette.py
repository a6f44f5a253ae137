"""Recording real calls to a cassette and answering from it under provider ``replay``."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from core.errors import JournalCorruptError, ReplayMissError, UserError
from core.llm_client import make_client, read_cassette, request_hash


class Idea(BaseModel):
    name: str
    gain: float


MESSAGES = [{"role": "system", "content": "you are a researcher"}, {"role": "user", "content": "one idea"}]


def _record(fake_server, openai_client, path):
    fake_server.script(
        fake_server.openai_reply('{"name": "warmup", "gain": 0.1}', prompt_tokens=50, completion_tokens=10),
        fake_server.openai_reply("a plain answer", prompt_tokens=5, completion_tokens=3),
    )
    client = openai_client(record_to=path)
    idea = client.structured(purpose="propose", schema=Idea, messages=MESSAGES, context={"it": 1})
    text = client.complete(purpose="summarize", messages="sum up")
    return idea, text


def test_cassette_record_then_replay_answers_identically(fake_server, openai_client, tmp_path):
    path = tmp_path / "run.cassette.jsonl"
    idea, text = _record(fake_server, openai_client, path)
    served = len(fake_server.requests)

    replay = make_client(f"replay:{path}", level="inner")
    assert replay.structured(purpose="propose", schema=Idea, messages=MESSAGES, context={"it": 1}) == idea
    assert replay.complete(purpose="summarize", messages="sum up") == text
    assert len(fake_server.requests) == served  # no network on replay
    first = replay.ledger.records[0]
    assert (first.provider, first.model, first.prompt_tokens, first.cost_usd) == (
        "replay",
        "openai:gpt-4o-mini",
        50,
        0,
    )


def test_cassette_option_works_like_replay_path(fake_server, openai_client, tmp_path):
    path = tmp_path / "c.jsonl"
    _idea, text = _record(fake_server, openai_client, path)
    assert make_client("replay", cassette=path).complete(purpose="summarize", messages="sum up") == text


def test_replay_miss_raises_naming_purpose_and_hash(fake_server, openai_client, tmp_path):
    path = tmp_path / "c.jsonl"
    _record(fake_server, openai_client, path)
    replay = make_client("replay", cassette=path)
    expected = request_hash("summarize", [{"role": "user", "content": "something else"}], None)
    with pytest.raises(ReplayMissError, match=rf"purpose 'summarize' \(request hash {expected}"):
        replay.complete(purpose="summarize", messages="something else")


def test_cassette_lines_hold_the_documented_fields_and_never_the_key(fake_server, openai_client, tmp_path):
    path = tmp_path / "c.jsonl"
    _record(fake_server, openai_client, path)
    raw = path.read_text()
    assert "sk-test-openai-secret" not in raw
    assert "authorization" not in raw.lower()
    entry = json.loads(raw.splitlines()[0])
    assert set(entry) == {"request_hash", "purpose", "request", "response", "usage", "latency_s"}
    assert entry["request"] == {"model": "openai:gpt-4o-mini", "messages": MESSAGES, "schema": "Idea"}
    assert entry["usage"] == {"prompt_tokens": 50, "completion_tokens": 10}
    assert entry["request_hash"] == request_hash("propose", MESSAGES, "Idea")


def test_request_hash_ignores_provider_and_model_but_not_schema():
    assert request_hash("p", MESSAGES, "Idea") != request_hash("p", MESSAGES, None)
    assert request_hash("p", MESSAGES, "Idea") != request_hash("q", MESSAGES, "Idea")


def test_repeated_request_replays_recorded_answers_in_order(tmp_path):
    path = tmp_path / "c.jsonl"
    h = request_hash("ask", [{"role": "user", "content": "x"}], None)
    path.write_text(
        "".join(
            json.dumps({"request_hash": h, "purpose": "ask", "response": r}) + "\n"
            for r in ("first", "second")
        )
    )
    replay = make_client("replay", cassette=path)
    answers = [replay.complete(purpose="ask", messages="x") for _ in range(3)]
    assert answers == ["first", "second", "second"]


def test_torn_last_line_is_tolerated_on_read_and_cut_before_append(fake_server, openai_client, tmp_path):
    path = tmp_path / "c.jsonl"
    _record(fake_server, openai_client, path)
    with open(path, "a") as fh:
        fh.write('{"request_hash": "abc", "purp')
    assert len(read_cassette(path)) == 2
    fake_server.script(fake_server.openai_reply("third"))
    openai_client(record_to=path).complete(purpose="more", messages="again")
    assert [e["response"] for e in read_cassette(path)][-1] == "third"
    assert len(read_cassette(path)) == 3


def test_complete_last_line_without_newline_survives_an_append(fake_server, openai_client, tmp_path):
    path = tmp_path / "c.jsonl"
    _record(fake_server, openai_client, path)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    fake_server.script(fake_server.openai_reply("third"))
    openai_client(record_to=path).complete(purpose="more", messages="again")
    assert [e["response"] for e in read_cassette(path)][1:] == ["a plain answer", "third"]


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"request_hash": "a", "response": "x"}\nnot json\n{"request_hash": "b", "response": "y"}\n'
    )
    with pytest.raises(JournalCorruptError, match="line 2"):
        read_cassette(path)


def test_replay_cannot_record(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("")
    with pytest.raises(UserError, match="record_to"):
        make_client("replay", cassette=path, record_to=tmp_path / "out.jsonl")
