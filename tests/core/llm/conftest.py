"""Fake LLM HTTP servers on 127.0.0.1 that the real openai and anthropic SDKs talk to.

A test scripts the replies (:class:`Reply`: status, JSON body, headers, delay); the server answers
requests in order, repeating the last reply once the script is used up, and keeps every request
it received (path, headers, JSON body) for assertions. A request with ``"stream": true`` gets its
scripted reply as server-sent events in the provider's chunk format, ``chunk_delay_s`` apart.
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
    chunk_delay_s: float = 0.0  # between server-sent events, for a streamed request
    raw: bytes | None = None  # sent as is (with ``content_type``) instead of ``body``
    content_type: str = "application/json"


@dataclass
class Captured:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def openai_reply(
    text: str | None,
    *,
    prompt_tokens: int = 12,
    completion_tokens: int = 7,
    model: str = "gpt-4o-mini",
    finish_reason: str = "stop",
    reasoning: str | None = None,
    reasoning_field: str = "reasoning_content",
    reasoning_tokens: int | None = None,
    usage: bool = True,
) -> Reply:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if reasoning is not None:
        message[reasoning_field] = reasoning
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if usage:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if reasoning_tokens is not None:
            body["usage"]["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return Reply(body=body)


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


def anthropic_tool_reply(
    name: str, payload: dict[str, Any], *, input_tokens: int = 30, output_tokens: int = 11, model: str = "claude-test"
) -> Reply:
    return Reply(
        body={
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "tool_use", "id": "toolu_fake", "name": name, "input": payload}],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
    )


def _sse(event: str | None, data: Any) -> bytes:
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {payload}\n\n".encode()


def _pieces(text: str, n: int = 3) -> list[str]:
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def openai_events(body: dict[str, Any]) -> list[bytes]:
    """A chat completion as the chunks a streaming server sends."""
    choice = body["choices"][0]
    message = choice["message"]
    base = {k: body[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    events = []
    for key in ("reasoning_content", "reasoning", "content"):
        if message.get(key):
            for piece in _pieces(message[key]):
                delta = {"role": "assistant", key: piece}
                events.append(base | {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    events.append(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]})
    if body.get("usage"):
        events.append(base | {"choices": [], "usage": body["usage"]})
    return [_sse(None, e) for e in events] + [_sse(None, "[DONE]")]


def anthropic_events(body: dict[str, Any]) -> list[bytes]:
    """A Messages reply as the events a streaming server sends."""
    start = body | {"content": [], "stop_reason": None, "usage": {**body["usage"], "output_tokens": 1}}
    events = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(body["content"]):
        if block["type"] == "tool_use":
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": block | {"input": {}}}))
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _pieces(json.dumps(block["input"]))]
        else:
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "text", "text": ""}}))
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": body["stop_reason"], "stop_sequence": None},
                                     "usage": {"output_tokens": body["usage"]["output_tokens"]}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return [_sse(name, data) for name, data in events]


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
    anthropic_tool_reply = staticmethod(anthropic_tool_reply)
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
                body = json.loads(raw or b"{}")
                if body.get("stream") and reply.status == 200 and reply.raw is None:
                    self._stream(reply)
                    return
                payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", reply.content_type)
                    self.send_header("content-length", str(len(payload)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def _stream(self, reply: Reply) -> None:
                events = anthropic_events(reply.body) if self.path == "/v1/messages" else openai_events(reply.body)
                try:
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for event in events:
                        if reply.chunk_delay_s and server._closing.wait(reply.chunk_delay_s):
                            return
                        self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

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
