"""The class prompts a model scores against: tokenised on the device with the frozen text prefix computed
once (:func:`class_prompts`), plus the MLM masker for training (:func:`make_prompts`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import torch

from .text import MLMVocabulary, PromptMasker, format_prompts, tokenize

if TYPE_CHECKING:
    from .model import M2CLIP


@dataclass
class Prompts:
    """Class prompts on the device, their cached frozen text prefix, and (for training) the MLM masker."""

    tokens: torch.Tensor  # [K, S]
    prefix: torch.Tensor  # [K, S, W]
    masker: Optional[PromptMasker] = None


def class_prompts(model: "M2CLIP", class_names: Sequence[str], device: torch.device, autocast) -> Prompts:
    """``"A video of {class}"`` for every class, tokenised and with the frozen text prefix computed once —
    what evaluation and prediction score against (no MLM vocabulary needed: any class names work)."""
    tokens = tokenize(format_prompts(class_names), context_length=model.context_length).to(device)
    with torch.no_grad(), autocast():
        prefix = model.text_prefix(tokens)
    return Prompts(tokens, prefix)


def make_prompts(model: "M2CLIP", class_names: list[str], device: torch.device, autocast) -> Prompts:
    """:func:`class_prompts` plus the MLM masker over the classes' words, for training."""
    vocab = MLMVocabulary.from_class_names(class_names)
    if len(vocab) > model.cfg.mlm_vocab_size:
        raise ValueError(f"the class names have {len(vocab)} MLM words; mlm_vocab_size is {model.cfg.mlm_vocab_size}")
    masker = PromptMasker(class_names, vocab, model.cfg.mlm_mask_token_id, context_length=model.context_length)
    prompts = class_prompts(model, class_names, device, autocast)
    assert torch.equal(prompts.tokens.cpu(), masker.class_tokens()), "the masker's prompts must be the scored ones"
    return Prompts(prompts.tokens, prompts.prefix, masker)
