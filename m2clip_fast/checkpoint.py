"""Deprecated: this module's contents moved to :mod:`m2clip_fast.factory` (``build_model``, ``create_clip``,
``read_state_dict``, ``load_clip_weights``) and :mod:`m2clip_fast.released` (``load_released_checkpoint``,
``released_state_dict``, ``LoadReport``, ``RELEASED_NAMES``). The package-level names are unchanged."""
import warnings

from .factory import build_model, create_clip, load_clip_weights, read_state_dict  # noqa: F401
from .released import RELEASED_NAMES, LoadReport, load_released_checkpoint, released_state_dict  # noqa: F401

warnings.warn("m2clip_fast.checkpoint is deprecated: import from m2clip_fast (or m2clip_fast.factory / "
              "m2clip_fast.released)", DeprecationWarning, stacklevel=2)
