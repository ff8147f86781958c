"""The package's data flow: fcoslab is a few packages in layers, and a module imports only modules of its
own package or of packages in earlier layers, with no circle; files stay small enough to read in one
sitting (README, "Layout and data flow")."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fcoslab"
# The top-level modules and subpackages of fcoslab, in the order data flows; the units of one layer do not
# import each other. "" is fcoslab/__init__.py.
LAYERS = [
    ["errors"],
    ["files", "boxes", "draw", "distributed"],
    ["runfolder"],
    ["config"],
    ["data", "ops"],
    ["modeling"],
    ["inference"],
    ["evaluation"],
    ["engine"],
    ["viz"],
    ["apps"],
    ["__main__", ""],
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str) -> str:
    """The layer unit of a module: its top-level package (``data.formats.coco`` -> ``data``), or itself."""
    return module.split(".")[0]


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """fcoslab modules imported anywhere in a file (relative imports resolved), module-level or not."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            if node.module:
                found.add(".".join(base + [node.module]))
            else:  # from . import x: x is a module (or a name of the package, which is then the target)
                found |= {".".join(base + [a.name]) if ".".join(base + [a.name]) in MODULES else ".".join(base)
                          for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fcoslab"):
            found.add(node.module.removeprefix("fcoslab").lstrip("."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("fcoslab").lstrip(".") for a in node.names
                      if a.name.startswith("fcoslab.")}
    return {m for m in found if m in MODULES and m != name}


def test_every_module_has_a_layer():
    packages = {package_of(m) for m in MODULES}
    assert packages <= set(LEVEL), f"top-level modules or packages without a layer: {packages - set(LEVEL)}"
    assert packages == set(LEVEL), f"layers name what does not exist: {set(LEVEL) - packages}"


def test_imports_only_flow_downward():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        for target in imports_of(path):
            here, there = package_of(name), package_of(target)
            if here != there and LEVEL[there] >= LEVEL[here] and here != "":
                wrong.append(f"{name} (layer {LEVEL[here]}) imports {target} (layer {LEVEL[there]})")
    assert not wrong, wrong


def test_packages_do_not_import_each_other_in_a_circle():
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        here = package_of(module_name(path))
        graph.setdefault(here, set()).update(package_of(t) for t in imports_of(path) if package_of(t) != here)
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            raise AssertionError("package import circle: " + " -> ".join(trail + [node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt != "":
                visit(nxt, trail + [node])
        state[node] = 2

    for node in graph:
        visit(node, [])


def test_no_import_circle():
    graph = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            raise AssertionError("import circle: " + " -> ".join(trail + [node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt != "" and not node.startswith(nxt + ".") and nxt != node.rpartition(".")[0]:
                visit(nxt, trail + [node])
        state[node] = 2

    for node in graph:
        visit(node, [])


def test_files_and_functions_stay_small():
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        if len(lines) > 400:
            too_long.append(f"{path.name}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                too_long.append(f"{path.name}:{node.name}: {node.end_lineno - node.lineno} lines")
    assert not too_long, too_long


def test_tests_mirror_the_packages():
    """tests/PACKAGE/ holds the tests of fcoslab/PACKAGE (tests/benchmarks/ those of benchmarks/); only this
    file, the fixtures and the helpers stay at the top."""
    tests = Path(__file__).resolve().parent
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} | {"benchmarks"}
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    assert folders <= packages, folders - packages
    assert sorted(p.name for p in tests.glob("*.py")) == ["conftest.py", "helpers.py", "test_layout.py"]
