"""Train and evaluate M2-CLIP. `python train.py --help` for the options; with no arguments, the
built-in synthetic demo (tiny model, CPU, about a minute)."""
import sys

from m2clip_fast.cli import main

if __name__ == "__main__":
    sys.exit(main())
