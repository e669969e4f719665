"""The code's shape: no import circles between modules (function-level imports included), `analysis` never
imports `tuner.run`, and the `tuner` console script runs the module CLIs."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import REPO

PACKAGES = ("tuner", "analysis")


def module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its body (not under `if TYPE_CHECKING:`)."""
    modules = {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        targets = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node, stack):
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target, stack + [target])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def test_no_import_circles():
    graph = project_imports()
    assert "tuner.experiment" in graph and "analysis.report" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_finds_a_planted_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_tuner_package_does_not_import_analysis_and_analysis_not_the_run():
    graph = project_imports()
    assert not {m for m, targets in graph.items() if m.startswith("tuner") and
                any(t.startswith("analysis") for t in targets) and m != "tuner.cli"}
    assert not {m for m, targets in graph.items() if m.startswith("analysis") and "tuner.run" in targets}


def test_console_script_runs_the_module_clis():
    from tuner.cli import main

    assert main(["run", str(REPO / "search_spaces" / "dpo.yaml"), "--dry-run"]) == 0
    assert main(["frobnicate"]) == 2
    done = subprocess.run([sys.executable, "-m", "tuner.cli", "export", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--merge" in done.stdout
    done = subprocess.run([sys.executable, "-m", "tuner.cli", "resume", str(REPO / "no-such-folder")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--resume" in done.stderr and "Traceback" not in done.stderr
