import copy

import pytest
import torch

import m2clip_fast as m2
from m2clip_fast.config import TINY_BACKBONE

from .conftest import TINY_CLASSES, randomize_adapters


def _video(b=2, t=3, size=32, seed=0):
    return torch.randn(b, 3, t, size, size, generator=torch.Generator().manual_seed(seed))


def test_shapes(tiny_model, masker):
    vf = tiny_model.encode_video(_video())
    assert vf.embedding.shape == (2, 64) and vf.frame_embeddings.shape == (2, 3, 64)
    assert vf.class_logits.shape == (2, len(TINY_CLASSES))
    tokens = masker.class_tokens()
    tf = tiny_model.encode_text(tokens)
    assert tf.embedding.shape == (4, 64) and tf.hidden.shape == (4, tokens.shape[1], 64)
    logits = tiny_model.mlm_logits(tf.hidden[:2], vf.frame_embeddings)
    assert logits.shape == (2, tokens.shape[1], tiny_model.cfg.mlm_vocab_size)


def test_fresh_visual_adapters_are_identities(tiny_model):
    video = _video()
    frames = video.permute(0, 2, 1, 3, 4).flatten(0, 1)
    expected = tiny_model.clip.encode_image(frames).view(2, 3, -1)
    torch.testing.assert_close(tiny_model.encode_video(video).frame_embeddings, expected, rtol=1e-5, atol=1e-5)


def test_text_features_match_open_clip_with_adapters_zeroed(tiny_model, masker):
    with torch.no_grad():
        for adapters in tiny_model.text_adapters:
            for a in (adapters.attn, adapters.mlp):
                if a is not None:
                    a.fc2.weight.zero_()
    tokens = masker.class_tokens()
    full = torch.zeros(tokens.shape[0], 77, dtype=torch.long)
    full[:, : tokens.shape[1]] = tokens
    expected = tiny_model.clip.encode_text(full)
    torch.testing.assert_close(tiny_model.encode_text(tokens).embedding, expected, rtol=1e-5, atol=1e-5)


def _count_trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _expected_trainable(C, D, Ca, K, V, vision_blocks, visual_positions, text_adapters):
    branch = lambda conv: (C * Ca + Ca) + conv + (Ca * C + C)  # noqa: E731
    ted = branch(3 * Ca + Ca) + branch(9 * Ca + Ca)
    temporal = (D * (D // 2) + D // 2) + (3 * (D // 2) + D // 2) + ((D // 2) * D + D)
    text = (D * Ca + Ca) + (Ca * D + D)
    mlm = (D * D + D) + 2 * D + V * D + V
    return vision_blocks * visual_positions * ted + temporal + (C * K + K) + text_adapters * text + mlm


@pytest.mark.parametrize(
    "preset, C, D, blocks, visual_positions, text_adapters",
    [
        ("vit-b16-k400", 768, 512, 12, 1, 2),
        ("vit-b16-ssv2", 768, 512, 12, 2, 2 * 13),
        ("vit-l14-k400", 1024, 768, 24, 1, 2),
    ],
)
def test_released_preset_trainable_parameter_counts(preset, C, D, blocks, visual_positions, text_adapters):
    cfg = m2.M2CLIPConfig.preset(preset, num_classes=400, mlm_vocab_size=520)
    model = m2.build_model(cfg)
    expected = _expected_trainable(C, D, 384, 400, 520, blocks, visual_positions, text_adapters)
    assert _count_trainable(model) == expected
    if preset == "vit-b16-k400":
        assert expected == 16_138_136  # the released K400 preset


def test_deep_backbone_runs_every_block():
    backbone = copy.deepcopy(TINY_BACKBONE)
    backbone["vision_cfg"]["layers"] = 24
    model = m2.build_model(m2.M2CLIPConfig.preset("tiny", backbone=backbone, num_frames=2)).eval()
    calls = []
    for block in model.clip.visual.transformer.resblocks:
        block.mlp.register_forward_hook(lambda *_: calls.append(1))
    model.encode_video(_video(1, 2))
    assert len(calls) == 24 and len(model.visual_adapters) == 24


def test_gradients_reach_exactly_the_trainable_parameters(tiny_model, masker):
    randomize_adapters(tiny_model)
    tiny_model.train()
    labels = torch.tensor([0, 2])
    mlm_tokens, mlm_labels = masker(labels, rate=1.0)
    losses = tiny_model.compute_losses(_video(), labels, masker.class_tokens(), mlm_tokens, mlm_labels)
    losses["total"].backward()  # fp32 backward: no in-place residual updates
    # After the last attention, patch tokens never reach the CLS token, so the last block's pre-MLP TD
    # branch (patch tokens only) gets an exact zero gradient (as in the released model).
    last = len(tiny_model.visual_adapters) - 1
    for name, p in tiny_model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            dead = name.startswith(f"visual_adapters.{last}.mlp.td.")
            assert (p.grad.abs().sum() == 0) == dead, name
        else:
            assert p.grad is None, name
    trainable = {n.split(".")[0] for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert trainable == {"visual_adapters", "temporal_adapter", "visual_head", "text_adapters", "mlm_head"}


def test_total_is_the_papers_weighting(tiny_model, masker):
    """L = ½[½(KL_v→t + KL_t→v) + L_xcls] + L_vcls + 0.1·L_mlm (docs/DESIGN.md §1.3), where the
    "contrastive" term is already ½(KL_v→t + KL_t→v): numbers from the paper, not the config's own."""
    labels = torch.tensor([1, 3])
    mlm_tokens, mlm_labels = masker(labels, rate=1.0, generator=torch.Generator().manual_seed(0))
    losses = tiny_model.compute_losses(_video(), labels, masker.class_tokens(), mlm_tokens, mlm_labels)
    assert all(losses[k] > 0 for k in ("contrastive", "crossmodal", "visual", "mlm"))  # every term contributes
    expected = 0.5 * (losses["contrastive"] + losses["crossmodal"]) + losses["visual"] + 0.1 * losses["mlm"]
    torch.testing.assert_close(losses["total"], expected)


def test_mlm_batch_without_masked_words_is_zero(tiny_model, masker):
    labels = torch.tensor([0, 1])
    tokens, targets = masker(labels, rate=0.0)
    assert (targets == -100).all()
    losses = tiny_model.compute_losses(_video(), labels, masker.class_tokens(), tokens, targets)
    assert losses["mlm"].item() == 0.0
    losses["total"].backward()


def test_bf16_autocast_on_cpu(tiny_model, masker):
    """bf16 autocast gives the fp32 losses to bf16 precision, and a backward."""
    randomize_adapters(tiny_model)
    labels = torch.tensor([0, 1])
    args = (_video(), labels, masker.class_tokens(), *masker(labels, rate=1.0, generator=torch.Generator().manual_seed(0)))
    reference = tiny_model.compute_losses(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = tiny_model.compute_losses(*args)
    for k in reference:
        assert abs(losses[k].item() - reference[k].item()) <= 2e-2 * max(1.0, abs(reference[k].item())), k
    losses["total"].backward()


def test_cached_text_prefix_is_exact(tiny_model, masker):
    randomize_adapters(tiny_model)
    tokens = masker.class_tokens()
    with torch.no_grad():
        prefix = tiny_model.text_prefix(tokens)
    assert tiny_model.frozen_text_prefix == 1  # tiny: 2 text blocks, adapters in the last + the extra one
    torch.testing.assert_close(
        tiny_model.encode_text(tokens, prefix).embedding, tiny_model.encode_text(tokens).embedding
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, k: m.encode_video(torch.randn(2, 3, 32, 32)), r"\[B, 3, T, 32, 32\]"),
        (lambda m, k: m.encode_video(torch.randn(1, 3, 2, 48, 48)), r"\[B, 3, T, 32, 32\]"),
        (lambda m, k: m.encode_video(torch.zeros(1, 3, 2, 32, 32, dtype=torch.uint8)), "float"),
        (lambda m, k: m.encode_text(k.float()), "int64"),
        (lambda m, k: m.encode_text(torch.zeros(2, 78, dtype=torch.long)), "S <= 77"),
        (lambda m, k: m.mlm_logits(torch.randn(2, 5, 64), torch.randn(3, 2, 64)), "share N"),
        (lambda m, k: m.compute_losses(_video(), torch.tensor([0, 9]), k), r"labels must lie in \[0, 4\)"),
        (lambda m, k: m.compute_losses(_video(), torch.tensor([0]), k), "labels must be"),
        (lambda m, k: m.compute_losses(_video(), torch.tensor([0, 1]), k[:2]), "class_tokens has 2"),
    ],
)
def test_bad_inputs_raise_clear_errors(tiny_model, masker, call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny_model, masker.class_tokens())


def test_config_validation():
    with pytest.raises(ValueError, match="unknown preset"):
        m2.M2CLIPConfig.preset("vit-h14")
    with pytest.raises(ValueError, match="crossmodal_loss"):
        m2.M2CLIPConfig.preset("tiny", crossmodal_loss="softmax")
    with pytest.raises(ValueError, match="unknown M2CLIPConfig fields"):
        m2.M2CLIPConfig.preset("tiny", adapter_widht=3)
    with pytest.raises(ValueError, match="subset"):
        m2.M2CLIPConfig.preset("tiny", visual_adapter_positions=("ffn",))
