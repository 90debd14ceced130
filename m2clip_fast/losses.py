"""The four losses of the multi-task decoder (docs/DESIGN.md §1.3). All return fp32 scalars."""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # MLM targets at positions that are not masked words (cross-entropy skips them)


def contrastive_kl_loss(
    video: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, logit_scale: torch.Tensor, target_scale: float = 10.0
) -> torch.Tensor:
    """½(KL(S, G) + KL(Sᵀ, G)) with ``S = logit_scale·v̂ŵᵀ`` and row targets ``softmax(target_scale·G)``,
    ``G_ij = [y_i == y_j]``; batch-mean KL of log-softmax rows.

    video, text ``[B, D]`` L2-normalised; labels ``[B]``.
    """
    sim = logit_scale.float() * video.float() @ text.float().t()
    same = (labels[:, None] == labels[None, :]).float()
    targets = torch.softmax(target_scale * same, dim=1)

    def kl(scores: torch.Tensor) -> torch.Tensor:
        return F.kl_div(torch.log_softmax(scores, dim=1), targets, reduction="batchmean")

    return 0.5 * (kl(sim) + kl(sim.t()))


def crossmodal_classification_loss(
    video: torch.Tensor, class_text: torch.Tensor, labels: torch.Tensor, scale: float = 100.0, variant: str = "released"
) -> torch.Tensor:
    """Cross-entropy of ``P = scale·v̂Ŵᵀ`` ``[B, K]`` against labels.

    ``variant="released"`` applies the cross-entropy to ``softmax(P)`` as the released code does (a
    double softmax); ``"logits"`` applies it to ``P``.
    """
    logits = scale * video.float() @ class_text.float().t()
    if variant == "released":
        logits = logits.softmax(dim=-1)
    elif variant != "logits":
        raise ValueError(f"variant={variant!r}; expected 'released' or 'logits'")
    return F.cross_entropy(logits, labels)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the masked positions (``labels != -100``); exactly 0 when none is masked.

    logits ``[N, S, V]``, labels ``[N, S]``.
    """
    total = F.cross_entropy(
        logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    count = (labels != IGNORE_INDEX).sum().clamp(min=1)
    return total / count
