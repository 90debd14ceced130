"""Test setup. TRITON_INTERPRET must be set before anything decorates a Triton kernel, so it is set
here, at import time, before the test modules import ``kernels``."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import m2clip_fast as m2  # noqa: E402

TINY_CLASSES = [f"class {name}" for name in ("push left", "push right", "rotate up", "rotate down")]


@pytest.fixture
def tiny_cfg() -> m2.M2CLIPConfig:
    return m2.M2CLIPConfig.preset("tiny", num_classes=len(TINY_CLASSES), num_frames=3)


@pytest.fixture
def tiny_model(tiny_cfg) -> m2.M2CLIP:
    torch.manual_seed(0)
    return m2.build_model(tiny_cfg).eval()


@pytest.fixture
def masker() -> m2.PromptMasker:
    return m2.PromptMasker(TINY_CLASSES, m2.MLMVocabulary.from_class_names(TINY_CLASSES))


def randomize_adapters(model: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Give every trainable parameter a random value so no adapter is an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
