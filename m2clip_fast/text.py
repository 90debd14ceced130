"""Prompt text, tokenisation, the word-level MLM vocabulary and class-word masking (no model needed; the
prompts a model scores against are :mod:`m2clip_fast.prompts`)."""
from __future__ import annotations

import re
from typing import Optional, Sequence

import torch
from open_clip.tokenizer import SimpleTokenizer

from .losses import IGNORE_INDEX

PROMPT_TEMPLATE = "A video of {}"
SPECIAL_WORDS = ("[PAD]", "[UNK]", "[MASK]")
_tokenizer: Optional[SimpleTokenizer] = None


def get_tokenizer() -> SimpleTokenizer:
    """open_clip's CLIP BPE tokenizer (its vocabulary ships inside the package: nothing is downloaded)."""
    global _tokenizer
    if _tokenizer is None:
        _tokenizer = SimpleTokenizer()
    return _tokenizer


def format_prompts(class_names: Sequence[str], template: str = PROMPT_TEMPLATE) -> list[str]:
    """``["A video of abseiling", ...]``."""
    return [template.format(name) for name in class_names]


def truncate_to_longest(tokens: torch.Tensor) -> torch.Tensor:
    """Drop the padding columns past the longest sequence. Exact for CLIP: the text mask is causal.

    tokens ``[N, 77]`` (0 = padding) -> ``[N, S]``.
    """
    length = int((tokens != 0).sum(dim=1).max().item()) if tokens.numel() else 1
    return tokens[:, : max(length, 1)].contiguous()


def tokenize(texts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """Tokenise with open_clip's tokenizer and truncate to the longest text: ``[N, S]`` int64."""
    return truncate_to_longest(get_tokenizer()(list(texts), context_length=context_length))


def normalize_word(piece: str) -> str:
    """``"(not" -> "not"``, ``"Person's" -> "person's"``; punctuation-only pieces give ``""``."""
    return re.sub(r"^[^\w']+|[^\w']+$", "", piece.lower())


class MLMVocabulary:
    """Word-level vocabulary of the MLM head: ``[PAD] [UNK] [MASK]`` then the sorted class-name words.
    Kinetics-400's class names give 517 words, 520 entries in all."""

    def __init__(self, words: Sequence[str]) -> None:
        self.words = list(SPECIAL_WORDS) + sorted(set(words) - set(SPECIAL_WORDS))
        self._index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def from_class_names(cls, class_names: Sequence[str]) -> "MLMVocabulary":
        return cls([w for name in class_names for w in map(normalize_word, name.split()) if w])

    def __len__(self) -> int:
        return len(self.words)

    def index(self, word: str) -> int:
        return self._index.get(normalize_word(word), self._index["[UNK]"])


class PromptMasker:
    """Builds masked class prompts for the MLM head.

    Each prompt is tokenised piece by piece (whitespace never joins BPE tokens, so the result equals
    tokenising the whole prompt); only class-name words are maskable, never template words. A masked
    word has all its BPE tokens replaced by ``mask_token_id`` (an existing token: no new parameter) and
    its vocabulary id as the target at its first token; every other target is ``-100``.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        vocab: MLMVocabulary,
        mask_token_id: Optional[int] = None,
        template: str = PROMPT_TEMPLATE,
        context_length: int = 77,
    ) -> None:
        tok = get_tokenizer()
        self.mask_token_id = tok.encode("mask")[0] if mask_token_id is None else int(mask_token_id)
        before, _, after = template.partition("{}")
        self._prompts: list[tuple[list[int], list[tuple[int, int, int]]]] = []
        for name in class_names:
            ids, words = [tok.sot_token_id], []
            for text, maskable in ((before, False), (name, True), (after, False)):
                for piece in text.split():
                    piece_ids = tok.encode(piece)
                    if maskable and normalize_word(piece):
                        words.append((len(ids), len(ids) + len(piece_ids), vocab.index(piece)))
                    ids += piece_ids
            ids.append(tok.eot_token_id)
            if len(ids) > context_length:
                raise ValueError(f"prompt for {name!r} has {len(ids)} tokens; the context holds {context_length}")
            self._prompts.append((ids, words))
        self.seq_len = max(len(ids) for ids, _ in self._prompts)

    def class_tokens(self) -> torch.Tensor:
        """Unmasked prompts of all classes ``[K, S]``."""
        out = torch.zeros(len(self._prompts), self.seq_len, dtype=torch.long)
        for k, (ids, _) in enumerate(self._prompts):
            out[k, : len(ids)] = torch.tensor(ids)
        return out

    def __call__(
        self, labels: torch.Tensor, rate: float, generator: Optional[torch.Generator] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked prompts of the given classes: (mlm_tokens ``[B, S]``, mlm_labels ``[B, S]``)."""
        tokens = self.class_tokens()[labels.cpu()]
        targets = torch.full_like(tokens, IGNORE_INDEX)
        for i, label in enumerate(labels.tolist()):
            words = self._prompts[label][1]
            chosen = torch.rand(len(words), generator=generator) < rate
            for (start, end, word_id), masked in zip(words, chosen.tolist()):
                if masked:
                    tokens[i, start:end] = self.mask_token_id
                    targets[i, start] = word_id
        return tokens.to(labels.device), targets.to(labels.device)
