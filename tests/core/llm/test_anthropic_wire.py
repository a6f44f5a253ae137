"""The native ``anthropic`` SDK against a fake Messages server."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from core.errors import ProviderError


class Verdict(BaseModel):
    score: float
    reason: str


def test_anthropic_success_moves_system_turns_to_the_system_field(fake_server, anthropic_client):
    fake_server.script(fake_server.anthropic_reply("bonjour"))
    client = anthropic_client()
    text = client.complete(
        purpose="greet",
        messages=[{"role": "system", "content": "be terse"}, {"role": "user", "content": "hello"}],
    )
    assert text == "bonjour"
    [req] = fake_server.requests
    assert req.path == "/v1/messages"
    assert req.body["system"] == "be terse"
    assert req.body["messages"] == [{"role": "user", "content": "hello"}]
    assert req.body["model"] == "claude-test"
    assert req.body["max_tokens"] > 0
    assert "sk-ant-test-secret" in (req.headers.get("x-api-key", "") + req.headers.get("authorization", ""))


def test_anthropic_usage_is_counted_per_level(fake_server, anthropic_client):
    fake_server.script(fake_server.anthropic_reply("ok", input_tokens=100, output_tokens=40))
    client = anthropic_client(level="judge", prices={"claude-test": (3.0, 15.0)})
    client.complete(purpose="judge", messages="rate this")
    totals = client.ledger.totals("judge")
    assert (totals.calls, totals.prompt_tokens, totals.completion_tokens) == (1, 100, 40)
    assert totals.cost_usd == pytest.approx((100 * 3.0 + 40 * 15.0) / 1e6)


def test_anthropic_overloaded_529_is_retried_then_succeeds(fake_server, anthropic_client):
    fake_server.script(
        fake_server.error_reply(529, "Overloaded", anthropic=True),
        fake_server.anthropic_reply("fine now"),
    )
    assert anthropic_client().complete(purpose="p", messages="hi") == "fine now"
    assert len(fake_server.requests) == 2


def test_anthropic_structured_output_instruction_goes_to_system(fake_server, anthropic_client):
    fake_server.script(fake_server.anthropic_tool_reply("Verdict", {"score": 7.5, "reason": "clear"}))
    verdict = anthropic_client().structured(purpose="judge", schema=Verdict, messages="rate it")
    assert verdict == Verdict(score=7.5, reason="clear")
    assert "Verdict" in fake_server.requests[0].body["system"]


def test_anthropic_long_leading_system_block_is_marked_for_prompt_caching(fake_server, anthropic_client):
    reply = fake_server.anthropic_reply("ok", input_tokens=100, output_tokens=10)
    reply.body["usage"] |= {"cache_read_input_tokens": 2000, "cache_creation_input_tokens": 0}
    fake_server.script(reply)
    article = "An article paragraph. " * 300
    client = anthropic_client(prices={"claude-test": (3.0, 15.0)})
    client.complete(
        purpose="revise",
        messages=[{"role": "system", "content": article}, {"role": "system", "content": "stage"},
                  {"role": "user", "content": "go"}],
    )
    first, second = fake_server.requests[0].body["system"]
    assert first == {"type": "text", "text": article, "cache_control": {"type": "ephemeral"}}
    assert "cache_control" not in second
    [record] = client.ledger.records
    assert (record.prompt_tokens, record.cached_tokens) == (2100, 2000)
    assert record.cost_usd == pytest.approx((100 * 3.0 + 2000 * 0.3 + 10 * 15.0) / 1e6)


def test_anthropic_401_is_not_retried(fake_server, anthropic_client):
    fake_server.script(fake_server.error_reply(401, "invalid x-api-key", anthropic=True))
    with pytest.raises(ProviderError, match="ANTHROPIC_API_KEY") as info:
        anthropic_client().complete(purpose="p", messages="hi")
    assert info.value.status_code == 401
    assert len(fake_server.requests) == 1
