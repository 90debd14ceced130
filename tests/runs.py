"""Helpers for tests that run train.py end to end on a small generated data set."""
import json
import os


def train_args(data, out, *extra) -> list[str]:
    """A tiny CPU run on ``data`` (a :class:`~m2clip_fast.data.synthetic.SyntheticPaths`) into ``out``."""
    return ["--train-list", data.train_list, "--val-list", data.val_list, "--data-root", data.root,
            "--classes", data.classes_csv, "--preset", "tiny", "--num-frames", "4", "--sampling-rate", "2",
            "--batch-size", "4", "--views", "1x1", "--workers", "0", "--lr", "1e-3", "--output-dir", str(out),
            "--device", "cpu", "--no-flip", *extra]


def records(out) -> list[dict]:
    """The run's ``metrics.jsonl``."""
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]
