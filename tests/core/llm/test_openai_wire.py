"""The real ``openai`` SDK against a fake chat-completions server: success, retries, errors, usage."""

from __future__ import annotations

import time

import pytest

from core.errors import ProviderError
from core.llm_client import RetryPolicy, UsageLedger, make_client


def test_openai_success_returns_text_and_sends_key_and_messages(fake_server, openai_client):
    fake_server.script(fake_server.openai_reply("hello there"))
    client = openai_client()
    text = client.complete(
        purpose="greet",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    )
    assert text == "hello there"
    [req] = fake_server.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test-openai-secret"
    assert req.body["model"] == "gpt-4o-mini"
    assert req.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]


def test_openai_usage_tokens_and_cost_come_from_the_price_table(fake_server, openai_client):
    fake_server.script(fake_server.openai_reply("ok", prompt_tokens=1_000_000, completion_tokens=500_000))
    ledger = UsageLedger()
    client = openai_client(ledger=ledger, level="outer", prices={"gpt-4o-mini": (2.0, 10.0)})
    client.complete(purpose="p", messages="hi")
    [record] = ledger.records
    assert (record.prompt_tokens, record.completion_tokens) == (1_000_000, 500_000)
    assert record.cost_usd == pytest.approx(2.0 + 5.0)
    assert (record.level, record.provider, record.model) == ("outer", "openai", "gpt-4o-mini")
    assert ledger.totals("outer").cost_usd == pytest.approx(7.0)


def test_openai_unknown_model_costs_zero_but_counts_tokens(fake_server, openai_client):
    fake_server.script(fake_server.openai_reply("ok", prompt_tokens=30, completion_tokens=4))
    client = openai_client(model_id="openai:some-new-model")
    client.complete(purpose="p", messages="hi")
    totals = client.ledger.totals()
    assert (totals.calls, totals.prompt_tokens, totals.completion_tokens, totals.cost_usd) == (1, 30, 4, 0.0)


def test_openai_retries_429_then_succeeds_honouring_retry_after(fake_server, openai_client):
    fake_server.script(
        fake_server.error_reply(429, "rate limited", headers={"retry-after": "0.3"}),
        fake_server.openai_reply("after the wait"),
    )
    client = openai_client(retry=RetryPolicy(max_retries=3, base_delay_s=0.001))
    started = time.monotonic()
    assert client.complete(purpose="p", messages="hi") == "after the wait"
    assert time.monotonic() - started >= 0.3
    assert len(fake_server.requests) == 2
    # Our policy is the only one in force: the SDK never retried on its own.
    assert [r.headers.get("x-stainless-retry-count") for r in fake_server.requests] == ["0", "0"]


def test_openai_500_until_retries_are_exhausted_raises_provider_error(fake_server, openai_client):
    fake_server.script(fake_server.error_reply(500, "boom"))
    client = openai_client(retry=RetryPolicy(max_retries=3, base_delay_s=0.001))
    with pytest.raises(ProviderError, match="after 4 attempt") as info:
        client.complete(purpose="p", messages="hi")
    assert info.value.status_code == 500
    assert len(fake_server.requests) == 1 + 3
    assert client.ledger.totals().calls == 0


def test_openai_read_timeout_is_retried_then_fails(fake_server, openai_client):
    fake_server.script(fake_server.reply(status=200, body={}, delay_s=2.0))
    client = openai_client(timeout_s=0.2, retry=RetryPolicy(max_retries=1, base_delay_s=0.001))
    started = time.monotonic()
    with pytest.raises(ProviderError, match="timed out after 0.2s") as info:
        client.complete(purpose="p", messages="hi")
    assert time.monotonic() - started < 1.5
    assert info.value.status_code is None
    assert len(fake_server.requests) == 2


def test_openai_401_is_not_retried_and_hints_at_the_key_variable(fake_server, openai_client):
    fake_server.script(fake_server.error_reply(401, "Incorrect API key provided"))
    client = openai_client()
    with pytest.raises(ProviderError, match="OPENAI_API_KEY") as info:
        client.complete(purpose="p", messages="hi")
    assert info.value.status_code == 401
    assert "Incorrect API key" in str(info.value)
    assert len(fake_server.requests) == 1


def test_openai_404_hint_names_model_and_base_url(fake_server, openai_client):
    fake_server.script(fake_server.error_reply(404, "model not found"))
    with pytest.raises(ProviderError, match="gpt-4o-mini") as info:
        openai_client().complete(purpose="p", messages="hi")
    assert fake_server.base_url in str(info.value)
    assert len(fake_server.requests) == 1


def test_connection_refused_is_retried_then_reported(monkeypatch):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test")
    client = make_client(
        "deepseek",
        base_url=f"http://127.0.0.1:{port}/v1",
        retry=RetryPolicy(max_retries=1, base_delay_s=0.001),
    )
    with pytest.raises(ProviderError, match="connection failed"):
        client.complete(purpose="p", messages="hi")


def test_compat_server_without_key_works_from_base_url_variable(fake_server, monkeypatch):
    monkeypatch.setenv("OPENAI_COMPAT_BASE_URL", fake_server.openai_base_url)
    fake_server.script(fake_server.openai_reply("local answer", model="qwen"))
    client = make_client("compat", "qwen2.5:7b", timeout_s=5)
    assert client.complete(purpose="p", messages="hi") == "local answer"
    assert fake_server.requests[0].body["model"] == "qwen2.5:7b"


def test_deepseek_defaults_to_its_own_base_url():
    from core.llm_client import PROVIDERS

    assert PROVIDERS["deepseek"].base_url == "https://api.deepseek.com"
    assert PROVIDERS["deepseek"].key_env == "DEEPSEEK_API_KEY"


def test_sdk_clients_are_built_with_their_own_retries_disabled(fake_server, openai_client, anthropic_client):
    assert openai_client()._backend._client.max_retries == 0
    assert anthropic_client()._backend._client.max_retries == 0
