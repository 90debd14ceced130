"""The TED-Adapter's six GEMMs as each backend runs them, for ``benchmarks/test_gemms.py`` and its CPU dry run:
ours (our Triton GEMM with its fused epilogue, split-K partials for the weight gradients), cuBLAS (``mm`` /
``addmm`` with the residual as the ``addmm`` input; the biases, the CLS-gated one too, folded into an
augmented K — ``h`` gains a column of ones and one of the patch gate, ``W_out`` the bias columns — so that their
gradients come out of the weight-gradient GEMM and the dx GEMM needs no column sums), and the persistent TMA
candidate (:mod:`benchmarks.persistent_gemm`, the same augmented K, the residual in its epilogue, the weight
gradients split along K into fp32 partials and summed)."""
from __future__ import annotations

from typing import Callable

import torch

from .persistent_gemm import TILES, Tiles, persistent_gemm, split_for

AUX = 8  # augmented-K columns: ones, the patch gate, zeros to keep rows 16-byte aligned


def operands(R: int, C: int, Ca: int, tokens: int, device="cuda", dtype=torch.bfloat16) -> dict:
    """The GEMMs' inputs at ``R`` rows of ``tokens`` tokens (CLS first), width ``C``, bottleneck ``Ca``."""
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: (torch.randn(*shape, generator=g) * 0.1).to(device, dtype)  # noqa: E731
    ops = dict(x=rand(R, C), dout=rand(R, C), h=rand(R, 2 * Ca), dz=rand(R, 2 * Ca), w_in=rand(2 * Ca, C),
               w_out=rand(2, C, Ca), b2=rand(C), b4=rand(C), tokens=tokens)
    aux = torch.zeros(R, AUX, device=device, dtype=dtype)
    aux[:, 0], aux[:, 1] = 1, (torch.arange(R, device=device) % tokens != 0).to(dtype)  # ones, the patch gate
    ops["h_aug"] = torch.cat([ops["h"], aux], dim=1)  # the stencil would write these columns
    return ops


def _augmented_w_out(o: dict) -> torch.Tensor:
    """``[W2, W4, b2, b4, 0…]`` ``[C, 2Ca + AUX]``: built every step (the parameters change)."""
    C = o["w_out"].shape[1]
    zeros = o["b2"].new_zeros(C, AUX - 2)
    return torch.cat([o["w_out"][0], o["w_out"][1], o["b2"][:, None], o["b4"][:, None], zeros], dim=1)


def triton_gemms(o: dict) -> dict[str, Callable[[], object]]:
    from kernels.primitives.gemm import Blocks, colsum_rows, gemm, split_k_for
    from kernels.primitives.reduce import Partials

    x, dout, h, dz, w_in, w_out = o["x"], o["dout"], o["h"], o["dz"], o["w_in"], o["w_out"]
    R, C = x.shape
    split_in, split_out = split_k_for(w_in.shape[0], C, R, x.device), split_k_for(C, w_in.shape[0], R, x.device)
    parts = Partials([(split_in, w_in.numel()), (split_out, w_out.numel()), (colsum_rows(R), 2 * C)], x.device,
                     torch.bfloat16)
    splits = Partials(parts.segments[:2], x.device, torch.bfloat16)
    return {
        "in: z = x·W_inᵀ": lambda: gemm(x, w_in.t(), dot=w_in.dtype),
        "out: x + h·W_outᵀ + b2 + gated b4": lambda: gemm(h, Blocks(w_out).T, bias=o["b2"], bias2=o["b4"],
                                                         bias2_period=o["tokens"], residual=x, dot=w_out.dtype),
        "dh = dout·W_out": lambda: gemm(dout, Blocks(w_out), dot=w_out.dtype),
        "dW_out = doutᵀ·h": lambda: gemm(dout.t(), h, out=parts.part(1).view(split_out, *w_out.shape),
                                        split_k=split_out, dot=w_out.dtype),
        "dx = dout + dz·W_in (+ b2/b4 sums)": lambda: gemm(dz, w_in, residual=dout, colsum="residual",
                                                          colsum_gated=True, bias2_period=o["tokens"],
                                                          colsum_out=parts.part(2), dot=w_in.dtype),
        "dW_in = dzᵀ·x": lambda: gemm(dz.t(), x, out=parts.part(0).view(split_in, *w_in.shape), split_k=split_in,
                                     dot=w_in.dtype),
        "split-K partial sums": lambda: splits.sum(),
    }


def cublas_gemms(o: dict) -> dict[str, Callable[[], object]]:
    x, dout, h_aug, dz, w_in = o["x"], o["dout"], o["h_aug"], o["dz"], o["w_in"]
    w_aug = _augmented_w_out(o)
    width = 2 * o["w_out"].shape[2]
    return {
        "in: z = x·W_inᵀ": lambda: torch.mm(x, w_in.t()),
        "out: x + h·W_outᵀ + b2 + gated b4": lambda: torch.addmm(x, h_aug, _augmented_w_out(o).t()),
        "dh = dout·W_out": lambda: torch.mm(dout, w_aug[:, :width]),
        "dW_out = doutᵀ·h": lambda: torch.mm(dout.t(), h_aug),  # [dW2 | dW4 | db2 | db4 | 0…]
        "dx = dout + dz·W_in (+ b2/b4 sums)": lambda: torch.addmm(dout, dz, w_in),
        "dW_in = dzᵀ·x": lambda: torch.mm(dz.t(), x),
    }  # no partial sums: cuBLAS reduces its own splits inside the GEMM


def persistent_gemms(o: dict, tiles: Tiles = TILES["128x128"]) -> dict[str, Callable[[], object]]:
    x, dout, h_aug, dz, w_in = o["x"], o["dout"], o["h_aug"], o["dz"], o["w_in"]
    w_aug = _augmented_w_out(o)
    width = 2 * o["w_out"].shape[2]
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 4

    def weight_grad(g: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """gᵀ·other, split along K into enough slices to fill the SMs (few output tiles), partials summed."""
        split = split_for(g.shape[1], other.shape[1], tiles, sms) if x.is_cuda else 1
        out = persistent_gemm(g.t(), other, tiles=tiles, split=split)
        return out.sum(0) if split > 1 else out

    return {
        "in: z = x·W_inᵀ": lambda: persistent_gemm(x, w_in.t(), tiles=tiles),
        "out: x + h·W_outᵀ + b2 + gated b4": lambda: persistent_gemm(h_aug, _augmented_w_out(o).t(), x, tiles),
        "dh = dout·W_out": lambda: persistent_gemm(dout, w_aug[:, :width], tiles=tiles),
        "dW_out = doutᵀ·h": lambda: weight_grad(dout, h_aug),
        "dx = dout + dz·W_in (+ b2/b4 sums)": lambda: persistent_gemm(dz, w_in, dout, tiles),
        "dW_in = dzᵀ·x": lambda: weight_grad(dz, x),
    }


BACKENDS = {"triton": triton_gemms, "cublas": cublas_gemms,
            **{f"persistent-{name}": (lambda o, t=t: persistent_gemms(o, t)) for name, t in TILES.items()}}
GEMMS = ["in: z = x·W_inᵀ", "out: x + h·W_outᵀ + b2 + gated b4", "dh = dout·W_out", "dW_out = doutᵀ·h",
         "dx = dout + dz·W_in (+ b2/b4 sums)", "dW_in = dzᵀ·x", "split-K partial sums"]
