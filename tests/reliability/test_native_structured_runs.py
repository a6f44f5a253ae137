"""All three levels of both domains through each wire format's native structured output: the real
``openai`` SDK with ``response_format`` JSON schema (provider ``openai``), the real ``anthropic`` SDK
with a forced tool (``anthropic``), and a streamed local server with the schema as a decoding
grammar (``ollama``). One fake on 127.0.0.1 answers by the schema each request names natively,
in the wire's own format, and records how each request asked for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from domains.article_opt.session import ArticleSession
from domains.article_opt.session import make_settings as article_settings
from domains.train_opt.session import TrainSession
from domains.train_opt.session import make_settings as train_settings
from tests.core.llm.conftest import Captured, FakeLLMServer, Reply, anthropic_tool_reply, openai_reply
from tests.domains.article_opt.fake_openai import answer as article_answer
from tests.reliability.fake_researcher import FakeResearcher

WIRES = {  # provider -> (environment pointing it at the fake, how its requests must ask for the schema)
    "openai": ({"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "{v1}"}, "json_schema"),
    "anthropic": ({"ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": "{root}"}, "tool"),
    "ollama": ({"OPENAI_COMPAT_BASE_URL": "{v1}"}, "grammar"),
}


def native_schema(body: dict[str, Any]) -> tuple[str, str]:
    """(schema name, how it was asked for) from a request body."""
    if body.get("tools"):
        return body["tools"][0]["name"], "tool"
    fmt = body.get("response_format") or {}
    name = (fmt.get("json_schema") or {}).get("name", "")
    if not name:
        return "", "none"
    system = " ".join(m["content"] for m in body.get("messages", []) if m["role"] == "system")
    return name, "grammar" if '"properties"' in system and body.get("stream") else "json_schema"


class SchemaServer(FakeLLMServer):
    """Answers every request by the schema it names natively, in the wire format it came in."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.asked: list[tuple[str, str]] = []
        self._trainer = FakeResearcher()  # its answers for train_opt's schemas; its own server is unused
        self._trainer.close()
        super().__init__()

    def _take(self, captured: Captured) -> Reply:
        name, how = native_schema(captured.body)
        with self._lock:
            self.requests.append(captured)
            self.asked.append((name, how))
        if self.domain == "train":
            payload = json.loads(self._trainer.answer(name))
        else:
            text = "\n".join(m["content"] for m in captured.body.get("messages", []) if m["role"] != "assistant")
            text += "\n" + "\n".join(b.get("text", "") for b in captured.body.get("system", []) or []
                                     if isinstance(b, dict)) + str(captured.body.get("system", ""))
            payload = article_answer(name, text)
        if captured.path == "/v1/messages":
            return anthropic_tool_reply(name, payload)
        return openai_reply(json.dumps(payload))


@pytest.fixture
def wire_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)
    servers: list[SchemaServer] = []

    def start(provider: str, domain: str) -> SchemaServer:
        server = SchemaServer(domain)
        servers.append(server)
        env, _ = WIRES[provider]
        for key, value in env.items():
            monkeypatch.setenv(key, value.format(v1=server.openai_base_url, root=server.base_url))
        return server

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize("provider", sorted(WIRES))
def test_train_opt_runs_all_three_levels_through_native_structured_output(provider, wire_env, tmp_path):
    import shutil

    server = wire_env(provider, "train")
    clone = tmp_path / "clone"
    shutil.copytree(Path(__file__).parent / "standin", clone, ignore=shutil.ignore_patterns("__pycache__"))
    session = TrainSession.start(train_settings(target_dir=str(clone), provider=provider, inner_budget=2,
                                                outer_cycles=2), tmp_path / "run")
    try:
        summary = session.run()
    finally:
        session.close()
    assert summary["complete"], summary.get("stopped")
    names = {name for name, _ in server.asked}
    assert {"ChangeReply", "ConfigPatch", "DesignReply"} <= names
    assert {how for _, how in server.asked} == {WIRES[provider][1]}
    assert set(summary["usage"]) >= {"inner", "outer", "mechanism"}


@pytest.mark.parametrize("provider", sorted(WIRES))
def test_article_opt_runs_all_three_levels_through_native_structured_output(provider, wire_env, tmp_path):
    server = wire_env(provider, "article")
    session = ArticleSession.start(article_settings(articles=("article1",), provider=provider, max_inner=2,
                                                    max_outer=2), tmp_path / "run")
    try:
        session.run()
    finally:
        session.close()
    names = {name for name, _ in server.asked}
    assert {"AnalysisOut", "SectionRevision", "JudgeScores", "OuterPatch", "StageDesign"} <= names
    assert {how for _, how in server.asked} == {WIRES[provider][1]}
