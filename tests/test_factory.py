"""m2clip_fast/factory.py: CLIP weights from local files (open_clip state dicts, OpenAI archives) and open_clip
tags, and what they seed."""
import warnings

import pytest
import torch
from safetensors.torch import save_file

import m2clip_fast as m2


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
