"""Mechanisms attached to a running loop: how they are attached, called, counted and detached.

:class:`MechanismSlots` is the part of :class:`~core.inner_loop.InnerLoopController` that hosts
mechanisms. Every hook call runs under a deadline (a generated mechanism's worker is timed and killed
by its proxy; a library mechanism runs under the in-process deadline), its answer is type-checked,
and a hook that fails, hangs or answers the wrong type detaches its mechanism and is journaled: a
broken mechanism never stops the loop. Calls are counted per iteration (``_calls``) and so are the
calls that changed what happened (``_effects``, counted by the controller where the change happens).
"""

from __future__ import annotations

import logging
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from core.deadline import call_with_deadline
from core.errors import HookTimeout, MechanismError
from core.host import RemoteMechanism
from core.mechanism import HOOKS, Mechanism
from core.records import FilterVerdict, Guidance, Proposal, ProposalContext, TrialRecord

if TYPE_CHECKING:
    from core.state import RunDir

log = logging.getLogger("core.inner_loop")

TAIL_CHARS = 2000

_HOOK_TYPES: dict[str, tuple[type, ...]] = {
    "guidance": (Guidance,),
    "propose": (Proposal,),
    "filter": (FilterVerdict,),
    "decide": (bool,),
    "observe": (object,),
}


def tail(text: str, n: int = TAIL_CHARS) -> str:
    return text if len(text) <= n else text[-n:]


def overridden_hooks(instance: Mechanism) -> tuple[str, ...]:
    if isinstance(instance, RemoteMechanism):  # what the worker reported at load time
        return instance.hooks
    cls = type(instance)
    return tuple(h for h in HOOKS if getattr(cls, h, None) is not getattr(Mechanism, h))


@dataclass
class AttachedMechanism:
    name: str
    instance: Mechanism
    origin: Literal["library", "generated"] = "library"
    digest: str | None = None
    hooks: tuple[str, ...] = ()
    calls: Counter = field(default_factory=Counter)
    # While a design is on trial (Level 2's paired verdict): the iterations on which its steering
    # hooks run; on the others the loop runs as its parent set would. None: every iteration.
    arm: Callable[[int], bool] | None = None

    def steers(self, ctx: ProposalContext, record: TrialRecord | None = None) -> bool:
        """Whether its steering hooks (all but ``observe``) run on ``ctx.iteration`` — for ``decide`` on
        a retest, on the iteration whose proposal the retest re-measures (that arm's candidate)."""
        if self.arm is None:
            return True
        return bool(self.arm(record.origin_iteration if record is not None else ctx.iteration))


DetachCallback = Callable[[AttachedMechanism, str], None]

class MechanismSlots:
    """Attach, call and detach mechanisms; the host class sets ``run``, ``loop``, ``history``,
    ``hook_timeout_s``, ``mechanisms``, ``on_detach``, ``_calls`` and ``_effects``."""

    run: RunDir
    loop: str
    history: list[TrialRecord]
    hook_timeout_s: float
    mechanisms: list[AttachedMechanism]
    on_detach: list[DetachCallback]
    _calls: dict[str, Counter]
    _effects: dict[str, Counter]

    def attach(self, mechanism: Mechanism, *, name: str | None = None, origin: Literal["library", "generated"] = "library",
               digest: str | None = None, replay: bool = True, front: bool = False) -> AttachedMechanism:
        """Attach ``mechanism``; its hooks are called in attachment order, and ``front=True`` puts it
        first — Level 2 attaches the design on trial so: the first proposing mechanism that answers
        makes the move, and a design judged by a cycle must act in that cycle, not wait behind the
        designs kept before it."""
        name = name or getattr(mechanism, "name", None) or type(mechanism).__name__
        if any(m.name == name for m in self.mechanisms):
            raise ValueError(f"a mechanism named {name!r} is already attached to loop {self.loop!r}")
        attached = AttachedMechanism(name=name, instance=mechanism, origin=origin, digest=digest,
                                     hooks=overridden_hooks(mechanism))
        if isinstance(mechanism, RemoteMechanism):
            mechanism.timeout_s = self.hook_timeout_s  # enforced from outside, by killing its worker
        if replay and self.history:
            try:
                self._deadlined(mechanism, lambda: mechanism.replay(tuple(self.history)))
            except (Exception, HookTimeout, SystemExit, GeneratorExit) as exc:
                if isinstance(mechanism, RemoteMechanism):
                    mechanism.close()
                raise MechanismError(f"mechanism {name!r} failed to replay the history: {type(exc).__name__}: {exc}",
                                     stage="replay", traceback_tail=tail(traceback.format_exc())) from exc
        if front:
            self.mechanisms.insert(0, attached)
        else:
            self.mechanisms.append(attached)
        log.info("loop %s: attached mechanism %s (%s)", self.loop, name, ", ".join(attached.hooks) or "no hooks")
        return attached

    def detach(self, name: str, *, reason: str, hook: str | None = None, traceback_tail: str = "",
               journal: bool = True) -> AttachedMechanism | None:
        for attached in list(self.mechanisms):
            if attached.name == name:
                self.mechanisms.remove(attached)
                if isinstance(attached.instance, RemoteMechanism):
                    attached.instance.close()  # revert = kill: nothing of it keeps running
                if journal:
                    self.run.journal.append({
                        "type": "mechanism_detached", "loop": self.loop, "iteration": len(self.history),
                        "name": name, "hook": hook, "reason": reason, "traceback_tail": traceback_tail,
                    })
                for callback in self.on_detach:
                    callback(attached, reason)
                return attached
        return None

    def gate(self, name: str, arm: Callable[[int], bool] | None) -> None:
        """Run the steering hooks of mechanism ``name`` only on the iterations ``arm`` accepts (``None``:
        on all). Level 2 gates a design on trial so that its cycle is a paired comparison: the
        design steers one iteration of each pair, its parent set the other."""
        for attached in self.mechanisms:
            if attached.name == name:
                attached.arm = arm
                return
        raise ValueError(f"no mechanism named {name!r} is attached to loop {self.loop!r}")

    def _call(self, attached: AttachedMechanism, hook: str, *args: Any) -> tuple[bool, Any]:
        """Call one mechanism's hook under the deadline; on failure detach it and return (False, None)."""
        self._calls[attached.name][hook] += 1
        attached.calls[hook] += 1
        try:
            # the lookup runs under the deadline too: a hook may be a property that never returns
            out = self._deadlined(attached.instance, lambda: getattr(attached.instance, hook)(*args))
            expected = _HOOK_TYPES[hook]
            if out is not None and hook != "observe" and not isinstance(out, expected):
                raise TypeError(f"hook {hook} returned {type(out).__name__}, expected {expected[0].__name__} or None")
        except (Exception, HookTimeout, SystemExit, GeneratorExit) as exc:  # a broken mechanism never stops the loop
            reason = f"{hook} failed: {type(exc).__name__}: {exc}"
            log.warning("loop %s: detaching mechanism %s: %s", self.loop, attached.name, reason)
            self.detach(attached.name, reason=reason, hook=hook, traceback_tail=tail(traceback.format_exc()))
            return False, None
        return True, out

    def _deadlined(self, instance: Mechanism, call: Callable[[], Any]) -> Any:
        """A generated mechanism's worker is timed (and killed) by its proxy; a library mechanism
        runs here under the in-process deadline."""
        if isinstance(instance, RemoteMechanism):
            return call()
        return call_with_deadline(call, timeout_s=self.hook_timeout_s)

    def _hook(self, hook: str, *args: Any, skip: set[str] | frozenset[str] = frozenset()) -> Iterator[tuple[AttachedMechanism, Any]]:
        """Call ``hook`` on each attached mechanism that implements it (but those named in ``skip``),
        lazily: a caller that stops at the first answer (``propose``, ``decide``) leaves the later
        mechanisms uncalled."""
        for attached in list(self.mechanisms):
            if hook in attached.hooks and attached in self.mechanisms and attached.name not in skip:
                if hook != "observe" and attached.arm is not None:
                    ctx = next((a for a in args if isinstance(a, ProposalContext)), None)
                    record = next((a for a in args if isinstance(a, TrialRecord)), None)
                    if ctx is not None and not attached.steers(ctx, record):
                        continue  # an iteration of its parent set's arm
                ok, out = self._call(attached, hook, *args)
                if ok:
                    yield attached, out


def hook_call_totals(records: Iterable[TrialRecord], *, field: str = "hook_calls") -> dict[str, dict[str, int]]:
    """Sum the per-iteration hook-call counts of ``records`` per mechanism and hook (``field=
    "hook_effects"``: the calls that changed something)."""
    totals: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        for name, counts in getattr(record, field).items():
            totals[name].update(counts)
    return {name: dict(counts) for name, counts in totals.items()}


def hook_effect_totals(records: Iterable[TrialRecord]) -> dict[str, dict[str, int]]:
    """Per mechanism and hook, how many calls changed what happened (see :class:`TrialRecord`)."""
    return hook_call_totals(records, field="hook_effects")
