"""The code's shape (docs/layout.md): no import circle between modules, counting function-level imports and the
package `__init__`s an import runs; no class defined inside a function; no product module (tuner/, analysis/) over
400 lines; `analysis` never imports `tuner.run`; the commands' start never imports the heavy libraries; and the
`tuner` console script runs the module CLIs. Each check is shown catching a planted violation."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("tuner", "analysis")
MAX_LINES = 400


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_of(root: Path = REPO, packages=PACKAGES) -> dict[str, Path]:
    return {module_name(p, root): p for package in packages for p in sorted((root / package).rglob("*.py"))}


def ancestors(name: str) -> list[str]:
    """`a.b.c` -> [`a`, `a.b`]: the packages whose `__init__` runs before the module does."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def project_imports(root: Path = REPO, packages=PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules importing it runs, from imports anywhere in its body (top level or inside a
    function; not under `if TYPE_CHECKING:`).

    `import a.b.c` and `from a.b.c import x` run `a/__init__`, `a/b/__init__` and `a/b/c`, so each is an edge;
    `from a.b import c` also runs `a.b.c` when `c` is a module. The module's own packages are left out: Python runs
    them before the module itself (a package's `__init__` importing its own submodules is no circle)."""
    modules = modules_of(root, packages)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package (a package's own name for its __init__)
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    here = here[:len(here) - node.level + 1]
                    base = ".".join(here + ([base] if base else []))
                targets |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        runs = set()
        for target in targets:
            runs |= {t for t in [*ancestors(target), target] if t in modules}
        graph[name] = runs - {name} - set(ancestors(name))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node, stack):
        state[node] = 1
        for target in sorted(graph.get(node, ())):
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


def classes_in_functions(root: Path = REPO, packages=PACKAGES) -> list[str]:
    """`module:function.Class` for every class statement inside a function (a factory's class: a reader cannot find
    it by name, a test cannot import it, a traceback names a closure)."""
    found = []
    for name, path in modules_of(root, packages).items():
        def walk(node, inside: str | None):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef) and inside is not None:
                    found.append(f"{name}:{inside}.{child.name}")
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    walk(child, child.name if inside is None else f"{inside}.{child.name}")
                else:
                    walk(child, inside)
        walk(ast.parse(path.read_text()), None)
    return found


def long_modules(root: Path = REPO, packages=PACKAGES, limit: int = MAX_LINES) -> dict[str, int]:
    """Product modules over `limit` lines (tests and benchmarks are not product code)."""
    lengths = {name: len(path.read_text().splitlines()) for name, path in modules_of(root, packages).items()}
    return {name: n for name, n in lengths.items() if n > limit}


def plant(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


# ---------------------------------------------------------------------------------------------- the project


def test_no_import_circles():
    graph = project_imports()
    assert "tuner.experiment.folder" in graph and "analysis.report" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_class_is_defined_inside_a_function():
    assert classes_in_functions() == []


def test_no_product_module_is_over_400_lines():
    assert long_modules() == {}


def test_tuner_package_does_not_import_analysis_and_analysis_not_the_run():
    graph = project_imports()
    assert not {m for m, targets in graph.items() if m.startswith("tuner") and
                any(t.startswith("analysis") for t in targets) and m != "tuner.cli"}
    assert not {m for m, targets in graph.items() if m.startswith("analysis") and "tuner.run" in targets}


def test_the_commands_start_without_the_heavy_libraries():
    """`tuner --help` imports none of them; the run's and export's module imports leave Ray Tune, Optuna and TRL
    (which the classes of tuner.search.* and tuner.trial.trainers subclass) to the functions that need them."""
    heavy = ("ray", "ray.tune", "optuna", "trl", "torch", "transformers", "datasets", "pandas")
    check = ("import sys, importlib; importlib.import_module(sys.argv[1]); "
             f"print(' '.join(m for m in {heavy!r} if m in sys.modules))")
    imported = {module: subprocess.run([sys.executable, "-c", check, module], cwd=REPO, capture_output=True,
                                       text=True, check=True).stdout.split()
                for module in ("tuner.cli", "tuner.run", "tuner.export")}
    assert imported["tuner.cli"] == []
    assert not {"ray", "ray.tune", "optuna", "trl", "torch", "transformers", "datasets"} & set(imported["tuner.run"])
    assert not {"ray.tune", "optuna", "trl"} & set(imported["tuner.export"])


def test_console_script_runs_the_module_clis():
    from tuner.cli import main

    assert main(["run", str(REPO / "search_spaces" / "dpo.yaml"), "--dry-run"]) == 0
    assert main(["frobnicate"]) == 2
    done = subprocess.run([sys.executable, "-m", "tuner.cli", "export", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--merge" in done.stdout
    done = subprocess.run([sys.executable, "-m", "tuner.cli", "resume", str(REPO / "no-such-folder")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--resume" in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------------------------------------- planted examples


def test_cycle_finder_finds_a_planted_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_a_function_level_import_closes_a_circle(tmp_path):
    root = plant(tmp_path, {"p/__init__.py": "", "p/a.py": "from p.b import g\n",
                            "p/b.py": "def g():\n    from p import a\n    return a\n"})
    assert find_cycle(project_imports(root, ("p",))) == ["p.a", "p.b", "p.a"]


def test_a_package_init_is_part_of_the_circle(tmp_path):
    # `from p.q.c import x` runs p/q/__init__, which imports p.q.b, which imports the importer back
    root = plant(tmp_path, {"p/__init__.py": "", "p/a.py": "from p.q.c import x\n",
                            "p/q/__init__.py": "from p.q.b import y\n", "p/q/b.py": "import p.a\ny = 1\n",
                            "p/q/c.py": "x = 1\n"})
    graph = project_imports(root, ("p",))
    assert graph["p.a"] == {"p.q", "p.q.c"}
    assert find_cycle(graph) == ["p.a", "p.q", "p.q.b", "p.a"]


def test_from_a_package_import_a_module_runs_that_module(tmp_path):
    root = plant(tmp_path, {"p/__init__.py": "", "p/q/__init__.py": "", "p/q/m.py": "from p import top\n",
                            "p/top.py": "from p.q import m\n"})
    graph = project_imports(root, ("p",))
    assert graph["p.top"] == {"p.q", "p.q.m"}
    assert find_cycle(graph) == ["p.q.m", "p.top", "p.q.m"]


def test_a_package_importing_its_own_modules_and_type_checking_imports_are_no_circle(tmp_path):
    root = plant(tmp_path, {"p/__init__.py": "from p.a import f\n", "p/a.py": "from p.b import g\ndef f(): pass\n",
                            "p/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p.a import f\n"
                                      "def g(): pass\n"})
    assert find_cycle(project_imports(root, ("p",))) is None


def test_a_class_inside_a_function_is_caught(tmp_path):
    root = plant(tmp_path, {"p/__init__.py": "", "p/m.py": "class Fine:\n    def method(self):\n        pass\n\n"
                            "def factory():\n    class Hidden(Fine):\n        pass\n    return Hidden\n\n"
                            "class Outer:\n    def build(self):\n        class Inner:\n            pass\n"})
    assert classes_in_functions(root, ("p",)) == ["p.m:factory.Hidden", "p.m:build.Inner"]


def test_a_long_module_is_caught(tmp_path):
    root = plant(tmp_path, {"p/__init__.py": "", "p/short.py": "x = 1\n" * MAX_LINES,
                            "p/long.py": "x = 1\n" * (MAX_LINES + 1)})
    assert long_modules(root, ("p",)) == {"p.long": MAX_LINES + 1}
