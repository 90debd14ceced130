"""Open-vocabulary prediction: score a video against any free-text labels.

    python -m m2clip_fast.predict VIDEO --checkpoint runs/synthetic/best.pt --labels "moving left,moving up"
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from . import checkpointing
from .data import decode_frames, read_class_names
from .data.sampling import segment_clips
from .data.transforms import test_views
from .model import M2CLIP
from .text import format_prompts, tokenize


@torch.no_grad()
def predict(model: M2CLIP, video_path: str, labels: Sequence[str], top_k: int = 5) -> list[tuple[str, float]]:
    """The ``top_k`` labels for the video at ``video_path`` with their probabilities (cross-modal head:
    softmax over ``100·cos(video, "A video of {label}")``). Frames: the middle of ``T`` equal segments."""
    if not labels:
        raise ValueError("give at least one label")
    model.eval()
    device = next(model.parameters()).device
    t = model.cfg.num_frames
    frames = decode_frames(video_path, lambda n: segment_clips(n, t, 1))[0]  # [T, H, W, 3]
    video = test_views(frames, model.image_size[0], 1).to(device)  # [1, 3, T, S, S]
    text = F.normalize(model.encode_text(tokenize(format_prompts(labels)).to(device)).embedding.float(), dim=-1)
    emb = F.normalize(model.encode_video(video).embedding.float(), dim=-1)
    probs = (model.cfg.crossmodal_scale * emb @ text.t()).softmax(-1)[0]
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
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    try:
        ckpt = checkpointing.load(args.checkpoint)
        if args.labels:
            labels = [s.strip() for s in args.labels.split(",") if s.strip()]
        else:
            labels = read_class_names(args.classes) if args.classes else list(ckpt["class_names"])
        on_gpu = args.device.startswith("cuda")  # the fused kernels need CUDA (or the interpreter)
        model = checkpointing.model_from_checkpoint(ckpt, use_fused=None if on_gpu else False).to(args.device)
        results = predict(model, args.video, labels, args.top_k)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        p.error(str(err))
    width = max(len(label) for label, _ in results)
    for label, prob in results:
        print(f"{label:<{width}}  {100 * prob:6.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
