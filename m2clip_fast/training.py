"""Deprecated location of the command line and the run: use :mod:`m2clip_fast.cli` (``main``,
``resolve_args``, ``build_parser``) and :mod:`m2clip_fast.trainer` (``run``, ``Trainer``). Kept so that
``from m2clip_fast.training import main`` keeps working."""
import sys
import warnings

from .cli import build_parser, main, resolve_args  # noqa: F401
from .trainer import Trainer, run  # noqa: F401

warnings.warn("m2clip_fast.training is deprecated: use m2clip_fast.cli (main, resolve_args) and m2clip_fast.trainer "
              "(run, Trainer)", DeprecationWarning, stacklevel=2)

if __name__ == "__main__":
    sys.exit(main())
