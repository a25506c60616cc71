"""The house's rules, checked on the code: which package may import which.

Data flows one way (config -> data -> method on the base -> training -> evaluation -> MLflow);
plugins (`methods`, `metrics`) stand on `core` alone (`tasks` on `core` and `metrics`), so a
plugin can be used and tested without the harness; the report reads runs, never the methods or
tasks that made them. (The CLI, the entry point, imports the report for its compare command.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.errors import UsageError
from core.registry import Registry
from tests.conftest import REPO

PACKAGES = ("core", "benchmark", "methods", "metrics", "tasks", "reports")
FORBIDDEN = {
    "core": {"benchmark", "methods", "metrics", "tasks", "reports"},
    "methods": {"benchmark", "metrics", "tasks", "reports"},
    "metrics": {"benchmark", "methods", "tasks", "reports"},
    # A task is data over examples and metrics: it may use core and metrics, never the harness.
    "tasks": {"benchmark", "methods", "reports"},
    "reports": {"methods", "tasks"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of everything a module imports, at any depth of its code."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def crossings() -> list[str]:
    out = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((REPO / package).rglob("*.py")):
            for name in sorted(imported_packages(path) & forbidden):
                out.append(f"{path.relative_to(REPO)} imports {name}")
    return out


def test_no_module_imports_across_a_forbidden_boundary():
    assert crossings() == []


def test_the_rule_check_sees_a_crossing(tmp_path: Path):
    module = tmp_path / "plugin.py"
    module.write_text("def f():\n    from benchmark.config import UsageError\n    import reports\n")
    assert imported_packages(module) >= {"benchmark", "reports"}


def test_registry_suggests_the_nearest_name_and_lists_the_rest():
    import methods
    import metrics

    with pytest.raises(UsageError, match=r"unknown method 'lorra'\. Registered methods: .*lora"):
        methods.method_class("lorra")
    with pytest.raises(UsageError, match="did you mean 'lora'"):
        methods.method_class("lorra")
    with pytest.raises(UsageError, match="did you mean 'bleu'"):
        metrics.get_metric("bleuu")
    with pytest.raises(UsageError) as far:
        metrics.get_metric("zzzz")
    assert "did you mean" not in str(far.value)


def test_registry_refuses_a_second_entry_of_one_name():
    registry: Registry[type] = Registry("widget", "core", lambda cls: cls.__name__)

    class A:
        pass

    registry.register(A)
    registry.register(A)  # the same entry again is harmless (re-import)

    class B:
        pass

    B.__name__ = "A"
    with pytest.raises(ValueError, match="widget name 'A' is registered twice"):
        registry.register(B)


def imported_modules(path: Path) -> set[str]:
    """Full dotted names of everything a module imports (`reports.compare`, ...)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_the_report_flows_one_way_records_then_summaries_then_the_report():
    # records -> summary -> plots / render -> compare: no module reaches back up that chain.
    later = {
        "records": {"reports.summary", "reports.plots", "reports.render", "reports.compare"},
        "summary": {"reports.plots", "reports.render", "reports.compare"},
        "plots": {"reports.compare", "reports.render"},
        "render": {"reports.compare", "reports.plots"},
        "retention": {"reports.plots", "reports.render", "reports.compare"},
    }
    for name, forbidden in later.items():
        found = imported_modules(REPO / "reports" / f"{name}.py") & forbidden
        assert not found, f"reports/{name}.py imports {sorted(found)}"
