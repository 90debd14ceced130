"""Whole-model parity: the fused backend vs the eager reference, on the ``kernel_device`` (Triton's
interpreter on CPU, or the GPU)."""
import dataclasses

import pytest
import torch

import kernels
import m2clip_fast as m2

from .conftest import randomize_adapters
from .parity import FP32_TOL, rel_err


def _batch(masker, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(2, 3, 3, 32, 32, generator=g)
    labels = torch.tensor([0, 3])
    batch = video, labels, masker.class_tokens(), *masker(labels, rate=1.0, generator=g)
    return tuple(t.to(device) for t in batch)


def _models(cfg, device):
    """An eager model with random adapters, and a fused one loaded from its state dict."""
    torch.manual_seed(0)
    eager = m2.build_model(cfg, backend="eager").to(device).eval()
    randomize_adapters(eager, scale=0.2)
    fused = m2.build_model(cfg, backend="fused").to(device).eval()
    fused.load_state_dict(eager.state_dict())  # a checkpoint moves freely between the two paths
    assert fused.state_dict().keys() == eager.state_dict().keys()
    return eager, fused


def _losses_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    losses = model.compute_losses(*batch)
    losses["total"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.parametrize("branches", [("te", "td"), ("te",), ("td",)])
def test_fused_model_matches_eager_values_and_every_trainable_gradient(kernel_device, tiny_cfg, masker, branches):
    """The method, and the TE-only / TD-only ablations."""
    eager, fused = _models(dataclasses.replace(tiny_cfg, ted_branches=branches), kernel_device)
    batch = _batch(masker, kernel_device)
    before = kernels.launch_counts["stencil_bwd"], kernels.launch_counts["quick_gelu"]
    fused_losses, fused_grads = _losses_and_grads(fused, batch)
    assert kernels.launch_counts["stencil_bwd"] > before[0]  # the kernels ran
    assert kernels.launch_counts["quick_gelu"] > before[1]  # in the frozen towers' MLPs too
    eager_losses, eager_grads = _losses_and_grads(eager, batch)
    for k in eager_losses:
        assert abs(fused_losses[k].item() - eager_losses[k].item()) <= FP32_TOL * max(1.0, abs(eager_losses[k].item())), k
    assert fused_grads.keys() == eager_grads.keys()
    for name, g in eager_grads.items():
        if g.abs().max() == 0:
            assert fused_grads[name].abs().max() == 0, name
        else:
            assert rel_err(fused_grads[name], g) < 1e-4, (name, rel_err(fused_grads[name], g))


def test_fused_model_trains_like_the_eager_one(kernel_device, tiny_cfg, masker):
    """Three AdamW steps from the same weights on the same batch: the fused and the eager model end with the
    same trainable weights, and their loss fell the same way."""
    batch = _batch(masker, kernel_device)
    results = []
    for model in _models(tiny_cfg, kernel_device):
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-2)
        losses = []
        for _ in range(3):
            opt.zero_grad()
            loss = model.compute_losses(*batch)["total"]
            loss.backward()
            opt.step()
            losses.append(loss.item())
        results.append((losses, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}))
    (eager_losses, eager_weights), (fused_losses, fused_weights) = results
    assert eager_losses[-1] < eager_losses[0]
    assert fused_losses == pytest.approx(eager_losses, rel=1e-4)
    for name, w in eager_weights.items():
        assert rel_err(fused_weights[name], w) < 1e-4, name


def test_set_backend_switches_every_adapter_to_the_kernels_and_back(kernel_device, tiny_cfg, masker):
    """Counted launches, not flags: eager runs no kernel; fused runs one stencil per TED-Adapter and one for
    the global temporal adapter per video forward, and one QuickGELU per block; switching back runs none again."""
    from m2clip_fast.adapters import TEDAdapter

    torch.manual_seed(0)
    model = m2.build_model(tiny_cfg).to(kernel_device).eval()
    video = _batch(masker, kernel_device)[0]
    teds = sum(isinstance(m, TEDAdapter) for m in model.modules())

    blocks = len(model.clip.visual.transformer.resblocks)

    def launches() -> tuple[int, int]:
        before = kernels.launch_counts["stencil_fwd"], kernels.launch_counts["quick_gelu"]
        with torch.no_grad():
            model.encode_video(video)
        return kernels.launch_counts["stencil_fwd"] - before[0], kernels.launch_counts["quick_gelu"] - before[1]

    assert teds > 0 and launches() == (0, 0)
    model.set_backend("fused")
    assert model.backend == "fused" and launches() == (teds + 1, blocks)  # and one QuickGELU per vision block
    model.set_backend("eager")
    assert launches() == (0, 0)


def test_fused_path_sees_the_eager_dtypes_under_autocast(kernel_device, tiny_cfg, masker):
    """bf16 autocast: the fused ops compute in bf16 where eager does (values compared at bf16 tolerance;
    the interpreter computes bf16 inputs in fp32) and return the same dtypes."""
    eager, fused = _models(tiny_cfg, kernel_device)
    video = _batch(masker, kernel_device)[0]
    tokens = masker.class_tokens().to(kernel_device)
    with torch.autocast(kernel_device, dtype=torch.bfloat16):
        a, b = eager.encode_video(video), fused.encode_video(video)
        ta, tb = eager.encode_text(tokens), fused.encode_text(tokens)
    for x, y in ((a.frame_embeddings, b.frame_embeddings), (a.class_logits, b.class_logits), (ta.hidden, tb.hidden)):
        assert x.dtype == y.dtype
        assert rel_err(y, x) < 2e-2


def test_whole_fused_model_compiles_fullgraph(kernel_device, tiny_cfg, masker):
    """No graph break anywhere in a fused training forward (aot_eager: dynamo + AOT autograd, no codegen)."""
    torch.manual_seed(0)
    model = m2.build_model(tiny_cfg, backend="fused").to(kernel_device).eval()
    randomize_adapters(model, scale=0.2)
    batch = _batch(masker, kernel_device)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got = compiled(*batch)
    got["total"].backward()
    grad = model.visual_adapters[0].mlp.td.conv.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    expected = model(*batch)
    expected["total"].backward()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, model.visual_adapters[0].mlp.td.conv.weight.grad, rtol=1e-4, atol=1e-6)


def test_the_model_says_what_its_adapters_run(kernel_device, tiny_cfg, monkeypatch):
    """One rule, visible: eager; Triton (compiled, or the interpreter on CPU); or, where Triton cannot run,
    the eager reference with the reason."""
    from kernels import runtime as kutils

    model = m2.build_model(tiny_cfg).to(kernel_device)
    assert model.adapter_backend == "eager"
    model.set_backend("fused")
    assert model.adapter_backend == ("triton (interpreter)" if kernel_device == "cpu" else "triton")
    monkeypatch.setattr(kutils, "INTERPRET", False)
    assert m2.build_model(tiny_cfg, backend="fused").adapter_backend == \
        "eager reference (TRITON_INTERPRET=1 was not set before `kernels` was imported)"


def test_grad_checkpointing_gives_the_same_losses_and_gradients(kernel_device, tiny_cfg, masker):
    """Recomputing each vision block in the backward (fused adapters too) changes memory, not results."""
    eager, fused = _models(tiny_cfg, kernel_device)
    batch = _batch(masker, kernel_device)
    for model in (eager, fused):
        model.train()
        model.visual_dropout.p = 0.0  # dropout would draw different masks in the two runs
        reference_losses, reference_grads = _losses_and_grads(model, batch)
        model.cfg.grad_checkpointing = True
        before = kernels.launch_counts["stencil_fwd"]
        losses, grads = _losses_and_grads(model, batch)
        model.cfg.grad_checkpointing = False
        if model is fused:  # each TED-Adapter's forward ran again in the backward: the recomputation happened
            teds = len(model.visual_adapters) * len(tiny_cfg.visual_adapter_positions)
            assert kernels.launch_counts["stencil_fwd"] - before == 2 * teds + 1  # + the temporal adapter
        for k in losses:
            torch.testing.assert_close(losses[k], reference_losses[k], rtol=1e-5, atol=1e-6)
        for name, g in reference_grads.items():
            torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_the_backend_is_not_saved_and_old_checkpoints_that_hold_it_still_load(tiny_cfg):
    """How a model runs is chosen at build time, not model identity: configs do not hold it, and a config saved
    by an older version (with ``use_fused``) still reads."""
    saved = dataclasses.asdict(m2.build_model(tiny_cfg, backend="fused").cfg)
    assert "use_fused" not in saved
    assert m2.M2CLIPConfig.from_dict({**saved, "use_fused": True}) == tiny_cfg
    with pytest.raises(ValueError, match="backend must be one of eager, fused, got 'triton'"):
        m2.build_model(tiny_cfg, backend="triton")


def test_adapters_keep_their_parameters_packed_where_the_fused_op_reads_them(kernel_device, tiny_cfg, masker):
    """Every TED-Adapter and the temporal adapter store fc2 in the output GEMM's augmented operand (and the two fc1
    weights back to back), also after ``.to()`` and a state-dict round trip; a fused backward then hands autograd
    gradients in the parameters' own layout, so ``.grad`` is that tensor itself, no copy."""
    from kernels.packing import _packed_output, adjacent
    from m2clip_fast.adapters import TEDAdapter, TemporalAdapter

    model = m2.build_model(tiny_cfg, backend="fused").to(kernel_device).double().float()
    model.load_state_dict(m2.build_model(tiny_cfg).state_dict())
    ted = [m for m in model.modules() if isinstance(m, TEDAdapter)]
    temporal = [m for m in model.modules() if isinstance(m, TemporalAdapter)]
    assert ted and temporal
    for m in ted:
        branches = [b for b in (m.te, m.td) if b is not None]
        assert _packed_output([(b.fc2.weight, b.fc2.bias) for b in branches]) is not None
        assert len(branches) < 2 or adjacent(m.te.fc1.weight, m.td.fc1.weight)
    for m in temporal:
        assert _packed_output([(m.fc2.weight, m.fc2.bias)]) is not None
    randomize_adapters(model)
    model.compute_losses(*_batch(masker, kernel_device))["total"].backward()
    fc2 = ted[0].te.fc2.weight
    assert fc2.grad is not None and fc2.grad.stride() == fc2.stride() == (1, fc2.shape[0])
