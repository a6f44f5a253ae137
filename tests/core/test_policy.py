"""The AST policy for generated mechanisms: what it lets through and what it rejects, and how."""

from __future__ import annotations

import re
import textwrap

import pytest

from core.errors import MechanismError, PolicyViolation
from core.policy import DEFAULT_ALLOWED, check_policy

HEADER = "from core.mechanism import Mechanism\n"


def mechanism(body: str = "pass", prelude: str = "") -> str:
    """A valid one-class mechanism with ``prelude`` before it and ``body`` as its class body."""
    return (
        textwrap.dedent(prelude)
        + HEADER
        + "\n\nclass M(Mechanism):\n"
        + textwrap.indent(textwrap.dedent(body).strip() or "pass", "    ")
        + "\n"
    )


def hook(code: str) -> str:
    """A mechanism whose ``guidance`` hook runs ``code``."""
    return mechanism("def guidance(self, ctx):\n" + textwrap.indent(textwrap.dedent(code).strip(), "    "))


MESSAGE = re.compile(r"^policy: (?P<rule>.+) at line (?P<line>\d+): \S.*$")

# (case id, expected rule, source)
BAD_SOURCES: list[tuple[str, str, str]] = [
    ("import-os", "import-not-allowed: os", mechanism(prelude="import os\n")),
    ("import-subprocess", "import-not-allowed: subprocess", mechanism(prelude="import subprocess\n")),
    ("import-socket", "import-not-allowed: socket", mechanism(prelude="from socket import socket\n")),
    ("import-importlib", "import-not-allowed: importlib", mechanism(prelude="import importlib\n")),
    ("import-ctypes", "import-not-allowed: ctypes", mechanism(prelude="import ctypes\n")),
    ("import-pickle", "import-not-allowed: pickle", mechanism(prelude="import pickle as pk\n")),
    ("import-numpy", "import-not-allowed: numpy", mechanism(prelude="import numpy as np\n")),
    ("import-builtins", "import-not-allowed: builtins", mechanism(prelude="import builtins\n")),
    ("import-project-module", "import-not-allowed: core.llm_client",
     mechanism(prelude="from core import llm_client\n")),
    ("import-inside-hook", "import-not-allowed: shutil", hook("import shutil\nreturn None")),
    ("relative-import", "relative-import", mechanism(prelude="from . import sibling\n")),
    ("star-import", "star-import", mechanism(prelude="from math import *\n")),
    ("eval", "forbidden-builtin: eval", hook("return eval('1')")),
    ("exec", "forbidden-builtin: exec", hook("exec('x = 1')")),
    ("open", "forbidden-builtin: open", hook("open('/tmp/x', 'w').write('x')")),
    ("dunder-import", "forbidden-builtin: __import__", hook("__import__('math')")),
    ("eval-alias", "forbidden-builtin: eval", hook("f = eval\nreturn f('1')")),
    ("compile", "forbidden-builtin: compile", hook("compile('1', 'x', 'eval')")),
    ("globals", "forbidden-builtin: globals", hook("return globals()")),
    ("getattr-dunder-literal", "dunder-attribute: __globals__",
     hook("return getattr(self.guidance, '__globals__')")),
    ("getattr-non-literal", "dynamic-attribute: getattr", hook("name = 'x'\nreturn getattr(self, name)")),
    ("getattr-alias", "dynamic-attribute: getattr", hook("g = getattr\nreturn g(self, 'x')")),
    ("subclasses-walk", "dunder-attribute: __class__",
     hook("return ().__class__.__bases__[0].__subclasses__()")),
    ("dunder-dict", "dunder-attribute: __dict__", hook("return self.__dict__")),
    ("match-class-dunder", "dunder-attribute: __class__",
     hook("match ctx:\n    case object(__class__=c):\n        return c")),
    ("generator-frame", "introspection-attribute: gi_frame", hook("g = (i for i in ())\nreturn g.gi_frame")),
    ("builtins-name", "dunder-name: __builtins__", hook("return __builtins__")),
    ("os-environ", "forbidden-name: os", hook("return os.environ")),
    ("bare-environ", "forbidden-name: environ", hook("return environ['HOME']")),
    ("dotenv-string", "secret-string", hook("path = '.env'")),
    ("api-key-string", "secret-string", hook("key = 'OPENAI_API_KEY'")),
    ("typing-sys", "module-attribute-not-allowed: typing.sys",
     mechanism(prelude="import typing\nSYS = typing.sys\n")),
    ("random-private-os", "module-attribute-not-allowed: random._os",
     mechanism(prelude="import random\nOS = random._os\n")),
    ("from-dataclasses-import-inspect", "module-attribute-not-allowed: dataclasses.inspect",
     mechanism(prelude="from dataclasses import inspect\n")),
    ("attrgetter-gadget", "module-attribute-not-allowed: operator.attrgetter",
     mechanism(prelude="from operator import attrgetter\n")),
    ("get-type-hints-gadget", "module-attribute-not-allowed: typing.get_type_hints",
     mechanism(prelude="import typing\nHINTS = typing.get_type_hints\n")),
    ("module-as-value", "module-as-value: random", mechanism(prelude="import random\nR = random\n")),
    ("format-on-variable", "dynamic-format", hook("template = '{0}'\nreturn template.format(1)")),
    ("format-field-access", "format-field-access", hook("return '{0.gi_frame}'.format(self)")),
    ("two-mechanisms", "contract: exactly one Mechanism subclass",
     mechanism() + "\n\nclass N(Mechanism):\n    pass\n"),
    ("no-mechanism", "contract: exactly one Mechanism subclass",
     "import math\n\n\nclass NotAMechanism:\n    pass\n"),
]


@pytest.mark.parametrize(("rule", "source"), [c[1:] for c in BAD_SOURCES], ids=[c[0] for c in BAD_SOURCES])
def test_policy_rejects_bad_source_with_one_line_message_naming_the_rule(rule: str, source: str) -> None:
    with pytest.raises(PolicyViolation) as info:
        check_policy(source)
    err = info.value
    assert err.stage == "policy"
    assert err.rule == rule
    message = str(err)
    assert "\n" not in message
    match = MESSAGE.match(message)
    assert match, message
    assert match["rule"] == rule
    assert int(match["line"]) >= 1


def test_violation_message_names_the_offending_line() -> None:
    source = hook("x = 1\ny = 2\nreturn eval('x')")
    line = source.splitlines().index("        return eval('x')") + 1
    with pytest.raises(PolicyViolation) as info:
        check_policy(source)
    assert str(info.value).startswith(f"policy: forbidden-builtin: eval at line {line}: ")


def test_policy_accepts_an_idiomatic_mechanism() -> None:
    source = textwrap.dedent(
        '''
        """A tabu-style mechanism using the allowed helpers."""
        from __future__ import annotations

        import collections.abc
        import json
        import math
        import random
        import time
        from collections import Counter, deque
        from dataclasses import dataclass, field
        from typing import Any

        from core import records
        from core.mechanism import Mechanism
        from core.records import FilterVerdict, Proposal, ProposalContext


        @dataclass
        class _Memory:
            seen: deque = field(default_factory=lambda: deque(maxlen=8))


        class _Base(Mechanism):
            """Private helpers may subclass Mechanism too."""


        class Tabu(_Base):
            name = "tabu"
            __slots__ = ()

            def __init__(self, **params: Any) -> None:
                super().__init__(**params)
                self._memory = _Memory()
                self._rng = random.Random(int(params.get("seed", 0)))
                self._started = time.monotonic()

            def filter(self, proposal: Proposal, ctx: ProposalContext) -> FilterVerdict | None:
                key = proposal.key()
                if key in self._memory.seen:
                    return FilterVerdict.reject(f"{key} was tried {Counter(self._memory.seen)[key]} times")
                label = "{} at {:.2f}".format(type(self).__name__, math.log(2))
                assert isinstance(ctx.search, collections.abc.Mapping), label
                return records.FilterVerdict.accept()

            def observe(self, record) -> None:
                self._memory.seen.append(json.dumps(record.proposal.key() if record.proposal else ""))
                value = getattr(record, "score", None)
                if hasattr(self, "_last"):
                    self._last = value


        if __name__ == "__main__":
            print(Tabu.name)
        '''
    )
    tree = check_policy(source)
    assert tree.body  # the parsed module comes back for later stages


def test_gp_regressor_import_is_rejected_at_policy_naming_sklearn() -> None:
    source = mechanism(prelude="from sklearn.gaussian_process import GaussianProcessRegressor\n")
    with pytest.raises(PolicyViolation) as info:
        check_policy(source)
    assert info.value.rule == "import-not-allowed: sklearn.gaussian_process"
    assert "sklearn is not guaranteed to be installed" in str(info.value)
    assert "\n" not in str(info.value)


def test_syntax_error_fails_at_parse_stage_with_its_line() -> None:
    source = mechanism("def guidance(self, ctx):\n    return (1,\n")
    with pytest.raises(MechanismError) as info:
        check_policy(source)
    err = info.value
    assert not isinstance(err, PolicyViolation)
    assert err.stage == "parse"
    assert re.search(r"at line \d+", str(err))
    assert "SyntaxError" in err.traceback_tail


def test_compile_time_error_fails_at_parse_stage() -> None:
    with pytest.raises(MechanismError) as info:
        check_policy(mechanism(prelude="return 1\n"))
    assert info.value.stage == "parse"
    assert "at line 1" in str(info.value)


def test_custom_allow_list_lets_a_named_module_through() -> None:
    source = mechanism(prelude="import numpy as np\n")
    check_policy(source, allowed_imports=DEFAULT_ALLOWED | {"numpy"})


def test_oversized_source_is_rejected() -> None:
    with pytest.raises(PolicyViolation) as info:
        check_policy(mechanism() + "#" * 300_000)
    assert info.value.rule == "source-too-large"
