"""Generated stages run in a sandboxed worker (:mod:`core.host`), never in the controller.

:func:`serve_stage` is the worker side: it rebuilds a :class:`StageContext` from JSON (with
``ask`` turned into a callback to the controller, which asks the inner model) and returns the
stage's :class:`Findings` as JSON. :func:`stage_proxy` is the controller side: a :class:`Stage`
whose ``run`` is one call to the worker, and whose result is validated again as fresh
:class:`Findings` here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from core.errors import MechanismError
from core.host import Worker
from domains.article_opt.pipeline.contract import Findings, SectionView, Stage, StageContext

STAGE_TIMEOUT_S = 10.0


def serve_stage(instance: Stage, message: dict[str, Any], callback: Callable[[str, Any], Any]) -> Any:
    if message.get("method") != "run":
        raise ValueError(f"a stage has no method {message.get('method')!r}")
    data = message["args"][0]
    asker = None
    if data.get("can_ask"):
        def asker(instruction: str) -> Findings:
            return Findings.model_validate(callback("ask", str(instruction)))
    ctx = StageContext(
        article=data["article"], sections=tuple(SectionView(h, t) for h, t in data.get("sections", ())),
        outputs=MappingProxyType({k: MappingProxyType(dict(v)) for k, v in data.get("outputs", {}).items()}),
        lessons=tuple(data.get("lessons", ())), guidance=data.get("guidance", ""),
        retry_error=data.get("retry_error"), iteration=int(data.get("iteration", 0)), seed=int(data.get("seed", 0)),
        asker=asker,
    )
    out = instance.run(ctx)
    if not isinstance(out, Findings):
        raise TypeError(f"run() returned {type(out).__name__}, expected Findings")
    return out.model_dump(mode="json")


class RemoteStage(Stage):
    """A generated stage in its worker. ``name`` is set per loaded stage (a subclass each)."""

    output = Findings

    def __init__(self, worker: Worker, timeout_s: float = STAGE_TIMEOUT_S) -> None:
        self.worker = worker
        self.timeout_s = timeout_s

    def close(self) -> None:
        self.worker.close()

    def run(self, ctx: StageContext) -> Findings:
        payload = {
            "article": ctx.article, "sections": [[s.heading, s.text] for s in ctx.sections],
            "outputs": {k: dict(v) for k, v in ctx.outputs.items()}, "lessons": list(ctx.lessons),
            "guidance": ctx.guidance, "retry_error": ctx.retry_error, "iteration": ctx.iteration, "seed": ctx.seed,
            "can_ask": ctx.asker is not None,
        }
        callbacks = {"ask": lambda instruction: ctx.ask(str(instruction)[:4000]).model_dump(mode="json")}
        value = self.worker.call({"method": "run", "args": [payload]}, timeout_s=self.timeout_s, callbacks=callbacks)
        return Findings.model_validate(value)  # strict: extra fields forbidden, lengths capped


def stage_proxy(worker: Worker, info: dict[str, Any]) -> RemoteStage:
    name = str(info["name"])
    if not re.fullmatch(r"[a-z][a-z0-9_]{1,40}", name) or name == Stage.name:
        raise MechanismError(f"contract: bad-reply: stage name {name[:60]!r} is not a snake_case identifier",
                             stage="contract", rule="bad-reply")
    cls = type(f"RemoteStage_{name}", (RemoteStage,), {"name": name, "description": "generated (sandboxed)"})
    return cls(worker)
