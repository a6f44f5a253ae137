"""One root exception with specific subclasses.

``UserError`` subclasses are mistakes a user can fix (a missing key, a bad id, an invalid config);
the CLI prints their message on one line and exits with status 2. ``ProviderError`` subclasses are
failures of something outside the user's control (an API, a child process).
"""

from __future__ import annotations


class BilevelError(Exception):
    """Root of every error this project raises on purpose."""


class UserError(BilevelError):
    """A mistake the user can fix; the message says what to do."""


class ConfigError(UserError):
    """An invalid configuration value or patch."""


class UnknownProviderError(UserError):
    """A provider name that is not in the registry."""


class MissingKeyError(UserError):
    """An API key is missing or empty; the message names the variable to set."""


class RunDirError(UserError):
    """A run directory that cannot be created, read, or is locked by another process."""


class JournalCorruptError(UserError):
    """A journal line in the middle of the file is not valid JSON (a torn *last* line is tolerated)."""


class ProviderError(BilevelError):
    """An LLM provider failed (after retries) or answered something unusable."""

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


class StructuredOutputError(ProviderError):
    """The reply could not be parsed into the requested schema, even after one repair round."""


class ReplayMissError(ProviderError):
    """Provider ``replay`` was asked something its cassette does not hold."""


class RunStopped(BilevelError):
    """A clean stop: the iteration in flight is left unrecorded, the state is saved, and ``resume``
    continues the run. Sessions catch this family, finalize, and exit normally."""


class BudgetExceeded(RunStopped):
    """The run's LLM budget (cost or calls) is spent; the loop stops cleanly with its state saved."""


class ProviderOutage(RunStopped):
    """The provider failed several iterations in a row (after retries): stop rather than spend the
    trial budget on an outage; ``resume`` continues when the provider is back."""


class TrialsFailing(RunStopped):
    """The last trials all failed (crash, fail, timeout): stop rather than spend the budget on a target
    that does not run; ``resume`` continues once the target is fixed."""


class MechanismError(BilevelError):
    """A generated mechanism failed a loading stage or a hook; it is reverted, never fatal."""

    def __init__(self, message: str, *, stage: str, rule: str | None = None, traceback_tail: str = ""):
        super().__init__(message)
        self.stage = stage
        self.rule = rule
        self.traceback_tail = traceback_tail


class PolicyViolation(MechanismError):
    """Generated source broke the AST policy; ``rule`` names the rule."""

    def __init__(self, message: str, *, rule: str):
        super().__init__(message, stage="policy", rule=rule)


class HookTimeout(BaseException):
    """A mechanism hook ran past its deadline.

    A ``BaseException`` on purpose: a hook that wraps its loop in ``except Exception`` cannot
    swallow its own deadline."""
