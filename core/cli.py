"""One CLI factory: every domain gets the same commands and flags with the same meanings.

``python -m domains.<name>.cli [GLOBAL OPTIONS] COMMAND [OPTIONS]``, built by :func:`make_app`:

==========  ==========================================================================================
``once``    the baseline (plus what the domain's ``once`` adds, e.g. one article revision)
``run``     the full loop (Levels 1, 1.5, 2); ``--levels 1`` for Level 1 only
``bilevel`` the same as ``run`` (the name the paper's README prints)
``resume``  continue a stopped or killed run from its journal; may raise ``--max-cost``,
            ``--max-calls``, ``--wall-time``, ``--request-timeout``
``report``  write and print the run's report
==========  ==========================================================================================

Global options (providers, models, seed, run directory, request timeout and the domain's own, such
as ``--target-dir``) are accepted before or after the command. Budget flags keep both spellings:
``--inner-budget``/``--max-inner`` and ``--outer-cycles``/``--max-outer``.

Exit status: 0 the run finished; 2 a user mistake (one line on stderr, no run directory left
behind); **75** the run stopped cleanly before its end — an LLM budget, a provider outage or the
wall-time limit — with its state saved (``resume`` continues it; 75 is ``EX_TEMPFAIL``: try again
later); 130 interrupted.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from core.errors import UserError
from core.llm.registry import PROVIDERS
from core.records import TrialRecord
from core.settings import parse_levels
from core.state import DEFAULT_RUNS_ROOT

EXIT_USER_ERROR = 2
EXIT_STOPPED = 75
EXIT_INTERRUPTED = 130
PROVIDER_HELP = " | ".join([*(p for p in PROVIDERS if p != "replay"), "replay:CASSETTE"])

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@dataclass(frozen=True)
class Opt:
    """One CLI option: ``name`` is the Python parameter, ``key`` the settings field (default: name)."""

    name: str
    annotation: Any
    default: Any
    help: str
    flags: tuple[str, ...] = ()
    key: str | None = None
    argument: bool = False  # a positional argument instead of an option

    def parameter(self) -> inspect.Parameter:
        if self.argument:
            default = typer.Argument(self.default, help=self.help, show_default=False)
        else:
            default = typer.Option(self.default, *(self.flags or ("--" + self.name.replace("_", "-"),)), help=self.help)
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, annotation=self.annotation, default=default)


@dataclass
class DomainCli:
    """What a domain adds to the common CLI: its session, options and report pieces."""

    name: str
    help: str
    session: Callable[[], Any]  # -> the session class (imported lazily: --help stays fast)
    make_settings: Callable[[], Callable[..., Any]]
    inner_budget: int
    outer_cycles: int
    write_report: Callable[[Path], Path]
    show_summary: Callable[[Path, dict[str, Any]], None]
    record_line: Callable[[str, TrialRecord], str]
    event_line: Callable[[dict[str, Any]], str | None] = lambda event: None
    global_options: list[Opt] = field(default_factory=list)
    run_options: list[Opt] = field(default_factory=list)
    once_options: list[Opt] = field(default_factory=list)
    once_settings: dict[str, Any] = field(default_factory=dict)
    to_settings: Callable[[dict[str, Any]], dict[str, Any]] = lambda values: values
    show_report: Callable[[Path], None] | None = None


GLOBAL = [
    Opt("provider", str, "offline", f"Researcher: {PROVIDER_HELP}."),
    Opt("model", str | None, None, "Model id (default: the provider's default)."),
    Opt("outer_provider", str | None, None, "Provider for Levels 1.5 and 2 (default: --provider)."),
    Opt("outer_model", str | None, None, "Model for Levels 1.5 and 2."),
    Opt("seed", int, 0, "Seed of the researcher, the search and the trained model (trials get BILEVEL_SEED)."),
    Opt("run_dir", Path | None, None, f"Run directory (default: a new folder under {DEFAULT_RUNS_ROOT}/)."),
    Opt("request_timeout", float | None, None, "Seconds one LLM request may take (default: the provider's).",
        key="request_timeout_s"),
    Opt("verbose", bool, False, "Log diagnostics.", flags=("--verbose", "-v")),
]
LOOP_OPTIONS = [
    Opt("levels", str, "1,1.5,2", "Comma list of levels: 1 (inner), 1.5 (config), 2 (generated plug-ins)."),
    Opt("max_cost", float | None, None, "Stop when LLM spend reaches this many USD.", key="max_cost_usd"),
    Opt("max_calls", int | None, None, "Stop after this many LLM calls."),
    Opt("wall_time", float | None, None, "Stop after this many seconds.", key="wall_time_s"),
    Opt("record_cassette", bool, False, "Record every LLM call to RUN_DIR/cassette.jsonl."),
    # parallel trials (core.batch, core.pool): the same flags in every domain
    Opt("parallel", int, 1, "Trials in flight at once (K). Decided in proposal order; same trial budget as K=1."),
    Opt("executor", str, "local", "Where trials run: local (slots on this machine) or ray (tasks on a Ray cluster)."),
    Opt("ray_address", str | None, None, "Ray cluster address for --executor ray (default: a new local instance)."),
    Opt("gpus", str | None, None, "Comma list of CUDA devices for local slots, one trial each (e.g. 0,1,2,3)."),
    Opt("trial_threads", int | None, None, "Threads per trial (default with --parallel K > 1: the cores / K)."),
    Opt("trial_cpus", float, 1.0, "CPUs a Ray task declares per trial."),
    Opt("trial_gpus", float, 0.0, "GPUs a Ray task declares per trial (Ray sets CUDA_VISIBLE_DEVICES)."),
]


# keep/discard (README, "Keep/discard decisions"): for a domain whose executor runs trials on a seed
DECISION_OPTIONS = [
    Opt("decision", str, "noise-aware", "Keep rule: noise-aware (gains beyond the noise measured across training "
        "seeds; near-ties retested) or strict (any improvement)."),
    Opt("noise_floor", float | None, None, "Fix the smallest single-seed gain that counts instead of measuring the noise."),
    Opt("noise_replicates", int | None, None, "Extra seeds of the baseline that measure the noise (default: by the budget)."),
    Opt("max_failed", int, 5, "Stop after this many trials in a row fail (crash/fail/timeout); 0 = never.",
        key="max_failed_in_a_row"),
]


class GlobalOptionsAnywhere(TyperGroup):
    """A group whose own options may also follow the command: they are moved in front of it."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        flags = {o: p for p in self.params if getattr(p, "param_type_name", "") == "option"
                 for o in (*p.opts, *p.secondary_opts)}
        head: list[str] = []
        rest = list(args)
        while rest and rest[0].startswith("-"):  # options before the command, with their values
            token = rest.pop(0)
            head.append(token)
            option = flags.get(token.split("=", 1)[0])
            if option is not None and not option.is_flag and "=" not in token and rest:
                head.append(rest.pop(0))
        if not rest or rest[0] not in self.commands:
            return super().parse_args(ctx, args)
        command, tail, moved = rest[0], [], []
        it = iter(rest[1:])
        for token in it:
            option = flags.get(token.split("=", 1)[0])
            if option is None:
                tail.append(token)
                continue
            moved.append(token)
            if not option.is_flag and "=" not in token:
                moved.append(next(it, ""))
        return super().parse_args(ctx, [*head, *moved, command, *tail])


def _with_signature(fn: Callable[..., Any], options: list[Opt], *, leading: list[inspect.Parameter]) -> Callable[..., Any]:
    fn.__signature__ = inspect.Signature([*leading, *(o.parameter() for o in options)])  # type: ignore[attr-defined]
    return fn


def _keys(options: list[Opt], values: dict[str, Any]) -> dict[str, Any]:
    return {(o.key or o.name): values[o.name] for o in options if o.name in values}


def guard(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a :class:`UserError` is one line on stderr and exit status 2."""
    try:
        return fn()
    except UserError as exc:
        typer.echo(f"error: {' '.join(str(exc).split())}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None


def execute(spec: DomainCli, session: Any, *, header: str) -> dict[str, Any]:
    """Run a started or resumed session with progress lines; exit 75 when it stopped early."""
    session.on_record = lambda loop, record: console.print(spec.record_line(loop, record), soft_wrap=True)

    def on_event(event: dict[str, Any]) -> None:
        line = spec.event_line(event)
        if line:
            console.print(line, soft_wrap=True)

    session.on_event = on_event

    def on_flight(loop: str, flying: tuple[int, ...], finished: int) -> None:
        if flying:
            console.print(f"  {loop}: in flight {', '.join(f'#{i}' for i in flying)} ({finished} finished in this batch)",
                          style="dim", markup=False, soft_wrap=True)

    session.on_flight = on_flight
    path = session.rundir.path
    console.print(f"[bold]{escape(header)}[/bold] → {escape(str(path))}")
    ids = session.settings.client_ids()
    console.print("; ".join(f"{level}: {p}{':' + m if m else ''}" for level, (p, m) in ids.items()),
                  style="dim", markup=False)
    if session.settings.offline_researcher:
        console.print("researcher: offline stand-in (deterministic rules, not an LLM)", style="dim", markup=False)
    try:
        summary = session.run()
    except KeyboardInterrupt:
        err.print(f"interrupted; nothing finished is lost. Continue with: python -m domains.{spec.name}.cli "
                  f"resume {path}", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        session.close()  # whatever stopped the run (a full disk too), release the run directory's lock
    report = spec.write_report(path)
    spec.show_summary(path, summary)
    console.print(f"report: {report}", markup=False)
    if summary.get("stopped"):
        more = " --wall-time SECONDS" if "wall-time" in str(summary["stopped"]) else ""  # else the same limit applies again
        console.print(f"[yellow]stopped:[/yellow] {escape(str(summary['stopped']))} — resume with: "
                      f"python -m domains.{spec.name}.cli resume {escape(str(path))}{more}", soft_wrap=True)
        raise typer.Exit(EXIT_STOPPED)
    return summary


def make_app(spec: DomainCli) -> typer.Typer:
    """The domain's typer app: ``once``, ``run``, ``bilevel``, ``resume``, ``report``."""
    app = typer.Typer(cls=GlobalOptionsAnywhere, add_completion=False, no_args_is_help=True, help=spec.help)
    ctx_param = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    global_options = GLOBAL + spec.global_options

    def main_options(ctx: typer.Context, **values: Any) -> None:
        verbose = values.pop("verbose", False)
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        ctx.obj = _keys(global_options, values)

    app.callback()(_with_signature(main_options, global_options, leading=[ctx_param]))

    def start(ctx: typer.Context, values: dict[str, Any], *, header: str) -> None:
        def go() -> None:
            merged = {**ctx.obj, **values}
            run_dir = merged.pop("run_dir", None)
            settings = spec.make_settings()(**spec.to_settings(merged))
            execute(spec, spec.session().start(settings, run_dir), header=header)

        guard(go)

    def once(ctx: typer.Context, **values: Any) -> None:
        """One baseline of the target (and what the domain's once adds), with its summary."""
        start(ctx, {**_keys(spec.once_options, values), "levels": ("1",), "outer_cycles": 1, **spec.once_settings},
              header=f"{spec.name} once")

    app.command(name="once", help=once.__doc__)(_with_signature(once, spec.once_options, leading=[ctx_param]))

    budget = [
        Opt("inner_budget", int, spec.inner_budget, "Level-1 iterations per outer cycle (per task).",
            flags=("--inner-budget", "--max-inner")),
        Opt("outer_cycles", int, spec.outer_cycles, "Outer cycles (Level 2 acts from the second one).",
            flags=("--outer-cycles", "--max-outer")),
    ]
    loop_options = budget + LOOP_OPTIONS + spec.run_options

    def make_loop(name: str) -> Callable[..., None]:
        def loop(ctx: typer.Context, **values: Any) -> None:
            def go() -> None:
                levels = parse_levels(values["levels"])
                start(ctx, {**_keys(loop_options, values), "levels": levels},
                      header=f"{spec.name} {name} (levels {','.join(levels)})")

            guard(go)

        return _with_signature(loop, loop_options, leading=[ctx_param])

    loop_help = "The full loop: Levels 1 + 1.5 + 2 (choose with --levels; --levels 1 = Level 1 only)."
    app.command(name="run", help=loop_help)(make_loop("run"))
    app.command(name="bilevel", help=loop_help + " Same as run.")(make_loop("bilevel"))

    resume_options = [
        Opt("max_cost", float | None, None, "Raise the LLM spend limit (USD, whole run).", key="max_cost_usd"),
        Opt("max_calls", int | None, None, "Raise the LLM call limit (whole run)."),
        Opt("wall_time", float | None, None, "Change the wall-time limit (seconds, from this start).",
            key="wall_time_s"),
        Opt("ray_address", str | None, None, "Change the Ray cluster address (--executor ray runs)."),
    ]
    run_dir_arg = inspect.Parameter("run_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Path,
                                    default=typer.Argument(..., help="The run directory."))

    def resume(ctx: typer.Context, run_dir: Path, **values: Any) -> None:
        """Continue a stopped or killed run from its journal (nothing finished lost, nothing run twice)."""
        fixed = sorted(o.flags[0] if o.flags else "--" + o.name.replace("_", "-") for o in global_options
                       if (o.key or o.name) in ctx.obj and o.name not in ("request_timeout", "verbose")
                       and ctx.obj[o.key or o.name] != o.default)
        if fixed:
            typer.echo(f"error: resume takes its settings from RUN_DIR/settings.json; drop {', '.join(fixed)} "
                       "(resume may change only --max-cost, --max-calls, --wall-time, --request-timeout and --ray-address)", err=True)
            raise typer.Exit(EXIT_USER_ERROR)
        overrides = {**_keys(resume_options, values), "request_timeout_s": ctx.obj.get("request_timeout_s")}
        guard(lambda: execute(spec, spec.session().resume(run_dir, overrides), header=f"{spec.name} resume"))

    app.command(name="resume", help=resume.__doc__)(
        _with_signature(resume, resume_options, leading=[ctx_param, run_dir_arg]))

    @app.command(name="report")
    def report(run_dir: Path = typer.Argument(..., help="The run directory to summarize.")) -> None:
        """Write the run's report into its directory and print its summary."""
        def go() -> None:
            if spec.show_report is not None:
                spec.show_report(run_dir)
            else:
                console.print(f"wrote {spec.write_report(run_dir)}", markup=False)

        guard(go)

    return app
