"""``fcoslab compare`` and ``fcoslab ablate`` end to end on tiny runs: the point estimates are the runs' own
COCO numbers, a run against itself differs by exactly 0, an ablation killed part-way continues where it
stopped, and submitit's local executor runs the same grid."""

import json

import pytest

from fcoslab.engine import ablate
from fcoslab.apps.cli import main
from fcoslab.runfolder import read_history
from helpers import set_args

VARY = ["model.centerness=true,false"]


@pytest.fixture(scope="module")
def two_runs(shapes_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    for seed in (0, 1):
        assert main(["train", "--quiet", "--out", str(root / f"s{seed}"), "--set",
                     *set_args(shapes_dir, **{"train.seed": seed})]) == 0
    return root / "s0", root / "s1"


def test_compare_gives_each_run_its_own_ap_with_an_interval_and_paired_differences(two_runs, tmp_path, capsys):
    a, b = two_runs
    out = tmp_path / "cmp" / "report.json"
    assert main(["compare", str(a), str(b), str(a), "--bootstrap", "200", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "8 images; 95% intervals from 200 bootstrap resamples" in text and f"minus {a}" in text
    report = json.loads(out.read_text())
    for run, record in zip((a, b, a), report["runs"]):
        history = read_history(run)[-1]
        for m in ("AP", "AP50", "AP75"):
            value, (lo, hi) = record["metrics"][m]["value"], record["metrics"][m]["ci"]
            assert value == pytest.approx(history[m], abs=1e-5) and lo <= hi
    itself = report["runs"][2]["vs_first"]["AP"]
    assert itself == {"value": 0.0, "ci": [0.0, 0.0], "p": 1.0}
    other = report["runs"][1]["vs_first"]["AP"]
    assert other["value"] == pytest.approx(report["runs"][1]["metrics"]["AP"]["value"] -
                                           report["runs"][0]["metrics"]["AP"]["value"])
    assert 0 < other["p"] <= 1


def test_an_interrupted_ablation_continues_where_it_stopped(shapes_dir, tmp_path, monkeypatch):
    out = tmp_path / "abl"
    trained = []
    real = ablate.train_planned

    def stops_after_one(run, progress=False):
        if len(trained) == 1:
            raise KeyboardInterrupt  # a kill between two runs (a kill within a run resumes from its last.pt)
        trained.append(run.path)
        return real(run, progress)

    monkeypatch.setattr(ablate, "train_planned", stops_after_one)
    args = ["ablate", "--vary", *VARY, "--seeds", "1", "--out", str(out), "--bootstrap", "100", "--quiet",
            "--set", *set_args(shapes_dir, **{"model.backbone_width": 8})]
    assert main(args) == 130
    assert len(trained) == 1 and not (out / "summary.json").exists()
    monkeypatch.setattr(ablate, "train_planned", lambda run, progress=False: trained.append(run.path) or
                        real(run, progress))
    assert main(args) == 0
    assert len(trained) == 3 and len(set(trained)) == 2  # the first run was found finished, not trained again
    summary = json.loads((out / "summary.json").read_text())
    assert [v["variant"] for v in summary["variants"]] == ["model.centerness=true", "model.centerness=false"]
    base, other = summary["variants"]
    for variant in summary["variants"]:  # the spread is over the runs' own (history) numbers
        history = read_history(variant["runs"][0])[-1]
        assert variant["metrics"]["AP"]["values"] == [pytest.approx(history["AP"], abs=1e-5)]
    d = other["vs_baseline"]["AP"]
    assert d["mean"] == pytest.approx(other["metrics"]["AP"]["mean"] - base["metrics"]["AP"]["mean"])
    assert d["ci"][0] <= d["ci"][1] and 0 < d["p"] <= 1 and d["std"] == 0.0  # one seed: no spread over seeds
    assert "| model.centerness=false |" in (out / "summary.md").read_text()
    other_grid = ["ablate", "--vary", "model.centerness=false,true", "--seeds", "1", "--out", str(out), "--quiet"]
    assert main(other_grid) == 2  # another grid in the same folder is refused


def test_ablation_runs_through_submitit_locally(shapes_dir, tmp_path):
    out = tmp_path / "abl"
    args = ["ablate", "--vary", "model.centerness=false", "--seeds", "1", "--out", str(out), "--bootstrap", "50",
            "--launcher", "submitit", "--cluster", "local", "--quiet",
            "--set", *set_args(shapes_dir, **{"model.backbone_width": 8})]
    assert main(args) == 0
    assert sorted(p.name for p in (out / "submitit").iterdir() if p.suffix == ".out")  # the jobs' own logs
    summary = json.loads((out / "summary.json").read_text())
    assert [len(v["runs"]) for v in summary["variants"]] == [1]  # one job, in a process of its own
    assert read_history(summary["variants"][0]["runs"][0])[-1]["epoch"] == 1


def test_an_ablation_can_vary_the_preset_itself(shapes_dir, tmp_path, monkeypatch):
    from fcoslab.errors import FcoslabError
    from fcoslab.runfolder import RunFolder

    out = tmp_path / "abl"
    runs = ablate.plan_runs(None, ["config=shapes_128, shapes"], 2, out, ["train.epochs=1"])
    assert [(r.config, r.seed, r.path.relative_to(out).as_posix()) for r in runs] == [
        ("shapes_128", 0, "config=shapes_128/seed0"), ("shapes_128", 1, "config=shapes_128/seed1"),
        ("shapes", 0, "config=shapes/seed0"), ("shapes", 1, "config=shapes/seed1")]
    assert all(set(r.overrides) == {"train.epochs", "train.seed"} for r in runs)  # "config" is not a key
    for vary, message in [(["config=shapes,shapes_999"], "--vary config=shapes_999: .*shapes_999"),
                          (["config=shapes,"], "an empty preset name"),
                          (["config=a/b.json,a_b.json"], "would share the folder")]:
        with pytest.raises(FcoslabError, match=message):
            ablate.plan_runs(None, vary, 1, out)
    with pytest.raises(FcoslabError, match="both name the preset"):
        ablate.plan_runs("shapes", ["config=shapes_128,shapes"], 1, out)
    # a setting valid for one preset only: the error says which variant
    with pytest.raises(FcoslabError, match="--vary config=shapes_128: .*regress_ranges"):
        ablate.plan_runs(None, ["config=shapes_128,shapes"], 1, out, ["assign.regress_ranges=[[-1,32],[32,64],[64,1e8]]"])
    # a JSON file is kept by its absolute path, so a rerun from another folder trains the same recipe
    (tmp_path / "mine.json").write_text(json.dumps({"train": {"epochs": 1}}))
    monkeypatch.chdir(tmp_path)
    assert ablate.plan_runs(None, ["config=mine.json"], 1, out)[0].config == str(tmp_path / "mine.json")
    # end to end: each variant trains its own preset under the same common --set
    common = set_args(shapes_dir, **{"model.backbone_width": 8})
    args = ["ablate", "--vary", "config=shapes_128,shapes", "--seeds", "1", "--out", str(out), "--bootstrap", "50",
            "--quiet", "--set", *common]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [v["variant"] for v in summary["variants"]] == ["config=shapes_128", "config=shapes"]
    saved = [RunFolder(v["runs"][0]).load()["config"] for v in summary["variants"]]
    assert [tuple(c["model"]["strides"]) for c in saved] == [(8, 16, 32, 64, 128), (8, 16, 32)]
    assert [c["model"]["backbone_width"] for c in saved] == [8, 8]
    assert "| config=shapes |" in (out / "summary.md").read_text()
    assert main(args) == 0  # again: both found finished, same recipe
    # a preset whose contents changed under the same name: the finished run is not mixed into the grid
    real = ablate.load_config
    monkeypatch.setattr(ablate, "load_config", lambda name, over=None: real(name, {**(over or {}), "model.head_convs": 2}))
    assert main(args) == 2
    with pytest.raises(FcoslabError, match="another recipe than the plan's .*model.head_convs = 1 there, 2 now"):
        ablate.train_planned(ablate.plan_runs(None, ["config=shapes_128,shapes"], 1, out, common)[0])


def test_run_labels_are_the_fewest_trailing_parts_that_keep_runs_apart(tmp_path):
    from fcoslab.runfolder import run_labels

    assert run_labels([tmp_path / "abl" / "a" / "seed0", tmp_path / "abl" / "b" / "seed0"]) == ["a/seed0", "b/seed0"]
    assert run_labels([tmp_path / "runs" / "shapes", tmp_path / "runs" / "nb_shapes"]) == ["shapes", "nb_shapes"]
    assert run_labels([tmp_path / "x" / "run", tmp_path / "x" / "run"]) == ["run", "run"]  # the same run twice
    assert run_labels([]) == []
