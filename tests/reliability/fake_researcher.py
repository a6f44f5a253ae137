"""A fake OpenAI-compatible server on 127.0.0.1 that plays the train_opt researcher, with faults.

The real ``openai`` SDK talks to it (``OPENAI_BASE_URL``). It answers by the schema the request asks
for (named in ``response_format``, or in the schema instruction the client adds): a hyperparameter change, a Level-1.5 patch
or a Level-2 template design, each valid for the reliability stand-in. ``faults`` maps a request
number (0-based, in arrival order) to what goes wrong with that one request instead;
``schema_faults`` maps a schema name to a fault for every request of that schema:

  transport   "429", "500", "503" (with ``retry-after-ms: 1``), "timeout" (answers after
              ``hold_s``), "drop" (closes the connection unanswered), "garbage" (HTTP 200, not JSON),
              "refuse:S" (answers, then stops listening for S seconds: connections are refused)
  content     "truncated", "malformed", "schema" (valid JSON, wrong shape), "empty", "null",
              "huge" (4 MiB of prose before the JSON)
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEMPLATES = ("tabu", "bandit", "orthogonal", "step_size")
PARAMS = ("WEIGHT_DECAY", "WARMDOWN_RATIO")
HUGE_BYTES = 4 * 2**20


class FakeResearcher:
    def __init__(self, faults: dict[int, str] | None = None, *, hold_s: float = 2.0,
                 schema_faults: dict[str, str] | None = None, design_source: str | None = None) -> None:
        self.design_source = design_source  # a Level-2 design written as source instead of a template
        self.faults = dict(faults or {})
        self.schema_faults = dict(schema_faults or {})  # schema name -> fault for every such request
        self.hold_s = hold_s
        self.requests: list[dict[str, Any]] = []  # {"n", "schema", "headers", "fault"}
        self._lock = threading.Lock()
        self._count = 0
        self._changes = 0
        self._designs = 0
        self._closing = threading.Event()
        self._refusing = threading.Event()
        self._httpd = self._serve(0)
        self.port = self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def answered(self, schema: str) -> int:
        return sum(1 for r in self.requests if r["schema"] == schema and not r["fault"])

    # -- what a healthy researcher says ---------------------------------------------------------
    def answer(self, schema: str) -> str:
        with self._lock:
            if schema == "ChangeReply":
                self._changes += 1
                name = PARAMS[self._changes % len(PARAMS)]
                value = round(0.01 + 0.001 * self._changes, 4)  # never the same value twice
                return json.dumps({"changes": {name: value}, "hypothesis": f"fake: {name} to {value}"})
            if schema == "ConfigPatch":
                return json.dumps({"reason": "fake researcher: keep the configuration"})
            if schema == "DesignReply" and self.design_source:
                return json.dumps({"source": self.design_source, "rationale": "fake researcher: custom source"})
            if schema == "DesignReply":
                self._designs += 1
                return json.dumps({"template": TEMPLATES[self._designs % len(TEMPLATES)], "params": {},
                                   "rationale": "fake researcher"})
        return "plain text"

    # -- serving --------------------------------------------------------------------------------
    def _serve(self, port: int) -> ThreadingHTTPServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                owner._handle(self, json.loads(raw or b"{}"))

        httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return httpd

    def _handle(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        if self._refusing.is_set():  # a kept-alive connection from before the outage: cut it too
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return None
        system = " ".join(m.get("content") or "" for m in body.get("messages", []) if m.get("role") == "system")
        native = ((body.get("response_format") or {}).get("json_schema") or {}).get("name", "")  # openai's native mode
        schema = native or next((s for s in ("ChangeReply", "ConfigPatch", "DesignReply")
                                 if f'"title": "{s}"' in system or f'"title":"{s}"' in system), "")
        with self._lock:
            n = self._count
            self._count += 1
            fault = self.faults.get(n) or self.schema_faults.get(schema, "")
            self.requests.append({"n": n, "schema": schema, "headers": dict(handler.headers.items()), "fault": fault})
        if fault in ("429", "500", "503"):
            return self._send(handler, int(fault), {"error": {"message": f"fake {fault}", "type": "fake"}},
                              headers={"retry-after-ms": "1"})
        if fault == "timeout":
            if self._closing.wait(self.hold_s):
                return None
        if fault == "drop":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return None
        if fault == "garbage":
            return self._send_raw(handler, 200, b"<html>502 Bad Gateway</html>", "text/html")
        content: str | None = self.answer(schema)
        if fault == "truncated":
            content = content[: len(content) // 2]
        elif fault == "malformed":
            content = "{'changes': {WEIGHT_DECAY: 0.3,}"
        elif fault == "schema":
            content = json.dumps({"changes": "raise the learning rate", "mood": "optimistic"})
        elif fault == "empty":
            content = ""
        elif fault == "null":
            content = None
        elif fault == "huge":
            content = ("Let me think about this very carefully. " * (HUGE_BYTES // 41)) + "\n" + content
        self._send(handler, 200, {
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        })
        if fault.startswith("refuse:"):
            threading.Thread(target=self._refuse, args=(float(fault.split(":")[1]),), daemon=True).start()
        return None

    def _send(self, handler: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict | None = None) -> None:
        self._send_raw(handler, status, json.dumps(payload).encode(), "application/json", headers)

    @staticmethod
    def _send_raw(handler: BaseHTTPRequestHandler, status: int, data: bytes, kind: str,
                  headers: dict | None = None) -> None:
        try:
            handler.send_response(status)
            handler.send_header("content-type", kind)
            handler.send_header("content-length", str(len(data)))
            for key, value in (headers or {}).items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout)

    def _refuse(self, seconds: float) -> None:
        """Stop listening (connections are refused), then listen again on the same port."""
        time.sleep(0.05)  # let the answer that triggered it reach the client
        self._refusing.set()
        old = self._httpd
        old.shutdown()
        old.server_close()
        if not self._closing.wait(seconds):
            self._httpd = self._serve(self.port)
            self._refusing.clear()

    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
