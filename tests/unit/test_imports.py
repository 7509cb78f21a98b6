"""alignkit's own import graph, counting imports inside functions too: no cycles, and no stage imports another stage.

The two entry-point facades (`alignkit/__init__.py`, `alignkit/cli.py`) may import anything lazily, so edges out of
them are not counted.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import alignkit
from alignkit import runner

PACKAGE_DIR = Path(alignkit.__file__).parent
FACADES = {"alignkit", "alignkit.cli"}


def module_name(path: Path, package_dir: Path) -> str:
    """Dotted module name of a file under the package (`alignkit/data/__init__.py` → `alignkit.data`)."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """Edges module → the package's modules it imports anywhere in its source (module level or inside functions)."""
    files = {module_name(path, package_dir): path for path in package_dir.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:  # `import alignkit.a.b` names alignkit.a.b's module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first repeated at the end), or None when the graph is acyclic."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_alignkit_import_graph_has_no_cycles():
    graph = {name: set() if name in FACADES else targets for name, targets in import_graph().items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_no_stage_imports_another_stage():
    stage_imports = [
        f"{name} → {target}"
        for name, targets in import_graph().items()
        if name.startswith("alignkit.stages.")
        for target in targets
        if target.startswith("alignkit.stages.")
    ]
    assert not stage_imports, "a stage imports another stage: " + ", ".join(sorted(stage_imports))


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (package / "c.py").write_text("import pkg.a.x\n")  # names pkg.a's module
    graph = import_graph(package)
    assert graph == {"pkg": set(), "pkg.a": {"pkg.sub.b"}, "pkg.sub": set(), "pkg.sub.b": {"pkg.c"}, "pkg.c": {"pkg.a"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_training_stage_is_a_recipe_for_the_one_runner():
    """Each stage module declares a `runner.Recipe` for its own stage and hands its config to `runner.run`."""
    for stage in ("pretrain", "sft", "reward", "dpo", "rl"):
        module = importlib.import_module(f"alignkit.stages.{stage}")
        assert isinstance(module.RECIPE, runner.Recipe) and module.RECIPE.stage == stage
        assert "runner.run(RECIPE, cfg)" in inspect.getsource(module.run)
