"""The TED-Adapter's six GEMMs as each backend runs them, for ``benchmarks/test_gemms.py`` and its CPU dry run, on the
op's operands (:mod:`kernels.ops.ted_adapter`): the biases, the CLS-gated one too, in an augmented K — ``h`` with a
column of ones and one of the patch gate, ``W_aug = [W2ᵀ; W4ᵀ; b2; b4; 0…]`` as the parameters are packed — so that
no GEMM has an epilogue beyond the residual, and the bias gradients come out of ``dW_aug = hᵀ·dout``. Backends:
ours (our Triton GEMM, the residual in its epilogue, split-K partials for the weight gradients), cuBLAS (``mm`` /
``addmm``, the residual as ``addmm``'s addend; what the op runs) and the persistent TMA candidate
(:mod:`benchmarks.persistent_gemm`: the residual in its epilogue, the weight gradients split along K into fp32
partials and summed). The names are the math, as the committed results of earlier layouts name it too."""
from __future__ import annotations

from typing import Callable

import torch

from kernels.packing import AUX_COLUMNS

from .persistent_gemm import TILES, Tiles, persistent_gemm, split_for


def operands(R: int, C: int, Ca: int, tokens: int, device="cuda", dtype=torch.bfloat16) -> dict:
    """The GEMMs' inputs at ``R`` rows of ``tokens`` tokens (CLS first), width ``C``, bottleneck ``Ca``."""
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: (torch.randn(*shape, generator=g) * 0.1).to(device, dtype)  # noqa: E731
    ops = dict(x=rand(R, C), dout=rand(R, C), h=rand(R, 2 * Ca), dz=rand(R, 2 * Ca), w_in=rand(2 * Ca, C),
               w_out=rand(2, C, Ca), b2=rand(C), b4=rand(C), tokens=tokens)
    aux = torch.zeros(R, AUX_COLUMNS, device=device, dtype=dtype)
    aux[:, 0], aux[:, 1] = 1, (torch.arange(R, device=device) % tokens != 0).to(dtype)  # ones, the patch gate
    ops["h_aug"] = torch.cat([ops["h"], aux], dim=1)  # as the stencil writes it
    zeros = torch.zeros(AUX_COLUMNS - 2, C, device=device, dtype=dtype)
    ops["w_aug"] = torch.cat([ops["w_out"][0].t(), ops["w_out"][1].t(), ops["b2"][None], ops["b4"][None], zeros])
    return ops


def triton_gemms(o: dict) -> dict[str, Callable[[], object]]:
    from kernels.primitives.gemm import gemm, split_k_for
    from kernels.primitives.reduce import Partials

    x, dout, h_aug, dz, w_in, w_aug = o["x"], o["dout"], o["h_aug"], o["dz"], o["w_in"], o["w_aug"]
    R, C = x.shape
    width = w_in.shape[0]
    split_in, split_out = split_k_for(width, C, R, x.device), split_k_for(w_aug.shape[0], C, R, x.device)
    parts = Partials([(split_in, w_in.numel()), (split_out, w_aug.numel())], x.device, torch.bfloat16)
    return {
        "in: z = x·W_inᵀ": lambda: gemm(x, w_in.t(), dot=w_in.dtype),
        "out: x + h·W_outᵀ + b2 + gated b4": lambda: gemm(h_aug, w_aug, residual=x, dot=w_aug.dtype),
        "dh = dout·W_out": lambda: gemm(dout, w_aug[:width].t(), dot=w_aug.dtype),
        "dW_out = doutᵀ·h": lambda: gemm(h_aug.t(), dout, out=parts.part(1).view(split_out, *w_aug.shape),
                                        split_k=split_out, dot=w_aug.dtype),
        "dx = dout + dz·W_in (+ b2/b4 sums)": lambda: gemm(dz, w_in, residual=dout, dot=w_in.dtype),
        "dW_in = dzᵀ·x": lambda: gemm(dz.t(), x, out=parts.part(0).view(split_in, *w_in.shape), split_k=split_in,
                                     dot=w_in.dtype),
        "split-K partial sums": lambda: parts.sum(),
    }


def cublas_gemms(o: dict) -> dict[str, Callable[[], object]]:
    x, dout, h_aug, dz, w_in, w_aug = o["x"], o["dout"], o["h_aug"], o["dz"], o["w_in"], o["w_aug"]
    width = w_in.shape[0]
    return {
        "in: z = x·W_inᵀ": lambda: torch.mm(x, w_in.t()),
        "out: x + h·W_outᵀ + b2 + gated b4": lambda: torch.addmm(x, h_aug, w_aug),
        "dh = dout·W_out": lambda: torch.mm(dout, w_aug[:width].t()),
        "dW_out = doutᵀ·h": lambda: torch.mm(h_aug.t(), dout),  # [dW2ᵀ; dW4ᵀ; db2; db4; 0…]
        "dx = dout + dz·W_in (+ b2/b4 sums)": lambda: torch.addmm(dout, dz, w_in),
        "dW_in = dzᵀ·x": lambda: torch.mm(dz.t(), x),
    }  # no partial sums: cuBLAS reduces its own splits inside the GEMM


def persistent_gemms(o: dict, tiles: Tiles = TILES["128x128"]) -> dict[str, Callable[[], object]]:
    x, dout, h_aug, dz, w_in, w_aug = o["x"], o["dout"], o["h_aug"], o["dz"], o["w_in"], o["w_aug"]
    width = w_in.shape[0]
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 4

    def weight_grad(g: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """gᵀ·other, split along K into enough slices to fill the SMs (few output tiles), partials summed."""
        split = split_for(g.shape[1], other.shape[1], tiles, sms) if x.is_cuda else 1
        out = persistent_gemm(g.t(), other, tiles=tiles, split=split)
        return out.sum(0) if split > 1 else out

    return {
        "in: z = x·W_inᵀ": lambda: persistent_gemm(x, w_in.t(), tiles=tiles),
        "out: x + h·W_outᵀ + b2 + gated b4": lambda: persistent_gemm(h_aug, w_aug, x, tiles),
        "dh = dout·W_out": lambda: persistent_gemm(dout, w_aug[:width].t(), tiles=tiles),
        "dW_out = doutᵀ·h": lambda: weight_grad(dout, h_aug).t(),  # as doutᵀ·h: its split needs M = C tiles
        "dx = dout + dz·W_in (+ b2/b4 sums)": lambda: persistent_gemm(dz, w_in, dout, tiles),
        "dW_in = dzᵀ·x": lambda: weight_grad(dz, x),
    }


BACKENDS = {"triton": triton_gemms, "cublas": cublas_gemms,
            **{f"persistent-{name}": (lambda o, t=t: persistent_gemms(o, t)) for name, t in TILES.items()}}
GEMMS = ["in: z = x·W_inᵀ", "out: x + h·W_outᵀ + b2 + gated b4", "dh = dout·W_out", "dW_out = doutᵀ·h",
         "dx = dout + dz·W_in (+ b2/b4 sums)", "dW_in = dzᵀ·x", "split-K partial sums"]
