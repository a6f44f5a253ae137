"""Native structured output per wire format, through the real SDKs against the fake server:
OpenAI ``response_format`` JSON schema, Anthropic forced tool use, a decoding grammar for local
servers, JSON mode, and the fall-back to the prompt when a server refuses the parameters."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field

from core.llm_client import make_client, model_traits


class Verdict(BaseModel):
    score: float
    reason: str


class Plan(BaseModel):
    changes: dict[str, float] = Field(min_length=1)
    hypothesis: str = ""


def system_text(body: dict) -> str:
    return " ".join(m["content"] for m in body["messages"] if m["role"] == "system")


def test_openai_sends_the_schema_as_response_format_and_only_names_it_in_the_prompt(fake_server, openai_client):
    fake_server.script(fake_server.openai_reply('{"score": 8, "reason": "clear"}'))
    assert openai_client().structured(purpose="judge", schema=Verdict, messages="rate") == Verdict(score=8, reason="clear")
    body = fake_server.requests[0].body
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Verdict"
    assert fmt["json_schema"]["strict"] is True  # every field required, nothing open: strict is safe
    assert fmt["json_schema"]["schema"]["additionalProperties"] is False
    assert "Verdict" in system_text(body) and '"properties"' not in system_text(body)


def test_openai_schema_with_optional_or_open_fields_is_sent_non_strict(fake_server, openai_client):
    fake_server.script(fake_server.openai_reply('{"changes": {"LR": 0.1}}'))
    openai_client().structured(purpose="propose", schema=Plan, messages="go")
    fmt = fake_server.requests[0].body["response_format"]["json_schema"]
    assert fmt["strict"] is False and fmt["schema"] == Plan.model_json_schema()


def test_a_schema_with_keywords_strict_mode_refuses_is_sent_non_strict():
    from core.llm.parsing import strict_schema

    class Named(BaseModel):
        name: str = Field(max_length=20)

    assert strict_schema(Named.model_json_schema()) is None
    assert strict_schema(Verdict.model_json_schema()) is not None


def test_anthropic_forces_one_tool_whose_input_is_the_answer(fake_server, anthropic_client):
    fake_server.script(fake_server.anthropic_tool_reply("Verdict", {"score": 6.5, "reason": "dense"}))
    assert anthropic_client().structured(purpose="judge", schema=Verdict, messages="rate") == Verdict(
        score=6.5, reason="dense"
    )
    body = fake_server.requests[0].body
    [tool] = body["tools"]
    assert tool["name"] == "Verdict" and tool["input_schema"] == Verdict.model_json_schema()
    assert body["tool_choice"] == {"type": "tool", "name": "Verdict"}


def test_anthropic_prompt_mode_still_puts_the_schema_in_the_system_prompt(fake_server, anthropic_client):
    fake_server.script(fake_server.anthropic_reply('{"score": 7.5, "reason": "clear"}'))
    client = anthropic_client(structured_output="prompt")
    assert client.structured(purpose="judge", schema=Verdict, messages="rate").score == 7.5
    body = fake_server.requests[0].body
    assert "JSON Schema" in body["system"] and "tools" not in body


def test_local_server_gets_the_schema_as_a_grammar_and_in_the_prompt(fake_server, monkeypatch):
    monkeypatch.setenv("OPENAI_COMPAT_BASE_URL", fake_server.openai_base_url)
    fake_server.script(fake_server.openai_reply('{"score": 3, "reason": "ok"}'))
    client = make_client("ollama:qwen2.5:1.5b", timeout_s=5)
    assert client.structured(purpose="judge", schema=Verdict, messages="rate").score == 3
    body = fake_server.requests[0].body
    assert body["response_format"]["json_schema"]["schema"] == Verdict.model_json_schema()
    assert '"properties"' in system_text(body)  # a small model does not see the grammar: tell it too
    assert body["stream"] is True  # local servers stream: see test_timeouts_and_streaming


def test_deepseek_uses_json_mode_with_the_schema_in_the_prompt(fake_server, monkeypatch):
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test")
    fake_server.script(fake_server.openai_reply('{"score": 5, "reason": "fine"}'))
    client = make_client("deepseek", base_url=fake_server.openai_base_url, timeout_s=5)
    client.structured(purpose="judge", schema=Verdict, messages="rate")
    body = fake_server.requests[0].body
    assert body["response_format"] == {"type": "json_object"}
    assert '"properties"' in system_text(body)


def test_a_server_refusing_response_format_is_asked_again_in_prompt_mode_for_good(fake_server, openai_client):
    fake_server.script(
        fake_server.error_reply(400, "Unrecognized request argument supplied: response_format"),
        fake_server.openai_reply('{"score": 4, "reason": "a"}'),
    )
    client = openai_client()
    assert client.structured(purpose="judge", schema=Verdict, messages="rate").score == 4
    assert client.structured(purpose="judge", schema=Verdict, messages="again").score == 4
    first, second, third = fake_server.requests
    assert "response_format" in first.body and "response_format" not in second.body
    assert "response_format" not in third.body and "JSON Schema" in system_text(third.body)
    assert client.ledger.totals().calls == 2  # the refused attempt is not a call


def test_a_400_about_something_else_is_not_taken_for_a_structured_output_refusal(fake_server, openai_client):
    from core.errors import ProviderError

    fake_server.script(fake_server.error_reply(400, "context length exceeded"))
    with pytest.raises(ProviderError, match="context length"):
        openai_client().structured(purpose="judge", schema=Verdict, messages="rate")
    assert len(fake_server.requests) == 1


def test_registry_chooses_the_mode_per_provider_and_model():
    assert model_traits("openai", "gpt-4o-mini").structured == "json_schema"
    assert model_traits("anthropic", "claude-sonnet-4-5").structured == "tool"
    assert model_traits("ollama", "llama3.1").structured == "grammar"
    assert model_traits("compat", "qwen").structured == "grammar"
    assert model_traits("deepseek", "deepseek-chat").structured == "json_object"
    assert model_traits("deepseek", "deepseek-reasoner").structured == "prompt"


def test_structured_output_setting_in_dotenv_overrides_the_registry(fake_server, openai_client, isolated_cwd):
    (isolated_cwd / ".env").write_text("BILEVEL_STRUCTURED_OUTPUT=prompt\n")
    fake_server.script(fake_server.openai_reply('{"score": 1, "reason": "r"}'))
    openai_client().structured(purpose="judge", schema=Verdict, messages="rate")
    assert "response_format" not in fake_server.requests[0].body


def test_unknown_structured_output_mode_is_a_config_error():
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="json_schema"):
        make_client("offline", structured_output="xml")


def test_streamed_anthropic_tool_answer_is_assembled_from_input_json_deltas(fake_server, anthropic_client):
    fake_server.script(fake_server.anthropic_tool_reply("Verdict", {"score": 9, "reason": "streamed"}))
    client = anthropic_client(stream=True)
    assert client.structured(purpose="judge", schema=Verdict, messages="rate") == Verdict(score=9, reason="streamed")
    assert fake_server.requests[0].body["stream"] is True
    assert client.ledger.totals().completion_tokens == 11


def test_replies_are_recorded_as_text_so_replay_answers_native_runs(fake_server, anthropic_client, tmp_path):
    cassette = tmp_path / "c.jsonl"
    fake_server.script(fake_server.anthropic_tool_reply("Verdict", {"score": 2, "reason": "x"}))
    anthropic_client(record_to=cassette).structured(purpose="judge", schema=Verdict, messages="rate")
    [entry] = [json.loads(line) for line in cassette.read_text().splitlines()]
    assert json.loads(entry["response"]) == {"score": 2, "reason": "x"}
    replayed = make_client("replay", cassette=cassette).structured(purpose="judge", schema=Verdict, messages="rate")
    assert replayed == Verdict(score=2, reason="x")
