"""Test setup: where the fused kernels run.

Without a CUDA device they run under Triton's interpreter on CPU. ``TRITON_INTERPRET`` is read when a
kernel is decorated, so it is set here, at import time, before the test modules import ``kernels``
(importing torch decorates none). With a CUDA device the compiled kernels run on the GPU; set
``TRITON_INTERPRET=1`` yourself to interpret there instead.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:  # fp32 references round like IEEE fp32: the eager depthwise convs go through cuDNN, TF32 by default
    torch.backends.cudnn.allow_tf32 = False

import numpy  # noqa: E402
import pytest  # noqa: E402
import triton  # noqa: E402

import m2clip_fast as m2  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Where the kernel tests put their tensors: None where the kernels cannot run at all.
KERNEL_DEVICE = "cpu" if INTERPRET else ("cuda" if torch.cuda.is_available() else None)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


if INTERPRET and _version(triton.__version__) < (3, 7) and _version(numpy.__version__) >= (2, 4):
    pytest.exit(f"Triton {triton.__version__}'s interpreter cannot run loops over kernel arguments with NumPy "
                f"{numpy.__version__} (it converts 1-element arrays to int, which NumPy 2.4 made an error): "
                "install triton>=3.7 or numpy<2.4", returncode=4)


def pytest_collection_modifyitems(config, items) -> None:
    """``cuda`` tests skip without a CUDA device; a test that takes ``kernel_device`` runs the kernels
    (marked ``kernels``: the GPU check selects ``-m "cuda or kernels"``)."""
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "kernel_device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kernels)
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)


@pytest.fixture
def kernel_device() -> str:
    """The device the fused-kernel tests run on: "cpu" (interpreter) or "cuda"."""
    if KERNEL_DEVICE is None:
        pytest.skip("TRITON_INTERPRET=0 and no CUDA device: the Triton kernels cannot run here")
    return KERNEL_DEVICE

@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """A small generated motion-direction data set (4 classes; 16 training, 4 validation videos of 12 frames)."""
    from m2clip_fast.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(str(tmp_path_factory.mktemp("demo") / "synthetic"), train_per_class=4,
                                  val_per_class=1, num_frames=12)


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


class RecordOps(TorchDispatchMode):
    """Records the name of every aten op dispatched while active (``names``): what a step runs, op by op."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))
