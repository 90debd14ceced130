"""Model configuration: one dataclass, presets as data."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Union

ADAPTER_POSITIONS = ("attn", "mlp")
CROSSMODAL_LOSSES = ("released", "logits")

# A small random-init CLIP for tests and the CPU demo (32 px frames, 4×4 patch grid).
TINY_BACKBONE: dict[str, Any] = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

LEGACY_FIELDS = ("use_fused",)  # in checkpoints of older versions; ignored when read
PRESETS: dict[str, dict[str, Any]] = {
    # TEDs before the MLP of every vision block; text adapters before the MLP of the last regular
    # block and of the extra (MLM) block.
    "vit-b16-k400": dict(backbone="ViT-B-16-quickgelu", num_classes=400),
    # TEDs before attention and MLP; text adapters before attention and MLP of every text block.
    "vit-b16-ssv2": dict(
        backbone="ViT-B-16-quickgelu",
        num_classes=174,
        visual_adapter_positions=("attn", "mlp"),
        text_adapter_positions=("attn", "mlp"),
        text_adapter_last_blocks=None,
    ),
    "vit-b32-k400": dict(backbone="ViT-B-32-quickgelu", num_classes=400),
    "vit-l14-k400": dict(backbone="ViT-L-14-quickgelu", num_classes=400),
    "tiny": dict(backbone=TINY_BACKBONE, num_classes=8, adapter_width=16, mlm_vocab_size=64),
}


@dataclass
class M2CLIPConfig:
    """Everything that defines an M2-CLIP model (see docs/DESIGN.md §1).

    backbone: an open_clip model name (``"ViT-B-16-quickgelu"``) or an open_clip model-config dict
        with ``embed_dim``, ``vision_cfg``, ``text_cfg`` and ``quick_gelu``.
    visual_adapter_positions: where a TED-Adapter sits in every vision block (``"attn"``, ``"mlp"``).
    ted_branches: which halves each TED-Adapter has: both (the method), or ``("te",)`` / ``("td",)``.
    text_adapter_positions / text_adapter_last_blocks: where text adapters sit, and in how many of the
        last text blocks, counting the extra MLM block (``None`` = all blocks).
    crossmodal_loss: ``"released"`` = cross-entropy on softmax probabilities (the released code's
        double softmax, reproduces reported numbers); ``"logits"`` = cross-entropy on the scaled logits.
    mlm_mask_token_id: token id written over masked words; ``None`` = the BPE id of the word "mask"
        (what the released code used). It reuses an existing embedding row: no parameter is added.
    loss_weights: weights of ``contrastive``, ``crossmodal``, ``visual`` and ``mlm`` in ``total``.
    grad_checkpointing: in training, keep only each vision block's input and recompute the block in the
        backward (activations of the frozen blocks are the bulk of memory); same results, less memory.
    """

    backbone: Union[str, dict[str, Any]] = "ViT-B-16-quickgelu"
    num_classes: int = 400
    num_frames: int = 8
    adapter_width: int = 384
    text_adapter_width: Optional[int] = None  # None = adapter_width
    visual_adapter_positions: tuple[str, ...] = ("mlp",)
    ted_branches: tuple[str, ...] = ("te", "td")
    text_adapter_positions: tuple[str, ...] = ("mlp",)
    text_adapter_last_blocks: Optional[int] = 2
    visual_head_dropout: float = 0.5
    mlm_vocab_size: int = 520
    mlm_mask_rate: float = 0.2
    mlm_mask_token_id: Optional[int] = None
    crossmodal_loss: str = "released"
    crossmodal_scale: float = 100.0
    contrastive_target_scale: float = 10.0
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"contrastive": 0.5, "crossmodal": 0.5, "visual": 1.0, "mlm": 0.1}
    )
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        self.visual_adapter_positions = tuple(self.visual_adapter_positions)
        self.text_adapter_positions = tuple(self.text_adapter_positions)
        self.ted_branches = tuple(self.ted_branches)
        if not self.ted_branches or set(self.ted_branches) - {"te", "td"}:
            raise ValueError(f"ted_branches={self.ted_branches}; expected one or both of ('te', 'td')")
        for name in ("visual_adapter_positions", "text_adapter_positions"):
            bad = [p for p in getattr(self, name) if p not in ADAPTER_POSITIONS]
            if bad:
                raise ValueError(f"{name} has {bad}; expected a subset of {ADAPTER_POSITIONS}")
        if self.crossmodal_loss not in CROSSMODAL_LOSSES:
            raise ValueError(f"crossmodal_loss={self.crossmodal_loss!r}; expected one of {CROSSMODAL_LOSSES}")
        for name in ("num_classes", "num_frames", "adapter_width", "mlm_vocab_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.mlm_mask_rate <= 1.0:
            raise ValueError(f"mlm_mask_rate must be in [0, 1], got {self.mlm_mask_rate}")
        missing = {"contrastive", "crossmodal", "visual", "mlm"} - set(self.loss_weights)
        if missing:
            raise ValueError(f"loss_weights lacks {sorted(missing)}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "M2CLIPConfig":
        """A named preset (``vit-b16-k400``, ``vit-b16-ssv2``, ``vit-b32-k400``, ``vit-l14-k400``,
        ``tiny``) with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown M2CLIPConfig fields {sorted(unknown)}")
        return cls(**{**copy.deepcopy(PRESETS[name]), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "M2CLIPConfig":
        """The config saved in a checkpoint; keys of older versions that are not model identity (``use_fused``,
        now the backend chosen at build time) are ignored."""
        return cls(**{k: v for k, v in d.items() if k not in LEGACY_FIELDS})
