"""Fake LLM HTTP servers on 127.0.0.1 that the real openai and anthropic SDKs talk to.

A test scripts the replies (:class:`Reply`: status, JSON body, headers, delay); the server answers
requests in order, repeating the last reply once the script is used up, and keeps every request
it received (path, headers, JSON body) for assertions.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from core.llm_client import LLMClient, RetryPolicy, make_client, unregister_offline_handler


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Captured:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def openai_reply(
    text: str, *, prompt_tokens: int = 12, completion_tokens: int = 7, model: str = "gpt-4o-mini"
) -> Reply:
    return Reply(
        body={
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def anthropic_reply(
    text: str, *, input_tokens: int = 20, output_tokens: int = 9, model: str = "claude-test"
) -> Reply:
    return Reply(
        body={
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
    )


def error_reply(
    status: int, message: str = "error", *, headers: dict[str, str] | None = None, anthropic: bool = False
) -> Reply:
    if anthropic:
        body = {"type": "error", "error": {"type": "api_error", "message": message}}
    else:
        body = {"error": {"message": message, "type": "fake_error", "code": None}}
    return Reply(status=status, body=body, headers=headers or {})


class FakeLLMServer:
    """Serves ``/v1/chat/completions`` and ``/v1/messages`` from a script of replies."""

    reply = staticmethod(Reply)
    openai_reply = staticmethod(openai_reply)
    anthropic_reply = staticmethod(anthropic_reply)
    error_reply = staticmethod(error_reply)

    def __init__(self) -> None:
        self.requests: list[Captured] = []
        self._script: list[Reply] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # header and body go out in two writes; avoid 40 ms stalls

            def log_message(self, *args: object) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                reply = server._take(
                    Captured(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw or b"{}")
                    )
                )
                if reply.delay_s and server._closing.wait(reply.delay_s):
                    return
                if self.path not in ("/v1/chat/completions", "/v1/messages"):
                    reply = Reply(status=404, body={"error": {"message": f"no route {self.path}"}})
                payload = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script = list(replies)
            self.requests.clear()

    def _take(self, captured: Captured) -> Reply:
        with self._lock:
            self.requests.append(captured)
            if not self._script:
                return error_reply(500, "no reply scripted")
            return self._script.pop(0) if len(self._script) > 1 else self._script[0]

    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def fake_server() -> Iterator[FakeLLMServer]:
    server = FakeLLMServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def fast_retry() -> RetryPolicy:
    """Retries with millisecond backoff, so retry tests stay fast."""
    return RetryPolicy(max_retries=2, base_delay_s=0.001, max_delay_s=0.01)


@pytest.fixture
def offline_purpose(request: pytest.FixtureRequest) -> Iterator[str]:
    """A purpose name unique to the test; its offline handler is unregistered afterwards."""
    purpose = f"test::{request.node.name}"
    try:
        yield purpose
    finally:
        unregister_offline_handler(purpose)


@pytest.fixture(autouse=True)
def isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test here runs in an empty directory, so no developer ``.env`` is found upward."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def openai_client(
    fake_server: FakeLLMServer, fast_retry: RetryPolicy, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., LLMClient]]:
    """Factory: a real-SDK ``openai:gpt-4o-mini`` client pointed at the fake server."""
    made: list[LLMClient] = []

    def build(**kwargs: Any) -> LLMClient:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-secret")
        kwargs.setdefault("base_url", fake_server.openai_base_url)
        kwargs.setdefault("retry", fast_retry)
        kwargs.setdefault("timeout_s", 5.0)
        client = make_client(kwargs.pop("model_id", "openai:gpt-4o-mini"), **kwargs)
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


@pytest.fixture
def anthropic_client(
    fake_server: FakeLLMServer, fast_retry: RetryPolicy, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., LLMClient]]:
    """Factory: a native-SDK ``anthropic:claude-test`` client pointed at the fake server."""
    made: list[LLMClient] = []

    def build(**kwargs: Any) -> LLMClient:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-secret")
        kwargs.setdefault("base_url", fake_server.base_url)
        kwargs.setdefault("retry", fast_retry)
        kwargs.setdefault("timeout_s", 5.0)
        client = make_client("anthropic:claude-test", **kwargs)
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()
