"""The package's data flow: a module imports only modules of its own or earlier layers, with no circle,
and files stay small enough to read in one sitting (README, "Layout and data flow")."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fcoslab"
LAYERS = [
    ["errors", "files", "coerce", "config", "config_docs", "boxes", "distributed", "runfolder"],
    ["datasets.coco", "datasets.shapes", "datasets.cocolike", "datasets.transforms", "datasets.loader",
     "datasets.convert", "datasets.voc", "datasets.yolo", "datasets.boxlist", "datasets.image_check", "datasets.batching",
     "datasets"],
    ["points", "model", "finetune"],
    ["cuda", "ops_reference", "ops", "targets", "loss", "decode"],
    ["inference", "draw", "voc_metrics", "coco_ap", "error_analysis"],
    ["evaluate", "bootstrap"],
    ["tensorboard_log", "stopping", "optim", "training_setup", "train"],
    ["tiling", "anatomy", "compare", "ablate", "cli_research", "cli_predict", "analysis", "plots", "predict", "viewer", "notebooks", "browser", "import_torchvision",
     "onnx_contract", "onnx_decode", "onnx_preprocess", "onnx_predictor", "onnx_check", "export", "cli", "__main__", ""],
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """fcoslab modules imported anywhere in a file (relative imports resolved), module-level or not."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            if node.module:
                found.add(".".join(base + [node.module]))
            else:  # from . import x: x is a module
                found |= {".".join(base + [a.name]) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fcoslab"):
            found.add(node.module.removeprefix("fcoslab").lstrip("."))
    return {m for m in found if m in LEVEL and m != name}


def test_every_module_has_a_layer():
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    assert modules <= set(LEVEL), f"modules without a layer: {modules - set(LEVEL)}"


def test_imports_only_flow_downward():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        for target in imports_of(path):
            if LEVEL[target] > LEVEL[name]:
                wrong.append(f"{name} (layer {LEVEL[name]}) imports {target} (layer {LEVEL[target]})")
    assert not wrong, wrong


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
        if len(lines) > 420:
            too_long.append(f"{path.name}: {len(lines)} lines")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno > 60:
                too_long.append(f"{path.name}:{node.name}: {node.end_lineno - node.lineno} lines")
    assert not too_long, too_long
