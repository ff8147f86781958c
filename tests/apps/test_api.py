"""The public API at the top of the package: ``from fcoslab import Predictor`` and friends, imported lazily."""

import inspect
import subprocess
import sys

import pytest

import fcoslab

API = ["load_config", "train", "evaluate", "Predictor", "read_history", "FcoslabError"]


@pytest.mark.parametrize("name", API)
def test_each_name_imports_from_fcoslab_with_a_docstring_example(name):
    exec(f"from fcoslab import {name}", namespace := {})
    obj = namespace[name]
    assert obj is getattr(fcoslab, name) and (callable(obj) and not inspect.ismodule(obj))
    doc = inspect.getdoc(obj) or ""
    assert "Example::" in doc and "import fcoslab" in doc and f"fcoslab.{name}" in doc, name
    assert name in fcoslab.__all__ and f"fcoslab.{name}" in fcoslab.__doc__


def test_train_and_evaluate_stay_functions_once_their_modules_are_imported():
    from fcoslab.evaluation.coco import coco_evaluate  # noqa: F401  (binds nothing on the package)
    from fcoslab.engine.trainer import Trainer  # noqa: F401
    import fcoslab.evaluation.coco  # noqa: F401

    assert inspect.isfunction(fcoslab.train) and inspect.isfunction(fcoslab.evaluate)
    assert list(inspect.signature(fcoslab.evaluate).parameters)[:3] == ["run", "ann_file", "image_dir"]
    assert sys.modules["fcoslab.engine.trainer"].Trainer is Trainer
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        fcoslab.nothing  # noqa: B018


def test_evaluate_and_predictor_say_a_missing_run_is_missing(tmp_path):
    for call in (fcoslab.evaluate, fcoslab.Predictor):
        with pytest.raises(fcoslab.FcoslabError, match=f"checkpoint {tmp_path / 'none'} does not exist"):
            call(tmp_path / "none")


def test_import_fcoslab_loads_no_torch_and_no_submodule():
    code = ("import sys, fcoslab; from fcoslab import FcoslabError; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fcoslab', 'torch', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['fcoslab', 'fcoslab.errors']"
