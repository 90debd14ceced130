import csv
from importlib.resources import files

import torch

import m2clip_fast as m2
from m2clip_fast.text import get_tokenizer

from .conftest import TINY_CLASSES

K400_CSV = files("m2clip_fast") / "assets" / "kinetics_400_labels.csv"


def _k400_names():
    with K400_CSV.open() as f:
        return [row["name"] for row in csv.DictReader(f)]


def test_piecewise_prompts_equal_open_clip_tokenisation():
    names = _k400_names()
    vocab = m2.MLMVocabulary.from_class_names(names)
    assert len(vocab) == 520  # the released K400 MLM vocabulary size
    masker = m2.PromptMasker(names, vocab)
    expected = m2.tokenize(m2.format_prompts(names))
    assert torch.equal(masker.class_tokens(), expected)
    assert expected.shape[1] <= 24  # short prompts: truncation to the longest is a big saving


def test_truncation_is_to_the_longest_prompt():
    tokens = m2.tokenize(["A video of x", "A video of a much longer class name"])
    assert (tokens[:, -1] != 0).any() and tokens.shape[1] < 77


def test_masking_touches_class_words_only_and_is_reproducible(masker):
    labels = torch.tensor([0, 1, 2, 3] * 8)
    a = masker(labels, rate=0.5, generator=torch.Generator().manual_seed(3))
    b = masker(labels, rate=0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    tokens, targets = a
    clean = masker.class_tokens()[labels]
    template_len = 1 + len(get_tokenizer().encode("A video of"))
    assert torch.equal(tokens[:, :template_len], clean[:, :template_len])  # template never masked
    masked = tokens != clean
    assert masked.any() and (tokens[masked] == masker.mask_token_id).all()
    assert masker.mask_token_id == get_tokenizer().encode("mask")[0]
    # every target sits on a masked token and names the masked word
    vocab = m2.MLMVocabulary.from_class_names(TINY_CLASSES)
    rows, cols = torch.nonzero(targets != -100, as_tuple=True)
    assert len(rows) > 0 and masked[rows, cols].all()
    for r, c in zip(rows.tolist(), cols.tolist()):
        word = get_tokenizer().decode([clean[r, c].item()]).strip()
        assert vocab.words[targets[r, c]].startswith(word)


def test_mask_token_id_is_configurable(masker):
    other = m2.PromptMasker(TINY_CLASSES, m2.MLMVocabulary.from_class_names(TINY_CLASSES), mask_token_id=5)
    tokens, _ = other(torch.tensor([0]), rate=1.0)
    assert (tokens == 5).sum() == 3  # "class", "push", "left": all class-name words
