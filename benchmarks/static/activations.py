"""What autograd keeps for the backward of one training forward, per provider, counted from the saved tensors."""
from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensorMode


def _kept_mb(provider: str, preset: str, frames: int) -> dict:
    """``per_clip``/``per_step`` megabytes one provider's training forward keeps (see :func:`kept_activations`)."""
    import m2clip_fast as m2
    from kernels.runtime import capture_launches

    classes = [f"action number {i}" for i in range(400)]
    vocab = m2.MLMVocabulary.from_class_names(classes)
    cfg = m2.M2CLIPConfig.preset(preset, num_classes=len(classes), num_frames=frames, mlm_vocab_size=len(vocab))
    torch.manual_seed(0)
    model = m2.build_model(cfg, backend="fused" if provider == "fused" else "eager")
    if provider == "full-finetune":
        model.requires_grad_(True)  # every weight trainable, as benchmarks/test_train_step.py does
    masker = m2.PromptMasker(classes, vocab)
    tokens = masker.class_tokens()
    params = {p.untyped_storage()._cdata for p in model.parameters()}

    def kept(clips: int) -> float:
        storages: dict[int, int] = {}  # by the storage itself: fake tensors have no data pointer

        def keep(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage._cdata not in params:
                storages[storage._cdata] = storage.nbytes()
            return t

        size = model.image_size[0]
        labels = torch.arange(clips) % len(classes)
        mlm = masker(labels, 0.2, torch.Generator().manual_seed(0))
        # Shapes and dtypes only (a real ViT-B/16 forward takes minutes on a CPU); launches captured, not run.
        with FakeTensorMode(allow_non_fake_inputs=True) as mode, capture_launches(lambda *launch: None), \
                torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
            video = torch.randn(clips, 3, frames, size, size)
            model.compute_losses(video, *(mode.from_tensor(t) for t in (labels, tokens, *mlm)))
        return sum(storages.values()) / 1e6

    one, two = kept(1), kept(2)
    return dict(per_clip=two - one, per_step=2 * one - two)


def kept_activations(preset: str = "vit-b16-k400", frames: int = 8) -> dict:
    """Megabytes autograd keeps for the backward of one training forward (bf16 autocast, every class prompt),
    counted from the saved tensors' storages (parameters excluded) on fake tensors at 1 and 2 clips:
    ``per_clip`` (the difference) and ``per_step`` (the rest: the text tower, bf16 copies of frozen weights),
    for fused adapters, eager adapters and full fine-tuning. What it counts is device-independent but for
    attention, whose CPU kernel may keep other tensors than a GPU's. Fused kernels do not run (their launches
    are captured): only what they keep is counted."""
    providers = ("fused", "eager", "full-finetune")
    return dict(preset=preset, frames=frames, **{p: _kept_mb(p, preset, frames) for p in providers})
