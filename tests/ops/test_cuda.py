"""CuPy kernels: NVRTC compile checks on every run (GPU or not), and GPU parity tests against the torch
reference and torchvision on thousands of random inputs (marked gpu, skipped without CUDA)."""

import pytest
import torch
import torchvision

from fcoslab import ops
from fcoslab.ops import reference as ops_reference
from fcoslab.ops.cuda import SOURCES, compile_source

pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="cupy (the 'cuda' extra) is not installed")


@pytest.mark.parametrize("name", sorted(SOURCES))
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_kernel_sources_compile_with_nvrtc(name, arch):
    ptx = compile_source(name, arch)
    assert ".entry" in ptx  # NVRTC produced kernels; a compile error raises with NVRTC's log


def test_compile_error_shows_the_nvrtc_log(tmp_path, monkeypatch):
    bad = tmp_path / "bad.cu"
    bad.write_text('extern "C" __global__ void k(float* x) { x[0] = undefined_name; }')
    monkeypatch.setitem(SOURCES, "bad", bad)
    with pytest.raises(RuntimeError, match="undefined_name"):
        compile_source("bad")


cuda = pytest.mark.gpu


def rand_boxes(n, gen, device="cuda", size=1000.0):
    xy = torch.rand(n, 2, generator=gen, device=device) * size
    wh = torch.rand(n, 2, generator=gen, device=device) * size / 8 + 1
    return torch.cat([xy, xy + wh], 1)


@cuda
@pytest.mark.parametrize("n", [0, 1, 2, 63, 64, 65, 1000, 5000])
@pytest.mark.parametrize("thresh", [0.3, 0.5, 0.7])
def test_nms_matches_torchvision_and_reference(n, thresh):
    gen = torch.Generator("cuda").manual_seed(n)
    for _ in range(5):
        boxes, scores = rand_boxes(n, gen), torch.rand(n, generator=gen, device="cuda")
        got = ops.nms(boxes, scores, thresh, backend="cupy")
        assert got.dtype == torch.int64 and got.device.type == "cuda"
        assert torch.equal(got, torchvision.ops.nms(boxes, scores, thresh))
        assert torch.equal(got, ops.nms(boxes, scores, thresh, backend="torch"))


@cuda
@pytest.mark.parametrize("n,groups", [(3000, 1), (3000, 7), (16000, 1280), (2000, 2000)])
def test_batched_nms_matches_torchvision(n, groups):
    gen = torch.Generator("cuda").manual_seed(groups)
    # corners on a 1/4 px grid: torchvision offsets boxes per group (its "coordinate trick"), which
    # is exact in float32 only for such coordinates
    boxes = (rand_boxes(n, gen, size=200.0) * 4).round() / 4
    scores = torch.rand(n, generator=gen, device="cuda")
    idxs = torch.randint(0, groups, (n,), generator=gen, device="cuda")
    got = ops.batched_nms(boxes, scores, idxs, 0.5, backend="cupy")
    assert torch.equal(got, torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))


@cuda
def test_nms_ties_follow_the_reference():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60.0]], device="cuda")
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5], device="cuda")
    assert ops.nms(boxes, scores, 0.5, backend="cupy").tolist() == ops.nms(boxes.cpu(), scores.cpu(), 0.5).tolist()


@cuda
def test_nms_100k_boxes():
    gen = torch.Generator("cuda").manual_seed(7)
    boxes, scores = rand_boxes(100_000, gen, size=4000.0), torch.rand(100_000, generator=gen, device="cuda")
    got = ops.nms(boxes, scores, 0.5, backend="cupy")
    assert torch.equal(got, torchvision.ops.nms(boxes, scores, 0.5))


def focal_inputs(n, k, dtype, gen):
    logits = (torch.randn(n, k, generator=gen, device="cuda") * 4).to(dtype)
    labels = torch.randint(-1, k, (n,), generator=gen, device="cuda")
    return logits, labels


@cuda
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 1.0), (-1.0, 0.0)])
@pytest.mark.parametrize("n,k", [(0, 5), (1, 1), (3000, 80), (257, 3)])
def test_focal_loss_matches_reference(reduction, alpha, gamma, n, k):
    gen = torch.Generator("cuda").manual_seed(n + k)
    logits, labels = focal_inputs(n, k, torch.float32, gen)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    got = ops.sigmoid_focal_loss(a, labels, alpha, gamma, reduction, backend="cupy")
    ref = ops_reference.sigmoid_focal_loss(b, labels, alpha, gamma, reduction)
    onehot = (labels[:, None] == torch.arange(k, device="cuda")).float()
    tv = torchvision.ops.sigmoid_focal_loss(logits, onehot, alpha, gamma, reduction)
    if n == 0 and reduction == "mean":
        assert got.isnan() and ref.isnan()
        return
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, tv, rtol=1e-5, atol=1e-5)
    grad = torch.rand_like(got)
    got.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_focal_loss_half_precision(dtype):
    gen = torch.Generator("cuda").manual_seed(3)
    logits, labels = focal_inputs(2000, 20, dtype, gen)
    a = logits.clone().requires_grad_()
    got = ops.sigmoid_focal_loss(a, labels, reduction="sum", backend="cupy")
    ref_in = logits.float().requires_grad_()
    ref = ops_reference.sigmoid_focal_loss(ref_in, labels, reduction="sum")
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), ref, rtol=1e-2, atol=1e-2)
    got.backward()
    ref.backward()
    assert a.grad.dtype == dtype
    torch.testing.assert_close(a.grad.float(), ref_in.grad, rtol=2e-2, atol=1e-3)


@cuda
def test_focal_loss_gradcheck_float64():
    gen = torch.Generator("cuda").manual_seed(5)
    logits, labels = focal_inputs(30, 4, torch.float64, gen)
    for reduction in ("none", "sum", "mean"):
        f = lambda x: ops.sigmoid_focal_loss(x, labels, 0.25, 2.0, reduction, backend="cupy")  # noqa: E731
        assert torch.autograd.gradcheck(f, (logits.clone().requires_grad_(),), eps=1e-6, atol=1e-6)


def assign_inputs(B, M, gen, image=(800, 1344)):
    from fcoslab.modeling.points import make_points
    from fcoslab.modeling.targets import point_regress_ranges

    sizes = [((image[0] + s - 1) // s, (image[1] + s - 1) // s) for s in (8, 16, 32, 64, 128)]
    points, strides = make_points(sizes, (8, 16, 32, 64, 128), 0.5, "cuda")
    ranges = point_regress_ranges(sizes, ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8)), "cuda")
    xy = torch.rand(B, M, 2, generator=gen, device="cuda") * torch.tensor(image[::-1], device="cuda")
    wh = torch.rand(B, M, 2, generator=gen, device="cuda") ** 2 * 600
    boxes = torch.cat([xy, xy + wh], -1).round()  # integer corners: ties and boundary points
    labels = torch.randint(0, 80, (B, M), generator=gen, device="cuda")
    labels[:, M - M // 5:] = -1
    return points, strides, ranges, boxes, labels


@cuda
@pytest.mark.parametrize("radius", [None, 1.5])
@pytest.mark.parametrize("B,M", [(1, 1), (4, 37), (2, 300), (3, 0)])
def test_assign_matches_reference(radius, B, M):
    gen = torch.Generator("cuda").manual_seed(B * 1000 + M)
    points, strides, ranges, boxes, labels = assign_inputs(B, M, gen)
    if M:
        boxes[0, 0] = boxes[0, M // 2]  # duplicate box: equal areas
    got = ops.fcos_assign(points, strides, ranges, boxes, labels, radius, backend="cupy")
    ref = ops.fcos_assign(points, strides, ranges, boxes, labels, radius, backend="torch")
    assert torch.equal(got, ref)
    if M:
        assert (got >= 0).sum() > 0


@cuda
def test_auto_backend_uses_kernels_on_cuda(monkeypatch):
    assert ops.backends()["cupy"] == "available"
    calls = []
    import fcoslab.ops.cuda as kernels

    real = kernels.nms
    monkeypatch.setattr(kernels, "nms", lambda *a: calls.append(1) or real(*a))
    boxes = torch.tensor([[0, 0, 1, 1.0]], device="cuda")
    ops.nms(boxes, torch.ones(1, device="cuda"), 0.5)
    assert calls == [1]
    monkeypatch.setenv("FCOSLAB_BACKEND", "torch")
    ops.nms(boxes, torch.ones(1, device="cuda"), 0.5)
    assert calls == [1]


@cuda
def test_training_step_on_gpu_with_kernels(tmp_path, shapes_dir):
    from helpers import tiny_overrides
    from fcoslab.config import load_config
    from fcoslab.engine.trainer import train

    cfg = load_config("shapes", tiny_overrides(shapes_dir, **{"runtime.device": "cuda"}))
    history = train(cfg, tmp_path / "run", progress=False)
    assert len(history) == 1 and history[0]["loss"] > 0
