"""m2clip_fast/released.py: the released M2-CLIP code's parameter names, both ways."""
import pytest
import torch

import m2clip_fast as m2

from .conftest import randomize_adapters


def _video(seed=0):
    return torch.randn(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_released_naming_round_trips_and_reproduces_outputs(tiny_cfg, tiny_model, masker):
    randomize_adapters(tiny_model, seed=1)
    released = m2.released_state_dict(tiny_model)
    assert "visual.transformer.resblocks.0.adapter_pre_mlp.offset_adapter.conv.weight" in released
    assert released["visual.transformer.resblocks.0.adapter_pre_mlp.offset_adapter.conv.weight"].dim() == 5
    assert "visual.t_adapter.fc1.weight" in released and "visual.adapter_fc.weight" in released
    assert "transformer.resblocks.2.adapter_pre_mlp.textad_fc1.weight" in released  # the extra block
    assert "transformer.resblocks.2.attn.in_proj_weight" in released
    assert "mlm_adapter.transform.LayerNorm.weight" in released and "mlm_adapter.bias" in released

    torch.manual_seed(123)
    other = m2.build_model(tiny_cfg).eval()
    report = m2.load_released_checkpoint(other, {"module." + k: v for k, v in released.items()})
    assert report.missing == [] and report.unexpected == []
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key

    labels = torch.tensor([1, 2])
    tokens, targets = masker(labels, rate=1.0)
    a = tiny_model.compute_losses(_video(), labels, masker.class_tokens(), tokens, targets)
    b = other.compute_losses(_video(), labels, masker.class_tokens(), tokens, targets)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_released_checkpoint_reports_missing_and_unexpected(tiny_model):
    released = m2.released_state_dict(tiny_model)
    del released["visual.adapter_fc.bias"]
    released["visual.some_new_thing.weight"] = torch.zeros(3)
    with pytest.warns(UserWarning, match="visual_head.bias"):
        report = m2.load_released_checkpoint(tiny_model, released)
    assert report.missing == ["visual_head.bias"]
    assert report.unexpected == ["visual.some_new_thing.weight"]


def test_released_checkpoint_refuses_wrong_shapes(tiny_model):
    released = m2.released_state_dict(tiny_model)
    released["visual.adapter_fc.weight"] = torch.zeros(7, 64)
    with pytest.raises(ValueError, match="visual.adapter_fc.weight.*does not fit visual_head.weight"):
        m2.load_released_checkpoint(tiny_model, released)


def test_released_checkpoint_from_file(tmp_path, tiny_cfg, tiny_model):
    randomize_adapters(tiny_model, seed=2)
    path = tmp_path / "released.pth"
    torch.save({"model": m2.released_state_dict(tiny_model)}, path)
    other = m2.build_model(tiny_cfg)
    m2.load_released_checkpoint(other, path)
    torch.testing.assert_close(other.visual_head.weight, tiny_model.visual_head.weight, rtol=0, atol=0)
