"""Optimiser and schedule of the released recipe: AdamW with no weight decay on biases and norms,
text adapters at half the learning rate; linear warmup per step, then cosine."""
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


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: linear warmup from ~0 over ``warmup_steps``, then cosine to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
