"""Evaluation's preprocessing in traceable operations (fcoslab.inference.onnx.preprocess): eagerly it equals the data
pipeline (transforms, then collate) to the bit; in onnxruntime the size rule is exact and the resize is
within one uint8 level of torch's."""

import io
import math

import numpy as np
import pytest
import torch

from fcoslab.config import load_config
from fcoslab.data import collate, float_pixels, resized_shape
from fcoslab.inference.onnx.check import reference_batch, sample_image
from fcoslab.inference.onnx.preprocess import Preprocess, eval_input_size, pad_to_multiple, preprocess_image

CONFIGS = {
    "antialias": {"data.test_min_size": 64, "data.max_size": 128, "model.pad_multiple": 32},
    "interpolate_mean": {"data.test_min_size": 64, "data.max_size": 128, "data.resize": "interpolate",
                         "data.pad_with_mean": True},
    "square": {"data.square_size": 96, "model.pad_multiple": 64},
}
SIZES = [(64, 64), (64, 128), (100, 60), (61, 45), (300, 200), (33, 250), (1, 7)]


def config(name):
    return load_config("shapes", CONFIGS[name])


def ort_session(module, example, inputs, outputs, axes, opset=18):
    import onnxruntime

    buffer = io.BytesIO()
    torch.onnx.export(module.eval(), example, buffer, dynamo=False, opset_version=opset, input_names=inputs,
                      output_names=outputs, dynamic_axes=axes)
    return onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_preprocess_image_equals_transforms_and_collate(name):
    cfg = config(name)
    for seed, (h, w) in enumerate(SIZES):
        image = sample_image(h, w, seed=seed)
        images, image_sizes, orig_sizes = preprocess_image(torch.from_numpy(image), cfg)
        want = reference_batch(image, cfg)
        assert torch.equal(images, float_pixels(want["images"])), (name, h, w)
        assert torch.equal(image_sizes, want["image_sizes"]) and torch.equal(orig_sizes, want["orig_sizes"])


def test_pad_to_multiple_equals_collate_and_keeps_padded_inputs():
    torch.manual_seed(0)
    for pad_with_mean in (False, True):
        for h, w in [(56, 128), (64, 128), (1, 33), (95, 97)]:
            image = torch.rand(3, h, w)
            want = collate([(image, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                                     "orig_size": torch.tensor([h, w]), "image_id": 0})], 32, pad_with_mean)["images"]
            got = pad_to_multiple(image[None], 32, pad_with_mean)
            assert torch.equal(got, want) and torch.equal(pad_to_multiple(got, 32, pad_with_mean), got)


class _Size(torch.nn.Module):
    def __init__(self, data):
        super().__init__()
        self.data = data

    def forward(self, hw):
        return eval_input_size(hw, self.data)


@pytest.mark.parametrize("overrides, by_hand", [
    ({}, {(2001, 1600): (1000, 800), (2003, 1600): (1002, 800), (480, 640): (800, 1067)}),  # 1000.5 and 1001.5: half to even
    ({"data.test_min_size": 64, "data.max_size": 128}, {(64, 200): (41, 128), (1, 5000): (1, 128)}),
    ({"data.test_min_size": 64, "data.max_size": 128, "data.resize": "interpolate"},
     {(64, 200): (40, 128), (480, 640): (64, 85)}),  # float32 would make 200 * (128 / 200) 127.99999, floored to 127
    ({"data.square_size": 512}, {(480, 640): (512, 512)}),
])
def test_size_rule_in_onnx_equals_the_python_rule(overrides, by_hand):
    """The graph computes in float64 as Python does; checked by hand and on 1500 random sizes."""
    data = load_config("shapes", {"data.test_min_size": 800, "data.max_size": 1333, **overrides}).data
    session = ort_session(_Size(data), (torch.tensor([480, 640]),), ["hw"], ["size"], {})
    rng = np.random.default_rng(0)
    for h, w in list(by_hand) + [tuple(int(v) for v in p) for p in rng.integers(1, 5000, size=(1500, 2))]:
        feed = {i.name: np.array([h, w], np.int64) for i in session.get_inputs()}  # none under square_size
        got = tuple(session.run(None, feed)[0].tolist())
        if data.square_size:
            want = (data.square_size,) * 2
        elif data.resize == "antialias":
            want = resized_shape(h, w, data.test_min_size, data.max_size)
        else:  # F.interpolate's output size: floor(side * scale) in float64
            scale = min(float(data.test_min_size) / min(h, w), float(data.max_size) / max(h, w))
            want = (max(1, math.floor(h * scale)), max(1, math.floor(w * scale)))
        assert got == want == by_hand.get((h, w), want), (h, w)
        assert tuple(eval_input_size(torch.tensor([h, w]), data).tolist()) == want


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_onnx_preprocessing_within_one_level_of_torch(name):
    """onnxruntime's Resize (antialias, exclude_outside) against torch's uint8 kernel: at most one uint8 level,
    on a small share of the pixels (torch quantises its filter weights as Pillow does); float pixels
    (``interpolate``) within 5e-5 (onnxruntime computes its weights otherwise). Sizes are exact."""
    cfg = config(name)
    session = ort_session(Preprocess(cfg), (torch.from_numpy(sample_image(50, 70)),), ["image"],
                          ["images", "image_sizes", "orig_sizes"], {"image": {0: "height", 1: "width"}})
    shares = []
    for seed, (h, w) in enumerate(SIZES + [(480, 640), (37, 91)]):
        image = sample_image(h, w, seed=seed)
        images, image_sizes, orig_sizes = session.run(None, {"image": image})
        want = reference_batch(image, cfg)
        assert np.array_equal(image_sizes, want["image_sizes"].numpy()) and np.array_equal(orig_sizes, [[h, w]])
        diff = np.abs(images - float_pixels(want["images"]).numpy())
        assert diff.max() <= (5e-5 if name == "interpolate_mean" else 1 / 255 + 1e-6), (h, w)
        shares.append(float((diff > 0.5 / 255).mean()))
    assert max(shares) < 0.05
