"""Re-encode a data set for fast sparse sampling: every video of a list file to a short side (default 320 px)
and a short keyframe interval (default 16 frames, so seeking to a sampled frame decodes at most 15 others),
H.264, in parallel worker processes.

    python -m m2clip_fast.prepare k400_train.txt --data-root /data/k400 --out /data/k400-320

Resumable: a video whose output exists is skipped, and outputs are written to a temporary name and renamed,
so an interrupted run never leaves a half-written file. Unreadable inputs are reported and skipped, never
fatal. Writes ``<out>/<list name>`` listing the re-encoded videos (relative to ``--out``) with their labels.
"""
from __future__ import annotations

import argparse
import os
import sys
from fractions import Fraction
from concurrent.futures import ProcessPoolExecutor
from typing import Optional, Sequence

from tqdm import tqdm

from .data import read_video_list
from .distributed import available_cpus


def encode(src: str, dst: str, short_side: int = 320, gop: int = 16, crf: int = 23) -> None:
    """``src`` -> ``dst``: H.264 (yuv420p) at ``short_side`` (even sizes, aspect kept; never enlarged), a
    keyframe every ``gop`` frames, the source frame rate; audio dropped. Written atomically."""
    import av

    tmp = f"{dst}.partial{os.path.splitext(dst)[1]}"
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    try:
        with av.open(src) as source, av.open(tmp, "w") as target:
            video = source.streams.video[0]
            scale = min(1.0, short_side / min(video.height, video.width))
            width, height = (max(2, round(d * scale / 2) * 2) for d in (video.width, video.height))
            rate = video.average_rate or Fraction(30)
            stream = target.add_stream("libx264", rate=rate,
                                       options={"crf": str(crf), "g": str(gop), "keyint_min": str(gop),
                                                "sc_threshold": "0", "preset": "veryfast"})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for index, frame in enumerate(source.decode(video=0)):
                frame = frame.reformat(width=width, height=height, format="yuv420p")
                frame.pts, frame.time_base = index, 1 / Fraction(rate)  # frame n at n / rate
                target.mux(stream.encode(frame))
            target.mux(stream.encode())
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _job(args: tuple) -> Optional[str]:
    """Encode one video; returns an error message instead of raising (a broken input is not fatal)."""
    src, dst, short_side, gop = args
    try:
        encode(src, dst, short_side, gop)
        return None
    except Exception as err:  # any decoder/encoder failure: report it, go on
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        return f"{src}: {type(err).__name__}{': ' + detail if detail else ''}"


def prepare(list_file: str, data_root: str, out: str, short_side: int = 320, gop: int = 16,
            workers: Optional[int] = None, progress: bool = True) -> tuple[str, list[str]]:
    """Re-encode the videos of ``list_file`` into ``out``. -> (the new list file, failure messages)."""
    records = read_video_list(list_file, data_root, num_classes=2**31)
    rel = [os.path.relpath(r.path, data_root) if data_root else r.path.lstrip(os.sep) for r in records]
    targets = [os.path.join(out, os.path.splitext(p)[0] + ".mp4") for p in rel]
    todo = [(r.path, t, short_side, gop) for r, t in zip(records, targets) if not os.path.exists(t)]
    failures: list[str] = []
    workers = workers or available_cpus()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for error in tqdm(pool.map(_job, todo, chunksize=4), total=len(todo), disable=not progress,
                          desc="prepare", dynamic_ncols=True):
            if error:
                failures.append(error)
                tqdm.write(f"skipping unreadable video {error}")
    new_list = os.path.join(out, os.path.basename(list_file))
    with open(new_list + ".partial", "w") as f:
        for record, target in zip(records, targets):
            if os.path.exists(target):
                f.write(f"{os.path.relpath(target, out)} {record.label}\n")
    os.replace(new_list + ".partial", new_list)
    return new_list, failures


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m m2clip_fast.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("list_file", help="a '<video path> <label>' list")
    p.add_argument("--data-root", default="", help="the folder the list's paths are relative to")
    p.add_argument("--out", required=True, help="the folder for the re-encoded videos and the new list")
    p.add_argument("--short-side", type=int, default=320, help="short side in pixels (never enlarged) [320]")
    p.add_argument("--gop", type=int, default=16, help="frames between keyframes [16]")
    p.add_argument("--workers", type=int, help="encoder processes [the CPUs this process may use]")
    args = p.parse_args(argv)
    if not os.path.isfile(args.list_file):
        p.error(f"list file not found: {args.list_file}")
    if args.short_side < 2 or args.gop < 1:
        p.error("--short-side must be >= 2 and --gop >= 1")
    if args.workers is not None and args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f"--out {args.out} is a file, not a folder")
    try:
        new_list, failures = prepare(args.list_file, args.data_root, args.out, args.short_side, args.gop,
                                     args.workers)
    except ValueError as err:
        p.error(str(err))
    skipped = f"; {len(failures)} unreadable video{'s' * (len(failures) != 1)} skipped (named above)" if failures else ""
    print(f"wrote {new_list}{skipped}. Train on it with: --train-list {new_list} --data-root {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
