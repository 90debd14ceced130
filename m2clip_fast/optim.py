"""Optimiser and schedule of the released recipe: AdamW with no weight decay on biases and norms,
text adapters at half the learning rate; linear warmup per step, then cosine. On a GPU AdamW is the fused
kernel; for a step replayed from a CUDA graph it is also ``capturable``: its step counters and each group's
learning rate live on the device, and the schedule writes the rate there (no host read inside a step)."""
from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, lr: float, weight_decay: float, text_lr_scale: float = 0.5) -> list[dict]:
    """Trainable parameters in four groups: {decay, no decay} × {text adapters, the rest}.
    Biases and 1-D parameters (norms) get no weight decay."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith("text_adapters."), p.dim() >= 2 and not name.endswith(".bias"))
        groups.setdefault(key, []).append(p)
    return [
        {"params": params, "lr": lr * (text_lr_scale if text else 1.0), "weight_decay": weight_decay if decay else 0.0}
        for (text, decay), params in sorted(groups.items())
    ]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, fused: bool, capturable: bool
                    ) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (the fused kernel on a GPU; ``capturable`` for a replayed step). Make the
    schedule next (its base rates stay floats), then :func:`place_state`."""
    return torch.optim.AdamW(param_groups(model, lr, weight_decay), lr=lr, fused=fused or None, capturable=capturable)


def place_state(optimizer: torch.optim.Optimizer, device: torch.device, fused: bool, capturable: bool) -> None:
    """Make ``optimizer`` this run's kind whatever state it was loaded from (a checkpoint of a CPU run, or of a
    captured one): with ``capturable`` each group's learning rate a device tensor (filled by the schedule, read
    by the captured AdamW), otherwise a float; the fused kernel's step counters on the device."""
    for group in optimizer.param_groups:
        group["fused"] = fused or None
        group["capturable"] = capturable
        lr = float(group["lr"])
        group["lr"] = torch.tensor(lr, device=device) if capturable else lr
    if fused or capturable:
        for state in optimizer.state.values():
            if "step" in state:
                state["step"] = state["step"].to(device, torch.float32)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: linear warmup from ~0 over ``warmup_steps``, then cosine to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
