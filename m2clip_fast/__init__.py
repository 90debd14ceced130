"""m2clip_fast: M2-CLIP (AAAI 2024) on open_clip backbones, with fused Triton TED-Adapters."""
from .config import PRESETS, M2CLIPConfig
from .factory import build_model
from .losses import contrastive_kl_loss, crossmodal_classification_loss, masked_lm_loss
from .model import M2CLIP, TextFeatures, VideoFeatures
from .released import LoadReport, load_released_checkpoint, released_state_dict
from .text import MLMVocabulary, PromptMasker, format_prompts, tokenize, truncate_to_longest

__all__ = [
    "M2CLIP", "M2CLIPConfig", "PRESETS", "VideoFeatures", "TextFeatures", "LoadReport",
    "build_model", "load_released_checkpoint", "released_state_dict",
    "contrastive_kl_loss", "crossmodal_classification_loss", "masked_lm_loss",
    "MLMVocabulary", "PromptMasker", "format_prompts", "tokenize", "truncate_to_longest",
]
__version__ = "0.1.0"
