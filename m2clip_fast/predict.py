"""Open-vocabulary prediction: score a video against any free-text labels.

    python -m m2clip_fast.predict VIDEO --checkpoint runs/synthetic/best.pt --labels "moving left,moving up"
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Mapping, Optional, Sequence

import torch

from . import run_state
from .data import FrameSampling, VideoDataset, VideoRecord, read_class_names
from .data.device import device_input
from .distributed import device_problem
from .engine import class_embeddings, view_probabilities
from .model import M2CLIP
from .prompts import class_prompts

PREDICT_DEFAULTS = {"sampling": "segment", "sampling_rate": 16, "views": "1x1"}


@torch.no_grad()
def predict(model: M2CLIP, video_path: str, labels: Sequence[str], top_k: int = 5,
            settings: Optional[Mapping] = None) -> list[tuple[str, float]]:
    """The ``top_k`` labels for the video at ``video_path`` with their probabilities, from the cross-modal
    head: the clip is decoded, sampled and cropped exactly as evaluation does it, and scored by the same
    rule (:func:`m2clip_fast.engine.view_probabilities`) against ``"A video of {label}"``. ``settings``: the
    data settings of a checkpoint (``sampling``, ``sampling_rate``, ``views``); by default one clip of
    ``T`` segment samples spread over the whole video, one centre view."""
    if not labels:
        raise ValueError("give at least one label")
    model.eval()
    device = next(model.parameters()).device
    s = {**PREDICT_DEFAULTS, **{k: v for k, v in (settings or {}).items() if k in PREDICT_DEFAULTS}}
    spatial, temporal = (int(v) for v in str(s["views"]).lower().split("x"))
    frames = FrameSampling(model.cfg.num_frames, s["sampling"], s["sampling_rate"])
    dataset = VideoDataset([VideoRecord(video_path, 0)], frames, model.image_size[0], train=False,
                           views=(spatial, temporal))
    item = dataset[0]
    if not item["readable"]:
        raise ValueError(f"cannot read the video: {item['unreadable']}")
    if item["short"]:
        print(f"note: {item['short']}", file=sys.stderr, flush=True)
    prompts = class_prompts(model, labels, device, contextlib.nullcontext)
    class_emb = class_embeddings(model, prompts, contextlib.nullcontext)
    probs = view_probabilities(model, device_input({"video": item["video"][None]}, device), class_emb, contextlib.nullcontext,
                               visual_head=False)["crossmodal"][0]
    top = probs.topk(min(top_k, len(labels)))
    return [(labels[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m m2clip_fast.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", help="a video file (anything decord reads)")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by train.py (best.pt / last.pt)")
    p.add_argument("--labels", help="comma-separated free-text labels")
    p.add_argument("--classes", help="an 'id,name' class CSV (default: the checkpoint's classes)")
    p.add_argument("--top-k", type=int, default=5, help="how many labels to print")
    p.add_argument("--use-fused", action="store_true", help="fused Triton adapters (CUDA), as train.py's flag")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="'cpu', 'cuda' or 'cuda:N'")
    args = p.parse_args(argv)
    if os.path.isdir(args.video):
        p.error(f"{args.video} is a folder: give one video file")
    if not os.path.isfile(args.video):
        p.error(f"video not found: {args.video}")
    if args.top_k < 1:
        p.error(f"--top-k must be >= 1, got {args.top_k}")
    problem = device_problem(args.device)
    if problem:
        p.error(problem)
    try:
        ckpt = run_state.load(args.checkpoint)
        if args.labels is not None:
            labels = [s.strip() for s in args.labels.split(",") if s.strip()]
            if not labels:
                raise ValueError(f"--labels {args.labels!r} holds no label: give comma-separated labels, or leave "
                                 "--labels out to score the checkpoint's classes")
        else:
            labels = read_class_names(args.classes) if args.classes else list(ckpt["class_names"])
        model = run_state.model_from_checkpoint(ckpt, backend="fused" if args.use_fused else "eager").to(args.device)
        results = predict(model, args.video, labels, args.top_k, settings=ckpt.get("settings"))
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        p.error(str(err))
    width = max(len(label) for label, _ in results)
    for label, prob in results:
        print(f"{label:<{width}}  {100 * prob:6.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
