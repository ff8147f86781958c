import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from fcoslab.evaluation import reports as analysis  # noqa: E402
from fcoslab.viz import plots  # noqa: E402
from fcoslab.config import load_config  # noqa: E402
from fcoslab.data import CocoDetection  # noqa: E402
from fcoslab.errors import FcoslabError  # noqa: E402


def small_cfg(**over):
    return load_config("shapes_128", {"data.min_size": [64], "data.max_size": 64, "data.test_min_size": 64, **over})  # P3-P7


def test_assignment_for_image_keeps_ground_truth_and_points_apart(shapes_dir):
    ds = CocoDetection(shapes_dir / "train.json", shapes_dir / "train")
    a = analysis.assignment_for_image(ds, 0, small_cfg())
    boxes, labels = ds.targets[ds.images[0]["id"]]
    assert a["gt_labels"].tolist() == labels.tolist()
    torch.testing.assert_close(a["gt_boxes"], torch.as_tensor(boxes))
    assert a["labels"].shape == (len(a["points"]),)
    assert set(a["labels"][a["labels"] >= 0].tolist()) <= set(labels.tolist())


def test_center_sampling_and_ranges_change_positives(shapes_dir):
    ds = CocoDetection(shapes_dir / "train.json", shapes_dir / "train")
    with_cs = analysis.positives_per_level(ds, small_cfg(**{"assign.center_radius": 0.5}), 6)
    without = analysis.positives_per_level(ds, small_cfg(**{"assign.center_radius": None}), 6)
    assert with_cs.shape == (5,) and (without >= with_cs).all() and without.sum() > with_cs.sum()


def test_dataset_stats_and_report(shapes_dir, tmp_path):
    ds = CocoDetection(shapes_dir / "train.json", shapes_dir / "train")
    counts = analysis.class_counts(ds)
    assert list(counts) == ["ellipse", "rectangle", "triangle", "cross"]
    assert sum(counts.values()) == sum(len(b) for b, _ in ds.targets.values())
    with pytest.raises(FcoslabError, match="does not exist"):
        analysis.data_report(tmp_path / "none.json", tmp_path)
    summary, problems, bad = analysis.data_report(shapes_dir / "train.json", shapes_dir / "train")
    assert bad == [] and f"{len(ds)} images opened without a problem" in summary
    n_boxes = sum(len(b) for b, _ in ds.targets.values())
    assert f"{len(ds)} images" in summary and f"{n_boxes} boxes" in summary and "4 classes" in summary
    assert all(isinstance(line, str) for line in problems)


def test_figures_have_the_expected_panels(shapes_dir):
    ds = CocoDetection(shapes_dir / "train.json", shapes_dir / "train")
    cfg = small_cfg()
    assert len(plots.show_samples(ds, 4, cols=2).axes) == 4
    assert len(plots.plot_dataset_stats(ds, cfg).axes) == 4
    a = analysis.assignment_for_image(ds, 1, cfg)
    assert len(plots.plot_assignment(a, ds.index.names).axes) == 5
    assert len(plots.plot_target_maps(a, 0).axes) == 10  # 5 maps + 5 colour bars
    history = [{"epoch": e, "AP": 0.1 * e, "AP50": 0.2 * e, "AP75": 0.05 * e} for e in (1, 2, 3)]
    fig = plots.plot_map_curves({"run": history})
    line = fig.axes[0].lines[0]
    assert np.allclose(line.get_ydata(), [0.1, 0.2, 0.3])


def test_level_names_come_from_the_strides():
    from fcoslab.modeling.points import level_names

    assert level_names((8, 16, 32, 64, 128)) == ["P3", "P4", "P5", "P6", "P7"]
    assert level_names((4, 8, 16, 32, 64)) == ["P2", "P3", "P4", "P5", "P6"]
    assert level_names((8, 16, 32)) == ["P3", "P4", "P5"]


def test_assignment_figures_name_the_levels_of_a_p2_pyramid(shapes_dir):
    from fcoslab.config import load_config

    cfg = load_config("shapes", {"model.strides": [4, 8, 16, 32, 64],
                                 "assign.regress_ranges": [[-1, 32], [32, 64], [64, 128], [128, 256], [256, 1e8]]})
    ds = CocoDetection(shapes_dir / "train.json", shapes_dir / "train")
    assigned = analysis.assignment_for_image(ds, 0, cfg)
    fig = plots.plot_assignment(assigned, ds.index.names)
    assert [ax.get_title().split()[0] for ax in fig.axes] == ["P2", "P3", "P4", "P5", "P6"]
    fig = plots.plot_positives_per_level({"a": np.ones(5)}, cfg.model.strides)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["P2", "P3", "P4", "P5", "P6"]


def test_assignments_by_method_and_their_figure(shapes_dir, tmp_path):
    ds = CocoDetection(shapes_dir / "train.json", shapes_dir / "train")
    cfg = small_cfg(**{"model.fpn_channels": 32, "model.head_convs": 1})
    by_method = analysis.assignments_by_method(ds, [0, 2], cfg)
    assert list(by_method) == ["fcos", "atss", "tal"]
    fcos_alone = analysis.assignment_for_image(ds, 2, cfg)
    assert torch.equal(by_method["fcos"][1]["matched"], fcos_alone["matched"]) and by_method["fcos"][1]["index"] == 2
    for method, assigned in by_method.items():
        for a in assigned:
            pos = a["labels"] >= 0
            assert pos.any(), method
            assert set(a["labels"][pos].tolist()) <= set(a["gt_labels"].tolist())
    assert not torch.equal(by_method["atss"][0]["matched"], by_method["fcos"][0]["matched"])
    with pytest.raises(FcoslabError, match="assign.method=tal.*model"):
        analysis.assignment_for_image(ds, 0, cfg.replace(**{"assign.method": "tal"}))
    fig = plots.plot_assignment_methods(by_method, ds.index.names, levels=[0, 1], title="TAL: untrained model")
    assert len(fig.axes) == 6 * 2 and fig._suptitle.get_text() == "TAL: untrained model"
    first, (h, w) = fig.axes[0].get_title(), by_method["fcos"][0]["level_sizes"][0]
    p3_positives = int((by_method["fcos"][0]["labels"][:h * w] >= 0).sum())
    assert first.startswith("fcos · image 0 · P3") and first.endswith(f": {p3_positives} positives")
    assert fig.axes[2].get_title().startswith("atss · image 0 · P3") and fig.axes[6].get_title().startswith("fcos · image 2")


def test_assignment_widget_redraws_its_picture_on_each_slider(shapes_dir):
    """The widget shows PNG bytes in an image widget (no captured output) and draws again on each change."""
    ds = CocoDetection(shapes_dir / "train.json", shapes_dir / "train")
    box = plots.assignment_widget(ds, small_cfg())
    (index, radius), picture = box.children[0].children, box.children[1]
    first = bytes(picture.value)
    assert first.startswith(b"\x89PNG")
    index.value = 1
    second = bytes(picture.value)
    assert second.startswith(b"\x89PNG") and second != first
    radius.value = 0.5  # fewer positives than at the preset's 2 (0, off, draws what 2 does on these images)
    assert bytes(picture.value) != second
