import warnings

import pytest
import torch
from safetensors.torch import save_file

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


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_pretrained_clip_weights_load_and_seed_the_extra_block(tmp_path, tiny_cfg, suffix):
    torch.manual_seed(7)
    source = m2.build_model(tiny_cfg).clip
    path = tmp_path / f"clip{suffix}"
    sd = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(sd, path) if suffix == ".safetensors" else torch.save(sd, path)
    torch.manual_seed(8)
    model = m2.build_model(tiny_cfg, pretrained=path)
    for key, value in source.state_dict().items():
        assert torch.equal(model.clip.state_dict()[key], value), key
    last = source.transformer.resblocks[-1].state_dict()
    for key, value in model.mlm_block.state_dict().items():
        assert torch.equal(value, last[key]), key


def test_pretrained_mismatch_and_missing_file_are_clear(tmp_path, tiny_cfg):
    with pytest.raises(FileNotFoundError, match="is neither a file nor an open_clip tag"):
        m2.build_model(tiny_cfg, pretrained=tmp_path / "nope.pt")
    path = tmp_path / "bad.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="does not fit this backbone"):
        m2.build_model(tiny_cfg, pretrained=path)


def test_pretrained_openai_torchscript_archive(tmp_path, tiny_cfg):
    torch.manual_seed(9)
    source = m2.build_model(tiny_cfg).clip.eval()
    path = tmp_path / "ViT-tiny.pt"
    with warnings.catch_warnings():  # torch.jit is deprecated (Future- or DeprecationWarning by version),
        warnings.simplefilter("ignore")  # but OpenAI's archives are TorchScript
        torch.jit.trace(source, (torch.randn(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long))).save(path)
    model = m2.build_model(tiny_cfg, pretrained=path)
    for key, value in source.state_dict().items():
        assert torch.equal(model.clip.state_dict()[key], value), key



def test_open_clip_pretrained_tags_resolve_through_open_clips_cache_and_say_what_to_do_offline(tmp_path, monkeypatch):
    """A tag goes through open_clip's own download and cache (Hugging Face's layout): a cached file needs no
    network. Nothing cached and no network: the error names the local-file alternative. Never the network."""
    from m2clip_fast.factory import resolve_pretrained

    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: set it where it is used
    with pytest.raises(ValueError, match="give a local file: --pretrained /path/to/ViT-B-16.pt"):
        resolve_pretrained("ViT-B-16-quickgelu", "openai", cache_dir=str(tmp_path))
    snapshot = tmp_path / "models--timm--vit_base_patch16_clip_224.openai" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"weights")
    (tmp_path / "models--timm--vit_base_patch16_clip_224.openai" / "refs").mkdir()
    (tmp_path / "models--timm--vit_base_patch16_clip_224.openai" / "refs" / "main").write_text("0" * 40)
    path = resolve_pretrained("ViT-B-16-quickgelu", "openai", cache_dir=str(tmp_path))
    assert path == str(snapshot / "open_clip_pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="neither a file nor an open_clip tag.*laion2b_s34b_b88k"):
        resolve_pretrained("ViT-B-16", "no-such-tag", cache_dir=str(tmp_path))
