"""The package's imports go one way (docs/DEVELOPING.md, "Layers").

Every ``import`` of a jepactl module, at module level or inside a function, is an edge; imports
under ``if TYPE_CHECKING:`` never run, so they count for the layer rule but not for cycles. The
test fails on a cycle, on a module importing a higher layer, on a domain importing another
domain, and on a dynamic import anywhere but the registry (the one place that names domains).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "jepactl"

# Lowest first. A module may import its own layer or a lower one. The recipe schema sits with the
# method contract because recipe_from_dict needs a method's recipe class from the registry, which
# names the domains' method modules as strings only.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "core",
        (
            "errors",
            "version",
            "typed_config",
            "precision",
            "compile",
            "progress",
            "output_paths",
            "state_file",
            "checkpoint",
            "micro_batch",
            "monitor",
            "run_lock",
            "command_log",
        ),
    ),
    ("building blocks", ("nn", "masks", "data")),
    ("method contract", ("methods", "recipe", "registry", "runs", "schedules")),
    (
        "trainer and evaluation toolkit",
        ("step", "train", "run_evaluation", "trackers", "export", "evaluate"),
    ),
    ("domains", ("domains",)),
    (
        "command line",
        (
            "cli",
            "cli_errors",
            "cli_output",
            "cli_recipes",
            "cli_pretrain",
            "bench",
            "report",
            "__main__",
        ),
    ),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    parts = module.split(".")
    if parts == ["jepactl"]:
        return len(LAYERS) - 1  # the package's public API re-exports from any layer
    for index, (_, members) in enumerate(LAYERS):
        if parts[1] in members:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """Return the ids of import nodes inside ``if TYPE_CHECKING:`` blocks."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found |= {id(inner) for inner in ast.walk(node)}
    return found


def imports_of(module: str) -> tuple[set[str], set[str], list[str]]:
    """Return (runtime imports, typing-only imports, dynamic import calls) of ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    typing_only = type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    runtime, typed, dynamic = set(), set(), []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from pkg import mod" imports the module pkg.mod; otherwise the name is in pkg.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in (
            "importlib.import_module",
            "import_module",
            "__import__",
        ):
            dynamic.append(ast.unparse(node))
        for target in targets:
            if target in MODULES and target != module:
                (typed if id(node) in typing_only else runtime).add(target)
    return runtime, typed, dynamic


GRAPH = {m: imports_of(m) for m in MODULES}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """Return one import cycle as a list of modules (first repeated last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_import_cycle():
    cycle = find_cycle({m: runtime for m, (runtime, _, _) in GRAPH.items()})
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_reports_a_cycle():
    # The check itself can fail: a three-module loop is found, a chain is not.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_module_imports_a_higher_layer():
    wrong = []
    for module, (runtime, typed, _) in GRAPH.items():
        for target in runtime | typed:
            if layer_of(target) > layer_of(module):
                wrong.append(
                    f"{module} ({LAYERS[layer_of(module)][0]}) imports "
                    f"{target} ({LAYERS[layer_of(target)][0]})"
                )
    assert not wrong, "\n".join(sorted(wrong))


def test_no_domain_imports_another_domain():
    wrong = []
    for module, (runtime, typed, _) in GRAPH.items():
        if not module.startswith("jepactl.domains."):
            continue
        own = module.split(".")[2]
        for target in runtime | typed:
            if target.startswith("jepactl.domains.") and target.split(".")[2] != own:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_only_the_registry_imports_by_name():
    dynamic = {m: calls for m, (_, _, calls) in GRAPH.items() if calls}
    assert set(dynamic) == {"jepactl.registry"}, dynamic


def test_registry_names_only_domain_modules():
    from jepactl.registry import METHODS

    for method, module in METHODS.items():
        assert module.startswith("jepactl.domains."), (method, module)
        assert module in MODULES, (method, module)


def test_every_module_imports():
    # A moved or renamed function shows up here, not in the first command that needs it.
    import importlib

    for module in sorted(MODULES):
        if module.endswith("__main__"):
            continue
        importlib.import_module(module)
