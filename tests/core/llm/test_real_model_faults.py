"""What a key holder meets with a real model, through the real SDKs on a local fake server: base
URLs from ``.env``, bodies that are not JSON, truncated and usage-less replies, reasoning models,
timeouts that fit the model and streaming for slow but live replies."""

from __future__ import annotations

import time

import pytest
from pydantic import BaseModel

from core.errors import ProviderError
from core.llm_client import RetryPolicy, make_client, model_traits


class Plan(BaseModel):
    param: str
    value: float


QUICK = RetryPolicy(max_retries=1, base_delay_s=0.001)


# -- base URL and key from .env ------------------------------------------------------------------------


def test_openai_base_url_in_dotenv_is_used_with_the_key_beside_it(fake_server, isolated_cwd):
    (isolated_cwd / ".env").write_text(
        f"OPENAI_API_KEY=sk-from-dotenv\nOPENAI_BASE_URL={fake_server.openai_base_url}\n"
    )
    fake_server.script(fake_server.openai_reply("from the configured server"))
    client = make_client("openai", timeout_s=5, retry=QUICK)
    assert client.complete(purpose="p", messages="hi") == "from the configured server"
    assert fake_server.requests[0].headers["authorization"] == "Bearer sk-from-dotenv"


def test_anthropic_base_url_in_dotenv_is_used_with_the_key_beside_it(fake_server, isolated_cwd):
    (isolated_cwd / ".env").write_text(
        f"ANTHROPIC_API_KEY=sk-ant-from-dotenv\nANTHROPIC_BASE_URL={fake_server.base_url}\n"
    )
    fake_server.script(fake_server.anthropic_reply("configured"))
    client = make_client("anthropic:claude-test", timeout_s=5, retry=QUICK)
    assert client.complete(purpose="p", messages="hi") == "configured"
    headers = fake_server.requests[0].headers
    assert "sk-ant-from-dotenv" in headers.get("x-api-key", "") + headers.get("authorization", "")


# -- a 200 whose body is not JSON ----------------------------------------------------------------------


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
def test_a_200_whose_json_body_does_not_parse_is_retried_then_a_provider_error(
    wire, fake_server, openai_client, anthropic_client
):
    broken = fake_server.reply(raw=b'{"id": "chatcmpl-1", "choices": [', content_type="application/json")
    ok = fake_server.openai_reply("fine") if wire == "openai" else fake_server.anthropic_reply("fine")
    fake_server.script(broken, ok)
    client = openai_client() if wire == "openai" else anthropic_client()
    assert client.complete(purpose="p", messages="hi") == "fine"
    fake_server.script(broken)
    with pytest.raises(ProviderError, match="not JSON"):
        client.complete(purpose="p", messages="hi")


# -- truncated replies ---------------------------------------------------------------------------------


def test_a_truncated_reply_gets_a_cut_off_repair_message_not_a_nested_objects_error(fake_server, openai_client):
    cut = '{"param": "LR", "notes": {"seen": 1}, "value": 0.5, "why": "because the loss'
    fake_server.script(
        fake_server.openai_reply(cut, finish_reason="length"),
        fake_server.openai_reply('{"param": "LR", "value": 0.5}'),
    )
    assert openai_client(max_tokens=40).structured(purpose="p", schema=Plan, messages="go").value == 0.5
    repair = fake_server.requests[1].body["messages"][-1]["content"]
    assert "cut off at the output-token limit" in repair
    assert "Field required" not in repair  # the nested {"seen": 1} is not taken for the answer


def test_anthropic_max_tokens_stop_reason_marks_the_reply_truncated(fake_server, anthropic_client):
    cut = fake_server.anthropic_reply('{"param": "LR", "value": 0.')
    cut.body["stop_reason"] = "max_tokens"
    fake_server.script(cut, fake_server.anthropic_reply('{"param": "LR", "value": 0.2}'))
    anthropic_client(structured_output="prompt").structured(purpose="p", schema=Plan, messages="go")
    assert "cut off" in fake_server.requests[1].body["messages"][-1]["content"]


# -- usage ---------------------------------------------------------------------------------------------


def test_a_reply_without_usage_is_estimated_from_its_length_and_marked(fake_server, openai_client):
    fake_server.script(fake_server.openai_reply("x" * 400, usage=False))
    client = openai_client(prices={"gpt-4o-mini": (1.0, 1.0)})
    client.complete(purpose="p", messages="y" * 800)
    [record] = client.ledger.records
    assert record.usage_estimated is True
    assert record.prompt_tokens >= 200 and record.completion_tokens == 100
    assert record.cost_usd > 0


def test_a_reply_with_usage_is_not_marked_estimated(fake_server, openai_client):
    fake_server.script(fake_server.openai_reply("ok"))
    client = openai_client()
    client.complete(purpose="p", messages="hi")
    assert client.ledger.records[0].usage_estimated is False


# -- reasoning models ----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_a_separate_reasoning_field_is_not_parsed_and_its_tokens_are_counted(field, fake_server, openai_client):
    fake_server.script(
        fake_server.openai_reply(
            '{"param": "B", "value": 2}',
            reasoning='maybe {"param": "A", "value": 1} first?',
            reasoning_field=field,
            completion_tokens=90,
            reasoning_tokens=80,
        )
    )
    client = openai_client()
    assert client.structured(purpose="p", schema=Plan, messages="go") == Plan(param="B", value=2)
    [record] = client.ledger.records
    assert (record.completion_tokens, record.reasoning_tokens) == (90, 80)


def test_reasoning_without_usage_details_is_estimated_from_its_text(fake_server, openai_client):
    fake_server.script(fake_server.openai_reply("answer", reasoning="r" * 40, usage=False))
    client = openai_client()
    assert client.complete(purpose="p", messages="go") == "answer"
    assert client.ledger.records[0].reasoning_tokens == 10


def test_a_reasoning_model_that_spent_its_limit_thinking_says_so(fake_server, openai_client):
    fake_server.script(fake_server.openai_reply(None, reasoning="thinking...", finish_reason="length"))
    with pytest.raises(ProviderError, match="raise max_tokens"):
        openai_client().complete(purpose="p", messages="go")


def test_models_that_take_max_completion_tokens_get_it_instead_of_max_tokens(fake_server, openai_client):
    fake_server.script(fake_server.openai_reply("ok"))
    openai_client(model_id="openai:o4-mini", max_tokens=2000).complete(purpose="p", messages="go")
    openai_client(model_id="openai:gpt-5.4-mini", max_tokens=2000).complete(purpose="p", messages="go")
    openai_client(model_id="openai:gpt-4o-mini", max_tokens=2000).complete(purpose="p", messages="go")
    reasoning, gpt5, plain = (r.body for r in fake_server.requests)
    for body in (reasoning, gpt5):
        assert body["max_completion_tokens"] == 2000 and "max_tokens" not in body
    assert plain["max_tokens"] == 2000 and "max_completion_tokens" not in plain


# -- timeouts and streaming ----------------------------------------------------------------------------


def test_request_timeouts_default_per_provider_long_for_local_servers_and_reasoning_models():
    assert model_traits("openai", "gpt-4o-mini").timeout_s == 120
    assert model_traits("openai", "o3-mini").timeout_s >= 600
    assert model_traits("ollama", "qwen2.5:1.5b").timeout_s >= 900
    assert model_traits("compat", "x").stream and not model_traits("openai", "gpt-4o-mini").stream


def test_timeout_argument_and_setting_reach_the_sdk_client(fake_server, openai_client, isolated_cwd, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    client = make_client("openai", base_url=fake_server.openai_base_url, timeout_s=42)
    assert client.timeout_s == 42 and client._backend._client.timeout == 42
    (isolated_cwd / ".env").write_text("BILEVEL_REQUEST_TIMEOUT=333\n")
    assert make_client("openai", base_url=fake_server.openai_base_url).timeout_s == 333
    assert make_client("openai", base_url=fake_server.openai_base_url, timeout_s=7).timeout_s == 7


def test_a_slow_but_live_streamed_reply_outlasts_the_timeout(fake_server, openai_client):
    slow = fake_server.openai_reply('{"param": "LR", "value": 1}')
    slow.chunk_delay_s = 0.25  # six events: 1.5 s in all, never 0.6 s of silence
    fake_server.script(slow)
    client = openai_client(stream=True, timeout_s=0.6, retry=RetryPolicy(max_retries=0))
    started = time.monotonic()
    assert client.structured(purpose="p", schema=Plan, messages="go") == Plan(param="LR", value=1)
    assert time.monotonic() - started > 0.6
    assert client.ledger.records[0].completion_tokens == 7  # usage from the stream's last chunk


def test_the_same_slow_reply_unstreamed_is_a_timeout(fake_server, openai_client):
    fake_server.script(fake_server.reply(body=fake_server.openai_reply("late").body, delay_s=1.5))
    with pytest.raises(ProviderError, match="timed out"):
        openai_client(stream=False, timeout_s=0.6, retry=RetryPolicy(max_retries=0)).complete(purpose="p", messages="go")


def test_streamed_reasoning_is_kept_out_of_the_answer(fake_server, openai_client):
    fake_server.script(fake_server.openai_reply("the answer", reasoning="hidden thoughts", usage=False))
    client = openai_client(stream=True)
    assert client.complete(purpose="p", messages="go") == "the answer"
    assert client.ledger.records[0].reasoning_tokens > 0
