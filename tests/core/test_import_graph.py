"""The import graph runs domains → core only: no domain imports another, and core imports no domain.

Read from the source with :mod:`ast` (imports inside functions count too), so a lazy import cannot
hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def domain_names() -> list[str]:
    return sorted(p.name for p in (REPO / "domains").iterdir() if (p / "__init__.py").is_file())


def test_there_are_three_domains():
    assert {"train_opt", "article_opt", "script_opt"} <= set(domain_names())


def test_no_domain_imports_another_domain():
    crossings = []
    for domain in domain_names():
        for path in sorted((REPO / "domains" / domain).rglob("*.py")):
            for module in imported_modules(path):
                parts = module.split(".")
                if parts[0] == "domains" and len(parts) > 1 and parts[1] != domain:
                    crossings.append(f"{path.relative_to(REPO)} imports {module}")
    assert crossings == []


def test_core_imports_no_domain():
    found = [f"{path.relative_to(REPO)} imports {module}" for path in sorted((REPO / "core").rglob("*.py"))
             for module in imported_modules(path) if module.split(".")[0] == "domains"]
    assert found == []


def test_the_graph_reader_sees_a_crossing(tmp_path: Path):
    module = tmp_path / "m.py"
    module.write_text("def lazy():\n    from domains.train_opt.target import discover\n    import domains.article_opt\n")
    assert imported_modules(module) == {"domains.train_opt.target", "domains.article_opt"}
