"""m2clip_fast/optim.py: the released recipe's parameter groups and the per-step warmup + cosine schedule."""
import math

import pytest
import torch
from torch import nn

from m2clip_fast.optim import param_groups, warmup_cosine


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.text_adapters = nn.ModuleList([nn.Linear(4, 4)])
        self.visual_head = nn.Linear(4, 2)
        self.norm = nn.LayerNorm(4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_param_groups_halve_text_adapters_and_spare_biases_and_norms_weight_decay():
    model = _Toy()
    groups = param_groups(model, lr=1e-3, weight_decay=0.05)
    by_id = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert by_id[id(model.text_adapters[0].weight)] == (5e-4, 0.05)
    assert by_id[id(model.text_adapters[0].bias)] == (5e-4, 0.0)
    assert by_id[id(model.visual_head.weight)] == (1e-3, 0.05)
    assert by_id[id(model.visual_head.bias)] == (1e-3, 0.0)
    assert by_id[id(model.norm.weight)] == (1e-3, 0.0)  # 1-D: a norm, no decay
    assert id(model.frozen.weight) not in by_id and len(by_id) == 6


@pytest.mark.parametrize("step, factor", [(0, 0.25), (3, 1.0), (4, 1.0), (8, 0.5), (10, 0.5 * (1 + math.cos(math.pi * 0.75))),
                                          (12, 0.0), (20, 0.0)])
def test_warmup_then_cosine_per_step(step, factor):
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = warmup_cosine(optimizer, total_steps=12, warmup_steps=4)
    for _ in range(step):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * factor, abs=1e-12)
