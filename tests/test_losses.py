import math

import torch

import m2clip_fast as m2


def _log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def _kl_rows(scores, targets):
    total = 0.0
    for s_row, t_row in zip(scores, targets):
        ls = _log_softmax(s_row)
        total += sum(t * (math.log(t) - l) for t, l in zip(t_row, ls) if t > 0)
    return total / len(scores)


def test_contrastive_kl_against_hand_computation():
    v = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    w = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([2, 0, 2])
    scale = 3.0
    s = [[scale * sum(a * b for a, b in zip(v[i].tolist(), w[j].tolist())) for j in range(3)] for i in range(3)]
    g = [[10.0 * (labels[i] == labels[j]).item() for j in range(3)] for i in range(3)]
    t = [[math.exp(x) / sum(math.exp(y) for y in row) for x in row] for row in g]
    st = [list(col) for col in zip(*s)]
    expected = 0.5 * (_kl_rows(s, t) + _kl_rows(st, t))
    got = m2.contrastive_kl_loss(v, w, labels, torch.tensor(scale))
    assert abs(got.item() - expected) < 1e-5


def test_crossmodal_both_variants_against_hand_computation():
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    w = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([1, 2])
    logits = [[100 * x for x in row] for row in (v @ w.t()).tolist()]
    ce_logits = -sum(_log_softmax(row)[y] for row, y in zip(logits, labels.tolist())) / 2
    probs = [[math.exp(l) for l in _log_softmax(row)] for row in logits]
    ce_released = -sum(_log_softmax(row)[y] for row, y in zip(probs, labels.tolist())) / 2
    got_logits = m2.crossmodal_classification_loss(v, w, labels, 100.0, "logits")
    got_released = m2.crossmodal_classification_loss(v, w, labels, 100.0, "released")
    assert abs(got_logits.item() - ce_logits) < 1e-4
    assert abs(got_released.item() - ce_released) < 1e-5


def test_masked_lm_loss_against_hand_computation():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]], [[1.0, 3.0, 0.0], [0.5, 0.5, 4.0]]])
    labels = torch.tensor([[0, -100], [-100, 2]])
    expected = -(_log_softmax([2.0, 0.0, -1.0])[0] + _log_softmax([0.5, 0.5, 4.0])[2]) / 2
    assert abs(m2.masked_lm_loss(logits, labels).item() - expected) < 1e-6


def test_masked_lm_loss_without_targets_is_zero_with_a_gradient():
    logits = torch.randn(2, 4, 5, requires_grad=True)
    loss = m2.masked_lm_loss(logits, torch.full((2, 4), -100))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
