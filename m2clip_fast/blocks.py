"""The frozen towers' block, run our own way with open_clip's ``ResidualAttentionBlock`` parameters (its own
``forward`` is the reference, ``tests/test_block.py``): LayerNorms at the residual stream's branch points, one
qkv GEMM, ``scaled_dot_product_attention`` on views of it, adapters before attention and/or the MLP
(docs/DESIGN.md §2.4)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from kernels import reference
from kernels.dtypes import compute_dtype

from .adapters import BlockAdapters


def layer_norm(ln: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``ln(x)`` in x's dtype. Autocast lists ``layer_norm`` as fp32: a bf16 ``x`` would be up-cast, normalised
    in fp32, returned in fp32 (and kept in fp32 for the backward); the kernel accumulates in fp32 anyway, so
    only the rounding of the output differs. x ``[..., W]`` -> same shape and dtype."""
    return reference.add_layer_norm(x, ln.weight, ln.bias, ln.eps)[1]


class _PackedProjection(torch.autograd.Function):
    """q, k, v ``[N, L, W]`` = the three thirds of ``x·Wᵀ + b`` (one GEMM; views of its output). Backward,
    ``dx = dq·W_q + dk·W_k + dv·W_v`` accumulated in one buffer (a GEMM and two ``addmm``) instead of autograd's
    stack of dq, dk, dv into ``[N, L, 3W]`` before one GEMM: two passes over ``[N, L, W]`` fewer than the
    stack's write and read of ``[N, L, 3W]``. Where the projection trains (full fine-tuning) dq, dk, dv are
    stacked once for its weight and bias gradients, and the input gradient is one GEMM. x is kept only then.
    Gradients in the incoming gradients' dtype, cast back to their tensors' (as autocast's own casts would)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        w = weight.to(compute_dtype(x))  # cast once (autocast caches a trainable weight's cast), kept for backward
        ctx.save_for_backward(x if weight.requires_grad else None, w)
        ctx.x_shape, ctx.x_dtype, ctx.weight_dtype = x.shape, x.dtype, weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return F.linear(x, w, bias).chunk(3, dim=-1)

    @staticmethod
    def backward(ctx, *grads):
        x, w = ctx.saved_tensors  # w [3W, W] in the compute dtype
        width = ctx.x_shape[-1]
        rows = [g.reshape(-1, width) for g in grads]  # dq, dk, dv [M, W] (an unused one arrives as zeros)
        w = w.to(rows[0].dtype)
        dx = dw = db = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:  # full fine-tuning: one stack serves all three
            stacked = torch.cat(rows, dim=1)  # [M, 3W]
            if ctx.needs_input_grad[0]:
                dx = stacked @ w
            if ctx.needs_input_grad[1]:
                dw = (stacked.t() @ x.reshape(-1, width).to(stacked.dtype)).to(ctx.weight_dtype)
            if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
                db = stacked.sum(0).to(ctx.bias_dtype)
        elif ctx.needs_input_grad[0]:
            dx = rows[0] @ w[:width]
            for g, wi in zip(rows[1:], w[width:].chunk(2)):
                dx = torch.addmm(dx, g, wi)  # out of place: the FLOP counter sees addmm, not addmm_
        return None if dx is None else dx.view(ctx.x_shape).to(ctx.x_dtype), dw, db


def attention(
    attn: nn.MultiheadAttention, x: torch.Tensor, memory: Optional[torch.Tensor] = None, causal: bool = False
) -> torch.Tensor:
    """``attn(x, kv, kv)`` of a batch-first ``nn.MultiheadAttention`` on contiguous rows, same weights: one
    projection GEMM with its bias, ``scaled_dot_product_attention`` on head views of its output (no copies
    forward; backward, the input gradient accumulated from dq, dk, dv: :class:`_PackedProjection`), the output
    projection.

    x ``[N, L, W]`` -> ``[N, L, W]``; memory ``[N, M, W]``: keys/values from it (cross-attention);
    ``causal``: token i sees tokens <= i (the text tower's mask)."""
    n, length, width = x.shape
    heads = attn.num_heads
    if memory is None:
        q, k, v = (t.view(n, length, heads, -1).transpose(1, 2)  # [N, H, L, W/H] views
                   for t in _PackedProjection.apply(x, attn.in_proj_weight, attn.in_proj_bias))
    else:
        w, b = attn.in_proj_weight, attn.in_proj_bias
        q = F.linear(x, w[:width], b[:width]).view(n, length, heads, -1).transpose(1, 2)
        kv = F.linear(memory, w[width:], b[width:]).view(n, memory.shape[1], 2, heads, width // heads)
        k, v = (t.transpose(1, 2) for t in kv.unbind(2))
    dropout = attn.dropout if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)  # [N, H, L, W/H]
    return attn.out_proj(out.transpose(1, 2).reshape(n, length, width))


def _branch(adapters: BlockAdapters, ln: nn.LayerNorm, x: torch.Tensor, residual: Optional[torch.Tensor] = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, ln(h)), h = x + residual, at a branch point of the stream, through the block's ``add_layer_norm``
    (fused: the add in the LayerNorm's forward kernel, the stream's gradient in its backward kernel)."""
    return adapters.ops.add_layer_norm(x, ln.weight, ln.bias, ln.eps, residual)


def _run_block_deferred(
    block: nn.Module,
    x: torch.Tensor,
    branch: Optional[torch.Tensor],
    adapters: BlockAdapters,
    adapter_args: tuple = (),
    causal: bool = False,
    memory: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One block on the stream ``x + branch`` (branch: the previous block's MLP output, or None), whose add
    ``ln_1`` does where no adapter comes before it -> (the stream before the MLP's residual add, the MLP's
    output ``[N, L, W]``), the add left to the caller."""
    if adapters.attn is not None:
        x, branch = adapters.attn(x if branch is None else x + branch, *adapter_args), None
    kv = None if memory is None else layer_norm(block.ln_1, memory)
    x, y = _branch(adapters, block.ln_1, x, branch)
    x = x + block.ls_1(attention(block.attn, y, kv, causal))
    if adapters.mlp is not None:
        x = adapters.mlp(x, *adapter_args)
    x, y = _branch(adapters, block.ln_2, x)
    return x, block.ls_2(block.mlp(y))


def run_block(
    block: nn.Module,
    x: torch.Tensor,
    adapters: BlockAdapters,
    adapter_args: tuple = (),
    causal: bool = False,
    memory: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One open_clip ``ResidualAttentionBlock`` (same parameters; the reference is its own ``forward``) with
    adapters before attention and/or the MLP.

    x ``[N, L, W]``; memory ``[N, M, W]`` turns self-attention into cross-attention (keys/values =
    ``ln_1(memory)``); ``causal``: the text tower's mask. All updates are out of place.
    """
    x, out = _run_block_deferred(block, x, None, adapters, adapter_args, causal, memory)
    return x + out


def run_blocks(blocks: Sequence[nn.Module], adapters: Sequence[BlockAdapters], x: torch.Tensor,
               adapter_args: tuple = (), causal: bool = False, checkpointing: bool = False) -> torch.Tensor:
    """:func:`run_block` of each block in turn, ``x [N, L, W]`` -> ``[N, L, W]``. A block's MLP residual add is
    left to the next block's ``ln_1`` (one kernel, fused). ``checkpointing``: each block's input kept only, its
    activations recomputed in the backward (whole blocks, their adds not deferred)."""
    if checkpointing:
        for block, block_adapters in zip(blocks, adapters):
            x = checkpoint(run_block, block, x, block_adapters, adapter_args, causal, use_reentrant=False)
        return x
    branch = None
    for block, block_adapters in zip(blocks, adapters):
        x, branch = _run_block_deferred(block, x, branch, block_adapters, adapter_args, causal)
    return x if branch is None else x + branch
