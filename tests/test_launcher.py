"""kernels/launcher.py: the remembered launches are checked call by call against Triton's own on a stand-in
sm_90 driver by the static model (tests/test_static_model.py); here, that this Triton still launches the way
the launcher replays, so that a Triton upgrade that changes it is caught rather than quietly slower."""
import torch
import triton

import kernels
from kernels import BranchWeights, launcher

from .parity import branch, cuda


def test_the_installed_triton_launches_the_way_the_launcher_replays():
    assert launcher.replays(), f"Triton {triton.__version__}: JITFunction.run no longer passes every bound argument"


@cuda
def test_cuda_replayed_launches_give_what_triton_launches_give(monkeypatch):
    """On a GPU: a TED-Adapter fwd+bwd whose launches are replayed (the third call: the first learns, the
    second replays) equals, bit for bit, the same call with every launch made by Triton."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * 4, 1 + 12, 64, generator=g).cuda().to(torch.bfloat16)
    te, td = branch(64, 32, (3,), g, "cuda", torch.bfloat16), branch(64, 32, (3, 3), g, "cuda", torch.bfloat16)

    def fwd_bwd():
        leaves = [t.detach().clone().requires_grad_() for t in (x, *te, *td)]
        out = kernels.ted_adapter(leaves[0], 4, (3, 4), BranchWeights(*leaves[1:7]), BranchWeights(*leaves[7:]))
        out.backward(torch.ones_like(out))
        return [out.detach(), *(t.grad for t in leaves)]

    monkeypatch.setattr(launcher, "_known", {})  # nothing remembered yet
    fwd_bwd()
    replayed = fwd_bwd()
    assert launcher._known, "nothing was remembered"
    monkeypatch.setattr(launcher, "replays", lambda: False)
    through_triton = fwd_bwd()
    for a, b in zip(replayed, through_triton):
        assert torch.equal(a, b)
