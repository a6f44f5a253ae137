"""The suite-wide guard in tests/conftest.py: loopback only, and no provider keys in the environment."""

from __future__ import annotations

import os
import socket

import pytest

from core.llm_client import RetryPolicy, make_client


def test_outside_address_is_blocked():
    with pytest.raises(RuntimeError, match="blocked in tests"):
        socket.create_connection(("93.184.216.34", 443), timeout=1)
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock,
        pytest.raises(RuntimeError, match="blocked"),
    ):
        sock.connect(("8.8.8.8", 53))


def test_outside_host_name_is_not_even_resolved():
    with pytest.raises(RuntimeError, match="resolving 'api.openai.com' is blocked"):
        socket.getaddrinfo("api.openai.com", 443)


def test_loopback_is_allowed(fake_server):
    with socket.create_connection(("127.0.0.1", int(fake_server.base_url.rsplit(":", 1)[1])), timeout=1):
        pass


def test_sdk_call_to_the_real_api_cannot_leave_the_machine(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    client = make_client("openai", retry=RetryPolicy(max_retries=0))
    # The guard's error is not a transport error: it escapes the SDK and the client unwrapped.
    with pytest.raises(RuntimeError, match="resolving 'api.openai.com' is blocked in tests"):
        client.complete(purpose="p", messages="hi")


def test_provider_keys_are_cleared_for_each_test():
    assert not any(
        os.environ.get(name)
        for name in (
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "DEEPSEEK_API_KEY",
            "OPENROUTER_API_KEY",
            "OPENAI_COMPAT_API_KEY",
        )
    )
