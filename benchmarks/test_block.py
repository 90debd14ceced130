"""One CLIP ViT block with its TED-Adapter (K400 placement: before the MLP), forward+backward, per
provider. The block's own weights are frozen, as in M2-CLIP; the adapter and the input get gradients."""
from __future__ import annotations

import pytest
import torch

from .harness import DTYPES, HAS_CUDA, NO_CUDA_REASON, VIT_B16, VIT_L14, copies_for, device_time_ms, rotating
from .cases import COMPILE_MODES, PROVIDERS, QUICK

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA_REASON)


def _block(width, provider):
    from open_clip.transformer import ResidualAttentionBlock

    from m2clip_fast.adapters import BlockAdapters, TEDAdapter
    from m2clip_fast.blocks import run_block

    block = ResidualAttentionBlock(width.C, width.C // 64).cuda().requires_grad_(False)
    adapters = BlockAdapters(lambda: TEDAdapter(width.C, width.Ca, backend="fused" if provider == "fused" else "eager"), ("mlp",)).cuda()
    for p in adapters.parameters():
        torch.nn.init.normal_(p, std=0.02)

    def forward(x, T):
        return run_block(block, x, adapters, adapter_args=(T, width.grid))

    if provider.startswith("compile"):
        forward = torch.compile(forward, mode=COMPILE_MODES[provider], dynamic=False)
    return forward, list(adapters.parameters())


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("width", [VIT_B16] if QUICK else [VIT_B16, VIT_L14], ids=lambda w: w.name)
def test_block_fwdbwd(benchmark, record, width, provider, dtype):
    B, T = 8, 8
    torch.manual_seed(0)
    forward, params = _block(width, provider)
    dt = DTYPES[dtype]
    make = lambda: (torch.randn(B * T, width.L, width.C, device="cuda", dtype=dt).requires_grad_(),)  # noqa: E731
    x0 = make()[0]
    next_x = rotating(make, copies_for(x0.numel() * x0.element_size()))

    def run():
        (x,) = next_x()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dt == torch.bfloat16):
            out = forward(x, T)
        torch.autograd.grad(out, [x, *params], torch.ones_like(out))

    torch.cuda.reset_peak_memory_stats()
    run()
    median_ms = device_time_ms(run)
    row = dict(suite="block", op="vit_block+ted", width=width.name, B=B, T=T, dtype=dtype, provider=provider,
               passes="fwdbwd", median_ms=median_ms, peak_mem_gb=torch.cuda.max_memory_allocated() / 1e9)
    benchmark.group = f"block {width.name} B={B} T={T} {dtype}"
    benchmark.extra_info.update(row)
    benchmark.pedantic(lambda: (run(), torch.cuda.synchronize()), rounds=10, warmup_rounds=2)
    record(row)
