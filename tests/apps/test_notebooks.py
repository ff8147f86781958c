"""Every numbered notebook executes headlessly with small parameters; notebooks stay thin."""

import json
from pathlib import Path

import pytest

from helpers import tiny_overrides
from fcoslab.apps.notebooks import execute_notebook, notebook_paths

ROOT = Path(__file__).resolve().parents[2]


def test_seven_numbered_notebooks_are_thin_and_stripped():
    paths = notebook_paths()
    assert [p.name[:2] for p in paths] == ["00", "01", "02", "03", "04", "05", "06"]
    for path in paths:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert any("parameters" in c["metadata"].get("tags", []) for c in code), path
        for cell in code:
            source = "".join(cell["source"])
            assert not any(line.lstrip().startswith(("def ", "class ")) for line in source.splitlines()), path
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, f"{path} has outputs"


@pytest.mark.slow
def test_notebooks_execute_in_order(shapes_dir, tmp_path, notebook_kernel):
    over = tiny_overrides(shapes_dir, **{"train.epochs": 2, "train.eval_every": 1})
    run = str(tmp_path / "run")
    data = {"ANN": over["data.train_ann"], "IMAGES": over["data.train_images"], "N_SAMPLES": 4}
    params = {
        "00": {"N_IMAGES": 2},
        "01": {"CONFIG": "shapes", **data},
        "02": {"CONFIG": "shapes", "N_IMAGES_FOR_COUNTS": 4},
        "03": {"CONFIG": "shapes", "OVERRIDES": over, "RUN_DIR": run},
        "04": {"RUNS": [run, run], "BOOTSTRAP": 50},
        "05": {"RUN_DIR": run, "MY_IMAGES": [str(shapes_dir / "val" / "000001.png")], "N_SHOW": 4},
        "06": {"VARY": ["model.centerness=true,false"], "SEEDS": 1, "OUT": str(tmp_path / "ablation"), "BOOTSTRAP": 50,
               "OVERRIDES": [f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                             for k, v in {**over, "train.epochs": 1}.items()]},
    }
    # notebook 02 reads the preset's own data: the shapes preset (its pyramid, ranges and heads) pointed at the
    # tiny set through its overrides
    params["02"]["CONFIG"] = params["00"]["CONFIG"] = str(tmp_path / "tiny.json")
    sections = json.loads((ROOT / "fcoslab" / "config" / "presets" / "shapes.json").read_text())
    del sections["shapes"]  # nothing generated: the tiny set is there
    for key, value in over.items():
        section, _, name = key.partition(".")
        sections.setdefault(section, {})[name] = value
    assert len(sections["model"]["strides"]) == 3  # the preset's P3-P5, not the defaults' five levels
    (tmp_path / "tiny.json").write_text(json.dumps(sections))
    out = tmp_path / "executed"
    for path in notebook_paths():  # on one kernel, as `python -m fcoslab.apps.notebooks run` (make demo) runs them
        executed = execute_notebook(path, out, params[path.name[:2]], timeout=600, kernel=notebook_kernel)
        nb = json.loads(executed.read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, (path.name, errors)
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    for prefix in ("00_", "01_", "02_", "03_", "04_", "05_", "06_"):
        assert any(f.startswith(prefix) for f in figures), (prefix, figures)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert (tmp_path / "ablation" / "summary.md").is_file()


def test_parameters_go_only_where_a_notebook_declares_them(tmp_path, monkeypatch):
    """The runner offers RUN_DIR, RUNS and RESUME_IF_PRESENT to every notebook; each gets what it declares."""
    import nbformat
    import papermill

    from fcoslab.apps import notebooks

    calls = {}
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda src, dst, parameters, **kw: calls.setdefault(Path(src).name[:2], (parameters, kw)))
    monkeypatch.setattr(nbformat, "read", lambda *a, **k: nbformat.v4.new_notebook())  # nothing was executed
    offered = {"RUN_DIR": "/r", "RUNS": ["/r"], "RESUME_IF_PRESENT": True}
    for path in notebook_paths(["01", "03", "04", "05"]):
        execute_notebook(path, tmp_path, offered, only_known=True)
    assert set(calls["01"][0]) == set()
    assert set(calls["03"][0]) == {"RUN_DIR", "RESUME_IF_PRESENT"}
    assert set(calls["04"][0]) == {"RUNS"} and set(calls["05"][0]) == {"RUN_DIR"}
    assert all(kw["cwd"] == str(notebooks.NOTEBOOK_DIR) for _, kw in calls.values())  # where JupyterLab runs them


def test_notebooks_do_not_change_directory():
    for path in notebook_paths():
        assert "chdir" not in path.read_text() and "use_project_root" not in path.read_text(), path


def test_notebook_05_defaults_to_the_demo_run_and_a_missing_run_is_one_clear_error(tmp_path, notebook_kernel):
    """``make demo`` trains ``runs/shapes``; notebook 05 runs in notebooks/, so its default is ../runs/shapes."""
    import papermill

    path = next(p for p in notebook_paths(["05"]))
    assert papermill.inspect_notebook(str(path))["RUN_DIR"]["default"] == '"../runs/shapes"'
    assert "--out runs/shapes" in (ROOT / "Makefile").read_text()
    with pytest.raises(papermill.PapermillExecutionError) as e:
        execute_notebook(path, tmp_path, {"RUN_DIR": str(tmp_path / "none")}, timeout=120, kernel=notebook_kernel)
    assert e.value.ename == "FcoslabError" and "make demo" in e.value.evalue, e.value.evalue
    nb = json.loads((tmp_path / path.name).read_text())
    failed = [c for c in nb["cells"] if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1 and "".join(failed[0]["source"]).startswith("predictor = Predictor(RUN_DIR)")


def test_a_shared_kernel_gives_each_notebook_an_empty_namespace(tmp_path, notebook_kernel):
    """The second notebook sees nothing the first defined (a fresh kernel's view), but the modules the first
    imported stay loaded (what sharing saves)."""
    import nbformat
    import papermill

    first, second = tmp_path / "first.ipynb", tmp_path / "second.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import colorsys, sys\nleft_over = 1\nprint(id(sys.modules['colorsys']))")]), first)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import sys\nprint(id(sys.modules['colorsys']))"), nbformat.v4.new_code_cell("left_over")]), second)
    ran = json.loads(execute_notebook(first, tmp_path / "out", kernel=notebook_kernel).read_text())
    with pytest.raises(papermill.PapermillExecutionError) as e:
        execute_notebook(second, tmp_path / "out", kernel=notebook_kernel)
    assert e.value.ename == "NameError" and "left_over" in e.value.evalue
    again = json.loads((tmp_path / "out" / "second.ipynb").read_text())
    module_id = lambda nb: next(c for c in nb["cells"] if c["cell_type"] == "code")["outputs"][0]["text"]  # noqa: E731
    assert module_id(ran) == module_id(again)  # the same module object: imported once
