"""The whole training step's budgets (issue 21), traced on fake tensors at vit-b16-k400, B=32, 8 frames
(``benchmarks/step_trace.py``; seconds a trace): device kernels and HBM bytes a step, and FLOPs counted the
same way the benchmarks' MFU counts them."""
import pytest

from benchmarks.step_trace import trace_step

BATCH, FRAMES, L, C = 32, 8, 197, 768  # ViT-B/16 at 224 px


@pytest.fixture(scope="module")
def fused_step() -> dict:
    return trace_step("fused", batch=BATCH, frames=FRAMES)


@pytest.fixture(scope="module")
def eager_step() -> dict:
    return trace_step("eager", batch=BATCH, frames=FRAMES)


def _frozen_vision_forward_flops() -> float:
    """Analytic: per frame, 12 blocks of qkv + out projections (4C²) and the MLP (8C²) over L tokens, attention
    (2·L²·C for QKᵀ, as much for PV), and the 16×16 patch embedding."""
    block = 2 * L * 12 * C * C + 4 * L * L * C
    return BATCH * FRAMES * (12 * block + 2 * (L - 1) * 3 * 16 * 16 * C)


def test_a_fused_training_step_launches_at_most_900_kernels(fused_step):
    # CUDA's flash-attention backward is three kernels where the CPU's (traced) is one: +2 a block, 24 a step.
    assert fused_step["device_kernels"] + 24 <= 900, fused_step["device_kernels"]


def test_a_fused_training_step_moves_at_most_100_gb(fused_step):
    """Issue 21's budget: ~99 GB with the residual adds and the stream's gradient sums inside the LayerNorm
    kernels and dq, dk, dv accumulated into the projection's input gradient (docs/DESIGN.md §2.4)."""
    assert fused_step["bytes"] <= 100e9, fused_step["bytes"]


def test_fused_adapters_cut_the_eager_steps_traffic_and_kernels(fused_step, eager_step):
    assert fused_step["bytes"] < 0.6 * eager_step["bytes"], (fused_step["bytes"], eager_step["bytes"])
    assert fused_step["device_kernels"] < 0.6 * eager_step["device_kernels"], (fused_step["device_kernels"], eager_step["device_kernels"])


def test_the_evaluation_forward_counts_the_backbone_and_the_adapters():
    """FLOPs include the Triton GEMMs: the frozen tower's analytic count plus at most the adapters' (two
    [C, 2Ca] GEMMs a block, every token)."""
    forward = trace_step("fused", batch=BATCH, frames=FRAMES, train=False)
    frozen = _frozen_vision_forward_flops()
    adapters = BATCH * FRAMES * 12 * 2 * (2 * L * C * 2 * 384)
    assert frozen < forward["flops"] <= (frozen + adapters) * 1.02, (forward["flops"], frozen, adapters)
    assert forward["device_kernels"] <= 250 and forward["triton_kernels"] > 0


def test_the_fused_steps_roofline_adds_up_and_beats_the_eager_adapters(fused_step, eager_step):
    """The predicted device time by kind sums to the step's, and its FLOPs are the step's (MFU consistent)."""
    for card, roof in fused_step["roofline"].items():
        assert sum(roof["ms_by_kind"].values()) == pytest.approx(roof["ms"])
        assert roof["clips_per_s"] == pytest.approx(BATCH / roof["ms"] * 1e3)
        assert 0 < roof["mfu"] < 1
        assert roof["ms"] < eager_step["roofline"][card]["ms"], card
    assert sum(flops for _, _, flops in fused_step["by_op"].values()) == pytest.approx(fused_step["flops"])
