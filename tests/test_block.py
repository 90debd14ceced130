"""Our block forward (``model.run_block``: one qkv GEMM, SDPA on views, LayerNorm in the activations' dtype) against
open_clip's own ``ResidualAttentionBlock.forward`` — the reference — with the same parameters: values and the
gradients that flow (input, memory, and every weight when they are trainable, as in full fine-tuning), fp64 and
bf16 (docs/DESIGN.md §3); and the frozen towers stored in the autocast dtype."""
import pytest
import torch

import m2clip_fast as m2
from benchmarks.cases import released_block
from m2clip_fast.adapters import BlockAdapters
from m2clip_fast.blocks import run_block

from .parity import rel_err

NO_ADAPTERS = BlockAdapters(lambda: None, ())
BF16_TOL = 2e-2  # docs/DESIGN.md §3


def _block(tiny_model, tower: str):
    blocks = tiny_model.clip.visual.transformer.resblocks if tower == "vision" else tiny_model.clip.transformer.resblocks
    return blocks[0]


def _randomise(block, gen):
    for p in block.parameters():  # fresh fan-in-scaled weights, non-trivial biases and LayerNorm affines
        p.data = torch.randn(p.shape, generator=gen) / (p.shape[-1] ** 0.5 if p.dim() > 1 else 2.0)


@pytest.mark.parametrize("case", ["vision", "text (causal)", "cross-attention"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_block_matches_open_clips_block(tiny_model, case, dtype):
    gen = torch.Generator().manual_seed(0)
    ref_block = _block(tiny_model, "vision" if case == "vision" else "text")
    _randomise(ref_block, gen)
    block = ref_block.to(dtype).requires_grad_(True)
    width = block.ln_1.normalized_shape[0]
    x = torch.randn(3, 7, width, generator=gen).to(dtype).requires_grad_()
    memory = torch.randn(3, 4, width, generator=gen).to(dtype).requires_grad_() if case == "cross-attention" else None
    mask = tiny_model.clip.attn_mask[:7, :7].to(dtype) if case.startswith("text") else None
    grad = torch.randn(x.shape, generator=gen).to(dtype)

    def gradients(fn):
        for t in (x, memory, *block.parameters()):
            if t is not None:
                t.grad = None
        out = fn()
        out.backward(grad)
        return out.detach().double(), [None if t.grad is None else t.grad.double() for t in (x, memory, *block.parameters()) if t is not None]

    ours, our_grads = gradients(lambda: run_block(block, x, NO_ADAPTERS, causal=mask is not None, memory=memory))
    if dtype == torch.bfloat16:  # the reference in fp64, from the same bf16 values
        block.double()
        x_ref = x.detach().double().requires_grad_()
        mem_ref = None if memory is None else memory.detach().double().requires_grad_()
        x, memory, mask, grad = x_ref, mem_ref, None if mask is None else mask.double(), grad.double()
    def reference():  # open_clip's forward cross-attends only through an ln_1_kv: then its pieces, ln_1(memory)
        if memory is None:
            return block(x, attn_mask=mask)
        return released_block(block, x, NO_ADAPTERS, memory=memory)

    ref, ref_grads = gradients(reference)
    tol = 1e-10 if dtype == torch.float64 else BF16_TOL
    assert rel_err(ours, ref) < tol
    for i, (a, b) in enumerate(zip(our_grads, ref_grads)):
        assert (a is None) == (b is None), i  # the same tensors take gradients
        assert a is None or rel_err(a, b) < tol, (i, rel_err(a, b))


def test_frozen_towers_stored_in_the_compute_dtype_give_the_fp32_losses(tiny_model, masker):
    """bf16 frozen weights under bf16 autocast: the fp32 model's losses within bf16 tolerance; trainable weights and
    logit_scale stay fp32; the state dict keeps its keys."""
    from .conftest import randomize_adapters

    randomize_adapters(tiny_model)
    labels = torch.tensor([0, 1])
    video = torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    args = (video, labels, masker.class_tokens(), *masker(labels, rate=1.0, generator=torch.Generator().manual_seed(0)))
    reference = tiny_model.compute_losses(*args)
    keys = set(tiny_model.state_dict())
    tiny_model.store_frozen_in(torch.bfloat16)
    assert set(tiny_model.state_dict()) == keys and tiny_model.clip.logit_scale.dtype == torch.float32
    for name, p in tiny_model.named_parameters():
        expected = torch.float32 if p.requires_grad or p.dim() == 0 else torch.bfloat16
        assert p.dtype == expected, name
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = tiny_model.compute_losses(*args)
    for k in reference:
        assert abs(losses[k].item() - reference[k].item()) <= BF16_TOL * max(1.0, abs(reference[k].item())), k
    losses["total"].backward()
    trainable = [p for p in tiny_model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainable)


def test_a_text_tower_without_the_causal_mask_is_refused(tiny_cfg):
    clip = m2.factory.create_clip(tiny_cfg.backbone)
    clip.attn_mask = torch.zeros_like(clip.attn_mask)
    with pytest.raises(ValueError, match="causal attention mask"):
        m2.M2CLIP(tiny_cfg, clip)


@pytest.mark.parametrize("case", ["vision", "text (causal)", "cross-attention"])
def test_fused_block_matches_open_clips_block(tiny_model, kernel_device, case):
    """The frozen block of a fused model (its LayerNorms through ``kernels.add_layer_norm``) against open_clip's
    forward in fp64 from the same fp32 values: the output and the gradients of x and memory."""
    import kernels

    gen = torch.Generator().manual_seed(1)
    block = _block(tiny_model, "vision" if case == "vision" else "text")
    _randomise(block, gen)
    block.requires_grad_(False).to(kernel_device)
    width = block.ln_1.normalized_shape[0]
    inputs = [torch.randn(3, 7, width, generator=gen)]
    if case == "cross-attention":
        inputs.append(torch.randn(3, 4, width, generator=gen))
    causal = case.startswith("text")
    grad = torch.randn(3, 7, width, generator=gen)
    leaves = [t.to(kernel_device, copy=True).requires_grad_() for t in inputs]
    launches = kernels.launch_counts["layer_norm_bwd"]
    out = run_block(block, leaves[0], BlockAdapters(lambda: None, (), "fused"), causal=causal,
                    memory=leaves[1] if len(leaves) > 1 else None)
    out.backward(grad.to(kernel_device))
    assert kernels.launch_counts["layer_norm_bwd"] == launches + 2  # ln_1 and ln_2 ran the kernels

    block.double().cpu()  # the reference in fp64 on the CPU
    ref_leaves = [t.double().requires_grad_() for t in inputs]
    x, memory = ref_leaves[0], ref_leaves[1] if len(ref_leaves) > 1 else None
    mask = tiny_model.clip.attn_mask[:7, :7].double() if causal else None
    ref = block(x, attn_mask=mask) if memory is None else released_block(block, x, NO_ADAPTERS, memory=memory)
    ref.backward(grad.double())
    assert rel_err(out.double().cpu(), ref) < 1e-5
    for ours, theirs in zip(leaves, ref_leaves):
        assert rel_err(ours.grad.double().cpu(), theirs.grad) < 1e-5


@pytest.mark.parametrize("backend", ["eager", "fused"])
def test_a_tower_of_blocks_matches_open_clips_blocks_in_turn(tiny_model, kernel_device, backend):
    """``run_blocks`` leaves each block's MLP add to the next block's ``ln_1``: the tower's output and input
    gradient are open_clip's blocks applied in turn (fp32 against fp64)."""
    from m2clip_fast.blocks import run_blocks

    gen = torch.Generator().manual_seed(2)
    blocks = tiny_model.clip.visual.transformer.resblocks
    for block in blocks:
        _randomise(block, gen)
    blocks.requires_grad_(False)
    x = torch.randn(3, 7, blocks[0].ln_1.normalized_shape[0], generator=gen)
    grad = torch.randn(x.shape, generator=gen)
    ours = x.clone().requires_grad_()
    out = run_blocks(blocks, [BlockAdapters(lambda: None, (), backend) for _ in blocks], ours)
    out.backward(grad)
    blocks.double()
    ref = x.double().requires_grad_()
    expected = ref
    for block in blocks:
        expected = block(expected)
    expected.backward(grad.double())
    assert rel_err(out.double(), expected) < 1e-5
    assert rel_err(ours.grad.double(), ref.grad) < 1e-5
