"""AST policy for generated mechanism source (stage 3 of :mod:`core.loader`): a lint, not a boundary.

The policy gives a designer (an LLM) a fast, readable, line-numbered message about code that will
not work or is not wanted, before a worker is started. It is **not** the security boundary: generated
code runs in its own worker process inside the OS sandbox of :mod:`core.sandbox` (no secrets in its
environment, no network, no new processes, the project and run directory out of reach, resource
limits, deadlines enforced by killing it), and everything it returns is rebuilt as validated data by
:mod:`core.host`. A source that slips past this lint meets the sandbox, not the controller.
It rejects what a mechanism never needs and what the usual Python escapes start from:

- imports outside a small allow-list (stdlib helpers plus ``core.mechanism``/``core.records``),
  relative and star imports, private names and non-allowed modules reached through an allowed
  one (``typing.sys``, ``random._os``, ``from dataclasses import inspect``);
- ``eval``/``exec``/``compile``/``__import__``/``open``/... called *or referenced* (``f = eval``
  is as bad as ``eval(...)``); ``getattr``/``setattr``/``delattr`` with anything but a literal,
  non-dunder attribute name;
- dunder attributes (``x.__class__``, ``f.__globals__``), frame/code introspection attributes
  (``gen.gi_frame.f_globals``), dunder names (``__builtins__``), the names ``os``/``environ``;
- attribute lookups hidden in format strings (``"{0.x}".format(o)``, ``.format`` on a non-literal
  or taken as a value) and known eval gadgets (``typing.get_type_hints``, ``operator.attrgetter``,
  ``functools.singledispatch``, ``dataclasses.make_dataclass``...);
- string constants that name secrets (``.env``, ``API_KEY``); string annotations are checked as code;
- what runs outside a hook's deadline or stops the run: dunder methods but ``__init__``
  (``__del__``, ``__getattribute__``), ``BaseException``-family names, bare ``except:``;
- class tricks: metaclasses, ``type`` used to build or fetch classes, bases other than the contract
  base, the source's own classes and builtin/allowed-stdlib classes (a pydantic model as a base
  evaluates string annotations), re-exported names (``core.records.BaseModel``), ``model_config``;
- assigning to attributes of imported modules and classes (``json.dumps = ...`` would change how
  the controller writes its journal).

Known gaps (why this is a lint): mutating an imported object through a method call or an alias
(``table = copy.dispatch_table; table[k] = v``), attribute access reached through standard-library
helpers that take names as strings, and code that terminates only sometimes. All of these now run
in the worker, where they can harm nothing but the worker. Every message is one line:
``policy: <rule> at line N: <what to do>``.
"""

from __future__ import annotations

import abc
import ast
import builtins
import importlib
import re
import string
import sys
import traceback
import types
from collections.abc import Iterable

from core.errors import MechanismError, PolicyViolation

STDLIB_ALLOWED: frozenset[str] = frozenset({
    "__future__", "math", "random", "statistics", "collections", "itertools", "functools", "heapq", "bisect",
    "dataclasses", "typing", "enum", "re", "json", "copy", "operator", "string", "textwrap", "time",
})
PROJECT_ALLOWED: frozenset[str] = frozenset({"core.mechanism", "core.records"})
DEFAULT_ALLOWED: frozenset[str] = STDLIB_ALLOWED | PROJECT_ALLOWED

MAX_SOURCE_CHARS = 200_000

FORBIDDEN_BUILTINS: frozenset[str] = frozenset({
    "eval", "exec", "compile", "__import__", "open", "input", "breakpoint", "globals", "locals", "vars", "exit",
    "quit", "help",
})
ATTRIBUTE_BUILTINS: frozenset[str] = frozenset({"getattr", "setattr", "delattr"})
FORBIDDEN_NAMES: frozenset[str] = frozenset({"os", "environ"})
ALLOWED_DUNDER_NAMES: frozenset[str] = frozenset({"__name__", "__doc__", "__all__", "__slots__", "__qualname__",
                                                  "__module__"})
ALLOWED_DUNDER_ATTRS: frozenset[str] = frozenset({"__init__", "__post_init__", "__name__", "__qualname__", "__doc__"})
INTROSPECTION_ATTRS: frozenset[str] = frozenset({
    "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "f_globals", "f_locals", "f_builtins",
    "f_back", "f_code", "tb_frame", "tb_next", "co_code", "co_consts", "func_globals",
    "mro", "model_config", "model_rebuild", "model_construct",  # class internals (model_config unfreezes records)
})
ALLOWED_DUNDER_DEFS: frozenset[str] = frozenset({"__init__", "__post_init__"})
# Raising these from a hook stops the whole run; catching them swallows the hook deadline.
STOP_EXCEPTIONS: frozenset[str] = frozenset({"BaseException", "SystemExit", "KeyboardInterrupt", "GeneratorExit"})
FORMAT_METHODS: frozenset[str] = frozenset({"format", "format_map"})
# Where ``type(x)`` may appear: reading a name, comparing, printing. Anything else builds classes.
_TYPE_USES = (ast.Attribute, ast.Compare, ast.FormattedValue)
# Allowed modules whose attributes turn a string into an attribute lookup or an eval.
GADGETS: frozenset[str] = frozenset({
    "typing.get_type_hints", "typing.ForwardRef", "operator.attrgetter", "operator.methodcaller", "string.Formatter",
    "functools.singledispatch", "functools.singledispatchmethod", "dataclasses.make_dataclass",
})
SECRET_MARKERS: tuple[str, ...] = (".env", "api_key")
MECHANISM_PATH = "core.mechanism.Mechanism"

_DUNDER = re.compile(r"^__\w+__$")


def is_dunder(name: str) -> bool:
    return bool(_DUNDER.match(name))


def is_allowed(module: str, allowed: Iterable[str]) -> bool:
    """``module`` is allowed when it or one of its parent packages is on the allow-list."""
    return any(module == a or module.startswith(a + ".") for a in allowed)


def check_policy(source: str, *, allowed_imports: frozenset[str] = DEFAULT_ALLOWED,
                 base: str = MECHANISM_PATH, project_modules: frozenset[str] = PROJECT_ALLOWED) -> ast.Module:
    """Parse ``source`` and enforce the policy; return the tree.

    ``base`` is the dotted path of the class the source must subclass exactly once (a domain's own
    contract, e.g. a pipeline stage, instead of the mechanism protocol); ``project_modules`` are the
    trusted project modules the policy may import to resolve names reached through them.

    Raises :class:`MechanismError` with stage ``"parse"`` for a syntax error and
    :class:`PolicyViolation` (stage ``"policy"``) for the first rule broken, in source order.
    """
    if len(source) > MAX_SOURCE_CHARS:
        _violate("source-too-large", 1, f"keep the mechanism under {MAX_SOURCE_CHARS} characters")
    tree = parse_source(source)
    _PolicyVisitor(tree, allowed_imports, project_modules, base).check()
    _check_single_mechanism(tree, base)
    return tree


def parse_source(source: str, filename: str = "<mechanism>") -> ast.Module:
    """``ast.parse`` plus a bytecode compile (which catches e.g. ``return`` outside a function)."""
    try:
        tree = ast.parse(source, filename=filename)
        compile(tree, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        line = exc.lineno or 0
        detail = exc.msg or "invalid syntax"
        tail = "".join(traceback.format_exception_only(type(exc), exc))
        raise MechanismError(
            f"parse: SyntaxError at line {line}: {detail}; fix the syntax",
            stage="parse", rule="syntax-error", traceback_tail=tail[-2000:],
        ) from exc
    except (ValueError, RecursionError, MemoryError) as exc:
        raise MechanismError(
            f"parse: {type(exc).__name__} at line 0: {exc}; simplify the source",
            stage="parse", rule="syntax-error",
        ) from exc
    return tree


def _violate(rule: str, line: int, advice: str) -> None:
    raise PolicyViolation(f"policy: {rule} at line {line}: {advice}", rule=rule)


class _PolicyVisitor(ast.NodeVisitor):
    def __init__(self, tree: ast.Module, allowed: frozenset[str], project: frozenset[str] = PROJECT_ALLOWED,
                 base: str = MECHANISM_PATH):
        self.tree = tree
        self.allowed = allowed
        self.project = project
        self.base = base
        self.module_aliases: dict[str, str] = {}  # local name -> dotted module it is bound to
        self.imported: dict[str, str] = {}  # every name an import binds -> what it denotes (dotted)
        self.classes: set[str] = set()  # classes defined so far in this source
        self.parents: dict[ast.AST, ast.AST] = {}
        self.called: set[ast.AST] = set()  # Name nodes in a call's function position

    def check(self) -> None:
        self._link(self.tree)
        # Bind every import first so a module used before its (function-level) import is known.
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self._check_import(node)
        annotations = [n for n in ast.walk(self.tree) if isinstance(n, ast.expr) and _is_annotation(n, self.parents)]
        self.visit(self.tree)
        for annotation in annotations:  # pydantic and typing evaluate string annotations: check them as code
            for const in ast.walk(annotation):
                if isinstance(const, ast.Constant) and isinstance(const.value, str):
                    self._check_string_annotation(const)

    def _link(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
            if isinstance(node, ast.Call):
                self.called.add(node.func)

    def _check_string_annotation(self, const: ast.Constant) -> None:
        try:
            parsed = ast.parse(const.value.strip(), mode="eval")
        except SyntaxError:
            _violate("string-annotation", const.lineno, "write annotations as code, not as unparsable strings")
        for node in ast.walk(parsed):
            if hasattr(node, "lineno"):
                node.lineno = const.lineno
        self._link(parsed)
        self.visit(parsed.body)

    # -- imports ----------------------------------------------------------------------------------
    def _check_import(self, node: ast.Import | ast.ImportFrom) -> None:
        line = node.lineno
        if isinstance(node, ast.Import):
            for alias in node.names:
                self._require_allowed(alias.name, line)
                if alias.asname:
                    self.module_aliases[alias.asname] = self.imported[alias.asname] = alias.name
                else:
                    head = alias.name.split(".")[0]
                    self.module_aliases[head] = self.imported[head] = head
            return
        if node.level:
            _violate("relative-import", line, "import absolutely, e.g. `from core.records import Proposal`")
        module = node.module or ""
        for alias in node.names:
            if alias.name == "*":
                _violate("star-import", line, f"import the names you use from {module} explicitly")
            full = f"{module}.{alias.name}"
            self.imported[alias.asname or alias.name] = full
            if not is_allowed(module, self.allowed):
                # `from core import records` names the module in the alias, not in `module`.
                parent_of_allowed = any(a.startswith(module + ".") for a in self.allowed)
                self._require_allowed(full if parent_of_allowed else module, line)
                self.module_aliases[alias.asname or alias.name] = full
                continue
            if module == "__future__":
                continue
            value = self._resolve_step(module, alias.name, line)
            if isinstance(value, types.ModuleType):
                self.module_aliases[alias.asname or alias.name] = value.__name__

    def _require_allowed(self, module: str, line: int) -> None:
        if is_allowed(module, self.allowed):
            return
        top = module.split(".")[0]
        hint = ""
        if top in {"numpy", "scipy", "sklearn", "pandas", "torch"}:
            hint = f" ({top} is not guaranteed to be installed)"
        _violate(f"import-not-allowed: {module}", line,
                 f"use only {', '.join(sorted(self.allowed))}{hint}; implement what you need in pure Python")

    def _module(self, dotted: str) -> types.ModuleType | None:
        """The real module for an allowed stdlib/project name (trusted, safe to import here)."""
        if dotted in sys.modules:
            return sys.modules[dotted]
        top = dotted.split(".")[0]
        if top not in sys.stdlib_module_names and not is_allowed(dotted, self.project):
            return None  # a custom allow-list entry: never execute untrusted packages here
        try:
            return importlib.import_module(dotted)
        except ImportError:
            return None

    def _resolve_step(self, module: str, attr: str, line: int) -> object | None:
        """Check ``module.attr`` and return its value when known."""
        dotted = f"{module}.{attr}"
        if attr.startswith("_") or dotted in GADGETS:
            _violate(f"module-attribute-not-allowed: {dotted}", line,
                     "use only the public, non-reflective API of allowed modules")
        mod = self._module(module)
        if mod is None:
            return None
        value = getattr(mod, attr, None)
        if isinstance(value, types.ModuleType) and not is_allowed(value.__name__, self.allowed):
            _violate(f"module-attribute-not-allowed: {dotted}", line,
                     f"{dotted} is the module {value.__name__}, which is not on the allow-list")
        home = getattr(value, "__module__", None)
        if (is_allowed(module, self.project) and not isinstance(value, types.ModuleType)
                and isinstance(home, str) and home != module):
            _violate(  # e.g. core.records.BaseModel: pydantic re-exported, not the project's API
                f"module-attribute-not-allowed: {dotted}",
                line,
                f"{dotted} is {home}.{attr} re-exported; use only what {module} itself defines",
            )
        return value

    # -- names and attributes ---------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        name, line = node.id, node.lineno
        if name in FORBIDDEN_BUILTINS:
            _violate(f"forbidden-builtin: {name}", line, f"remove `{name}` (not even as a reference)")
        if name in ATTRIBUTE_BUILTINS and node not in self.called:
            _violate(f"dynamic-attribute: {name}", line, f"call `{name}` directly with a literal attribute name")
        if name in FORBIDDEN_NAMES:
            _violate(f"forbidden-name: {name}", line, "mechanisms may not touch the OS or its environment")
        if name in STOP_EXCEPTIONS:
            _violate(f"base-exception: {name}", line, "raise and catch Exception subclasses only; these stop the run")
        if name == "type" and isinstance(node.ctx, ast.Load):
            self._check_type_use(node)
        if is_dunder(name) and name not in ALLOWED_DUNDER_NAMES:
            _violate(f"dunder-name: {name}", line, "do not reference interpreter internals")
        if name in self.module_aliases and isinstance(node.ctx, ast.Load):
            parent = self.parents.get(node)
            if not (isinstance(parent, ast.Attribute) and parent.value is node):
                _violate(f"module-as-value: {name}", line,
                         f"use `{name}.<attribute>` directly; do not pass modules around")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.generic_visit(node)  # inner links first: `x.__class__.__bases__` reports __class__
        attr, line = node.attr, node.lineno
        if is_dunder(attr) and attr not in ALLOWED_DUNDER_ATTRS:
            _violate(f"dunder-attribute: {attr}", line,
                     "do not use dunder attributes (use type(x) / isinstance instead of x.__class__)")
        if attr in INTROSPECTION_ATTRS:
            _violate(f"introspection-attribute: {attr}", line, "do not inspect frames, code objects or class internals")
        if attr in FORMAT_METHODS and node not in self.called:
            _violate("dynamic-format", line, "call .format directly on a literal string; never take it as a value")
        if not isinstance(node.ctx, ast.Load):
            self._check_foreign_store(node, line)
        module = self._module_of(node.value)
        if module is not None:
            self._resolve_step(module, attr, line)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if not isinstance(node.ctx, ast.Load):
            self._check_foreign_store(node, node.lineno)
        self.generic_visit(node)

    def _check_foreign_store(self, node: ast.expr, line: int) -> None:
        """``json.dumps = f`` or ``Proposal.key = f`` would change the controller's own code."""
        root = node
        while isinstance(root, (ast.Attribute, ast.Subscript)):
            root = root.value
        if isinstance(root, ast.Name) and root.id in self.imported:
            _violate(f"foreign-attribute-assignment: {root.id}", line,
                     "do not modify imported modules or classes; keep state on self")

    def _check_type_use(self, node: ast.Name) -> None:
        call = self.parents.get(node)
        if not (isinstance(call, ast.Call) and call.func is node):
            _violate("type-as-value", node.lineno, "use type(x) only to compare or to read type(x).__name__")
        if len(call.args) != 1 or call.keywords:
            _violate("dynamic-class", node.lineno, "do not build classes at run time; define them with `class`")
        user = self.parents.get(call)
        if isinstance(user, ast.Call) and user.func is call:
            _violate("type-as-value", node.lineno, "do not call type(x); construct the class you mean by name")
        if not isinstance(user, _TYPE_USES) and not (
                isinstance(user, ast.Call) and isinstance(user.func, ast.Name)
                and user.func.id in ("isinstance", "issubclass", "str", "repr", "print")):
            _violate("type-as-value", node.lineno, "use type(x) only to compare or to read type(x).__name__")

    # -- definitions ------------------------------------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if is_dunder(node.name) and node.name not in ALLOWED_DUNDER_DEFS:
            _violate(f"dunder-method: {node.name}", node.lineno,
                     "define only __init__ and the hooks; special methods run outside the hook deadline")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is None:
            _violate("bare-except", node.lineno, "catch Exception, not everything (a bare except swallows the deadline)")
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for keyword in node.keywords:
            if keyword.arg == "metaclass":
                _violate("metaclass", node.lineno, "do not use metaclasses")
        for base in node.bases:
            self._check_base(base, node.lineno)
        self.generic_visit(node)
        self.classes.add(node.name)

    def _check_base(self, base: ast.expr, line: int) -> None:
        """Bases: the contract base, a class defined above, ``object``, an exception or other builtin
        class, or a class of an allowed standard-library module. A pydantic model (or a class taken
        from a variable) as a base would evaluate string annotations at class creation."""
        dotted = _dotted(base)
        if dotted is None:
            _violate("base-not-allowed", line, "subclass a class by its name, not an expression")
        head, _, rest = dotted.partition(".")
        if not rest and (head in self.classes or head == "object"):
            return
        if head not in self.imported:
            builtin = getattr(builtins, dotted, None) if not rest else None
            if isinstance(builtin, type) and builtin is not type and head not in self.classes:
                return
            _violate(f"base-not-allowed: {dotted}", line, "subclass only the contract base or your own classes")
        resolved = self.imported[head] + (f".{rest}" if rest else "")
        if resolved == self.base:
            return
        module_path, _, attr = resolved.rpartition(".")
        top = module_path.split(".")[0]
        if top in sys.stdlib_module_names and is_allowed(module_path, self.allowed):
            return
        mod = self._module(module_path) if is_allowed(module_path, self.project) else None
        value = getattr(mod, attr, None) if mod is not None else None
        if not (isinstance(value, type) and type(value) in (type, abc.ABCMeta)):
            _violate(f"base-not-allowed: {resolved}", line,
                     f"subclass {self.base} or your own classes (a pydantic model as a base evaluates strings)")

    def _module_of(self, node: ast.expr) -> str | None:
        """The dotted module an expression denotes (``json``, ``json.decoder``), if any."""
        if isinstance(node, ast.Name):
            return self.module_aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self._module_of(node.value)
            if base is None:
                return None
            mod = self._module(base)
            value = getattr(mod, node.attr, None) if mod is not None else None
            if isinstance(value, types.ModuleType):
                return value.__name__
        return None

    def visit_Call(self, node: ast.Call) -> None:
        func, line = node.func, node.lineno
        if isinstance(func, ast.Name) and func.id in ATTRIBUTE_BUILTINS:
            attr = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str)):
                _violate(f"dynamic-attribute: {func.id}", line,
                         "use a literal attribute name (or plain attribute syntax)")
            elif is_dunder(attr.value):
                _violate(f"dunder-attribute: {attr.value}", line, "do not reach dunder attributes")
            else:
                self._check_literal_attribute(func.id, node.args[0], attr.value, line)
        if isinstance(func, ast.Attribute) and func.attr in ("format", "format_map"):
            receiver = func.value
            if not (isinstance(receiver, ast.Constant) and isinstance(receiver.value, str)):
                _violate("dynamic-format", line, "use an f-string or a literal format string")
            elif _format_has_field_access(receiver.value):
                _violate("format-field-access", line, "compute values first; use only plain {name} fields")
        self.generic_visit(node)

    def _check_literal_attribute(self, builtin: str, target: ast.expr, attr: str, line: int) -> None:
        """``getattr(x, "name")`` must pass the checks ``x.name`` would."""
        if attr in INTROSPECTION_ATTRS:
            _violate(f"introspection-attribute: {attr}", line, "do not inspect frames, code objects or class internals")
        if attr in FORMAT_METHODS:
            _violate("dynamic-format", line, "call .format directly on a literal string; never take it as a value")
        if builtin != "getattr":
            self._check_foreign_store(target, line)
        module = self._module_of(target)
        if module is not None:
            self._resolve_step(module, attr, line)

    def visit_MatchClass(self, node: ast.MatchClass) -> None:
        for attr in node.kwd_attrs:
            if (is_dunder(attr) and attr not in ALLOWED_DUNDER_ATTRS) or attr in INTROSPECTION_ATTRS:
                _violate(f"dunder-attribute: {attr}", node.lineno, "do not match on interpreter internals")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            lowered = node.value.lower()
            for marker in SECRET_MARKERS:
                if marker in lowered:
                    _violate("secret-string", node.lineno,
                             f"mechanisms must not read secrets (found {marker!r} in a string)")


def _is_annotation(node: ast.expr, parents: dict[ast.AST, ast.AST]) -> bool:
    parent = parents.get(node)
    return (isinstance(parent, ast.AnnAssign) and parent.annotation is node
            or isinstance(parent, ast.arg) and parent.annotation is node
            or isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)) and parent.returns is node)


def _format_has_field_access(template: str) -> bool:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    except ValueError:
        return False  # a malformed template fails at run time, harmlessly
    return any("." in f or "[" in f for f in fields)


def _check_single_mechanism(tree: ast.Module, base_path: str = MECHANISM_PATH) -> None:
    """Exactly one public top-level class must subclass ``base_path`` (``core.mechanism.Mechanism`` by
    default; directly or through a class of this module). The child process checks the same thing
    for real."""
    label = base_path.rsplit(".", 1)[-1]
    aliases: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    mechanism_classes: set[str] = set()
    public: list[ast.ClassDef] = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for base in node.bases:
            dotted = _dotted(base)
            if dotted is None:
                continue
            head, _, rest = dotted.partition(".")
            resolved = aliases.get(head, head) + (f".{rest}" if rest else "")
            if resolved == base_path or dotted in mechanism_classes:
                mechanism_classes.add(node.name)
                if not node.name.startswith("_"):
                    public.append(node)
                break
    if len(public) != 1:
        names = ", ".join(c.name for c in public) or "none"
        line = public[1].lineno if len(public) > 1 else 1
        _violate(
            f"contract: exactly one {label} subclass",
            line,
            f"found {len(public)} ({names}); define exactly one public top-level class that "
            f"subclasses {base_path}",
        )


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None
