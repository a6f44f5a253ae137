"""A fake OpenAI-compatible server on 127.0.0.1 that answers article_opt requests by schema.

It is driven through the real ``openai`` SDK by the real client (``--provider openai`` with
``OPENAI_BASE_URL`` pointing here). It reads the schema's name from ``response_format`` (or the
JSON-schema title the client puts in the system message) and answers with a small valid object, built from the request text where it has to be
(section headings, the text to revise). It records every request, so a test can prove which
purposes went over HTTP. Run it by hand with ``python -m tests.domains.article_opt.fake_openai``.
"""

from __future__ import annotations

import ast
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from domains.article_opt.stage_templates import render as render_template

DIMENSIONS = ("rigor", "clarity", "internal_consistency", "insight", "actionability")


def _schema_title(messages: list[dict[str, str]], response_format: dict[str, Any] | None = None) -> str:
    native = ((response_format or {}).get("json_schema") or {}).get("name")
    if native:  # the client's native structured output (provider openai)
        return str(native)
    for m in messages:
        if m["role"] == "system" and "JSON Schema:" in m["content"]:
            schema = json.loads(m["content"].split("JSON Schema:", 1)[1])
            return str(schema.get("title", ""))
    return ""


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n") if start in text and end in text else ""


def _sections(text: str) -> list[str]:
    m = re.search(r"^Sections: (\[.*\])$", text, re.MULTILINE)
    return list(ast.literal_eval(m.group(1))) if m else ["(lead)"]


def answer(title: str, user: str) -> dict[str, Any]:
    """A valid reply for the schema ``title``; the revision appends a closing list of actions."""
    if title == "AnalysisOut":
        article = _between(user, "<<<ARTICLE\n", "\nARTICLE>>>")
        heads = re.findall(r"^## (.+)$", article, re.MULTILINE) or ["(lead)"]
        return {"thesis": "fake thesis", "weaknesses": [
            {"dimension": "actionability", "section": heads[-1], "evidence": "no steps", "severity": 3}]}
    if title == "HypothesesOut":
        last = _sections(user)[-1]
        return {"hypotheses": [{"dimension": "actionability", "section": last, "action": "add_actions",
                                "change": "end with concrete steps", "expected_gain": 2.0}]}
    if title == "PlanOut":
        last = _sections(user)[-1]
        return {"edits": [{"section": last, "action": "add_actions", "dimension": "actionability",
                           "instruction": "end with three concrete steps"}], "rationale": "fake"}
    if title == "AssessmentOut":
        return {"approved": [0], "rejected": [], "risks": []}
    if title == "SectionRevision":
        text = _between(user, "<<<TEXT\n", "\nTEXT>>>")
        step = len(re.findall(r"^\d+\. ", text, re.MULTILINE)) + 1
        return {"text": text.rstrip() + f"\n\n{step}. Try step {step} this week.\n", "changes": [f"added step {step}"]}
    if title == "JudgeScores":
        article = _between(user, "<<<ARTICLE\n", "\nARTICLE>>>")
        steps = len(re.findall(r"^\d+\. ", article, re.MULTILINE))
        scores = {d: 5.0 for d in DIMENSIONS}
        scores["actionability"] = min(10.0, 2.0 + steps)
        return {d: {"score": s, "reason": "fake judge"} for d, s in scores.items()}
    if title == "OuterPatch":
        return {"strategy": "actionable-ending", "diagnosis": "fake: actionability lags",
                "overrides": [{"stage": "revision", "instruction": "end with 3-5 specific actions"}]}
    if title == "StageDesign":
        return {"name": "counter_argument", "after": "planning", "rationale": "fake designer",
                "source": render_template("counter_argument")}
    if title == "Findings":
        return {"items": [], "summary": "fake: nothing found"}
    raise ValueError(f"fake server has no answer for schema {title!r}")


class FakeOpenAI:
    """``with FakeOpenAI() as server: ... server.base_url ...``"""

    def __init__(self) -> None:
        self.requests: list[str] = []  # schema titles, in order
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                messages = body.get("messages", [])
                title = _schema_title(messages, body.get("response_format"))
                user = "\n".join(m["content"] for m in messages if m["role"] != "assistant")  # the essay is a system turn
                with server.lock:
                    server.requests.append(title)
                try:
                    content, status = json.dumps(answer(title, user)), 200
                except Exception as exc:  # noqa: BLE001 - report it to the client as a 400
                    content, status = str(exc), 400
                reply = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body.get("model"),
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": content}}],
                         "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}
                payload = json.dumps(reply if status == 200 else {"error": {"message": content}}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    with FakeOpenAI() as fake:
        print(fake.base_url, flush=True)
        threading.Event().wait()
