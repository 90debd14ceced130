"""kernels/ops/layer_norm.py against the reference: values and the gradients of x and the residual (both
outputs' gradients, or either alone), widths off the power of two, strided input, the affine parameters'
gradient (the reference runs), ``torch.compile``, one kernel each way; on a GPU bf16/fp16/fp32 parity."""
import pytest
import torch

import kernels
from kernels import reference

from .parity import FP32_TOL, assert_matches_reference, cuda

EPS = 1e-5


def _affine(width: int, gen: torch.Generator, device, dtype=torch.float32):
    return [(torch.randn(width, generator=gen) * s + m).to(device, dtype) for s, m in ((0.5, 1.0), (0.5, 0.0))]


def _both(op, weight, bias):
    """(x, residual) -> h and y stacked: both outputs take their own gradient."""
    return lambda x, residual=None: torch.stack(op(x, weight, bias, EPS, residual))


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 24), (37, 40), (2, 1, 7)])  # rows off the block, widths off 2^k
def test_add_layer_norm_matches_reference(kernel_device, shape, residual):
    gen = torch.Generator().manual_seed(shape[-1])
    weight, bias = _affine(shape[-1], gen, kernel_device)
    inputs = [(2 * torch.randn(*shape, generator=gen) + 1).to(kernel_device) for _ in range(1 + residual)]
    assert_matches_reference(_both(kernels.add_layer_norm, weight, bias),
                             _both(reference.add_layer_norm, weight.double().cpu(), bias.double().cpu()), inputs)


@pytest.mark.parametrize("used", ["h", "y"])
def test_one_output_alone(kernel_device, used):
    """h unused: the plain LayerNorm backward; y unused: the stream's gradient passes through."""
    gen = torch.Generator().manual_seed(3)
    weight, bias = _affine(24, gen, kernel_device)
    pick = lambda op, w, b: lambda x, r: op(x, w, b, EPS, r)[used == "y"]  # noqa: E731
    inputs = [torch.randn(6, 24, generator=gen).to(kernel_device) for _ in range(2)]
    if used == "y":
        assert_matches_reference(pick(kernels.add_layer_norm, weight, bias),
                                 pick(reference.add_layer_norm, weight.double().cpu(), bias.double().cpu()), inputs)
    else:  # the backward has nothing to compute: no kernel
        x, r = (t.requires_grad_() for t in inputs)
        out = pick(kernels.add_layer_norm, weight, bias)(x, r)
        backward_launches = kernels.launch_counts["layer_norm_bwd"]
        out.sum().backward()
        assert kernels.launch_counts["layer_norm_bwd"] == backward_launches
        assert torch.equal(x.grad, torch.ones_like(x)) and torch.equal(r.grad, torch.ones_like(r))


def test_strided_input_and_no_affine(kernel_device):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(20, 6, generator=gen).to(kernel_device)
    assert_matches_reference(lambda t: torch.stack(kernels.add_layer_norm(t.t(), None, None, EPS)),
                             lambda t: torch.stack(reference.add_layer_norm(t.t(), None, None, EPS)), [x])


def test_one_kernel_each_way_and_no_add(kernel_device):
    """A block's ``x + f(LN(x))``: the stream's gradient and the LayerNorm's are summed in the backward kernel."""
    from torch.profiler import ProfilerActivity, profile

    gen = torch.Generator().manual_seed(5)
    weight, bias = _affine(16, gen, kernel_device)
    x = torch.randn(4, 16, generator=gen).to(kernel_device).requires_grad_()
    before = dict(kernels.launch_counts)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        h, y = kernels.add_layer_norm(x, weight, bias, EPS)
        (h + y * 3).sum().backward()
    ran = {k: v - before.get(k, 0) for k, v in kernels.launch_counts.items() if v != before.get(k, 0)}
    assert ran == {"layer_norm_fwd": 1, "layer_norm_bwd": 1}
    adds = sum(e.count for e in prof.key_averages() if e.key == "aten::add")
    assert adds == 1  # the forward's h + y only: autograd summed nothing (the reference makes 2)
    ref = x.detach().double().requires_grad_()
    h2, y2 = reference.add_layer_norm(ref, weight.double(), bias.double(), EPS)
    (h2 + y2 * 3).sum().backward()
    torch.testing.assert_close(x.grad.double(), ref.grad, rtol=FP32_TOL, atol=FP32_TOL)


def test_trainable_affine_runs_the_reference_with_its_gradients(kernel_device):
    gen = torch.Generator().manual_seed(6)
    weight, bias = (t.requires_grad_() for t in _affine(8, gen, kernel_device))
    x = torch.randn(5, 8, generator=gen).to(kernel_device).requires_grad_()
    launches = sum(kernels.launch_counts.values())
    h, y = kernels.add_layer_norm(x, weight, bias, EPS)
    (y * y).sum().backward()
    assert sum(kernels.launch_counts.values()) == launches  # full fine-tuning: the reference ran
    w2, b2 = (t.detach().clone().requires_grad_() for t in (weight, bias))
    (reference.add_layer_norm(x.detach(), w2, b2, EPS)[1] ** 2).sum().backward()
    torch.testing.assert_close(weight.grad, w2.grad)
    torch.testing.assert_close(bias.grad, b2.grad)


def test_empty_input(kernel_device):
    x = torch.empty(0, 8, device=kernel_device, requires_grad=True)
    h, y = kernels.add_layer_norm(x, None, None, EPS)
    (h + y).sum().backward()
    assert x.grad.shape == x.shape


def test_torch_compile_fullgraph(kernel_device):
    gen = torch.Generator().manual_seed(7)
    weight, bias = _affine(40, gen, kernel_device)

    def two_branches(op, x, r):  # an add fused into the first LayerNorm, the stream's gradient into both
        h, y = op(x, weight, bias, EPS, r)
        h, y = op(h + y, weight, bias, EPS)
        return h * 2 + y

    x, r = (torch.randn(3, 9, 40, generator=gen).to(kernel_device) for _ in range(2))
    ours = [t.clone().requires_grad_() for t in (x, r)]
    out = torch.compile(lambda a, b: two_branches(kernels.add_layer_norm, a, b), fullgraph=True,
                        backend="aot_eager")(*ours)
    out.sum().backward()
    ref = [t.clone().requires_grad_() for t in (x, r)]
    expected = two_branches(reference.add_layer_norm, *ref)
    expected.sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


@cuda
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, FP32_TOL), (torch.bfloat16, 2e-2), (torch.float16, 5e-3)])
def test_cuda_add_layer_norm_parity(dtype, tol, residual):
    """ViT-B/16's stream at B=8, T=8: [12608, 768]; affine in the stream's dtype, as the trainer stores it."""
    gen = torch.Generator().manual_seed(0)
    weight, bias = _affine(768, gen, "cuda", dtype)
    inputs = [torch.randn(8 * 8 * 197, 768, generator=gen).cuda().to(dtype) for _ in range(1 + residual)]
    assert_matches_reference(_both(kernels.add_layer_norm, weight, bias),
                             _both(reference.add_layer_norm, weight.double().cpu(), bias.double().cpu()), inputs,
                             tol=tol)
