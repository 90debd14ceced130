"""Which ``decord`` to depend on: run once with each installed (``pip install decord`` or ``pip install decord2``
— both install ``import decord``) and compare. Prints one JSON line: the decord version, which codecs it
opens (H.264, HEVC, VP9, AV1 clips made with PyAV), and clips/s decoding the data benchmark's videos (8 frames,
dense 8×16 sampling, one thread, scaled to a 256 px short side in the decoder as ``decode_frames`` does).

    python scripts/decoder_study.py VIDEO_DIR    # VIDEO_DIR: the data benchmark's cache (benchmarks/test_data.py)
"""
from __future__ import annotations

import glob
import json
import os
import sys
import tempfile
import time

import numpy as np

CODECS = {"h264": ("libx264", ".mp4"), "hevc": ("libx265", ".mp4"), "vp9": ("libvpx-vp9", ".webm"),
          "av1": ("libsvtav1", ".mp4")}


def make_clip(codec: str, suffix: str, folder: str) -> str:
    """12 frames of 128×64 whose brightness encodes time (made before decord is imported: decord 0.6's bundled
    FFmpeg libraries break PyAV's VP9 encoder once loaded)."""
    import av

    path = os.path.join(folder, f"clip-{codec}{suffix}")
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=8, options={"x265-params": "log-level=error"} if "265" in codec else {})
        stream.width, stream.height, stream.pix_fmt = 128, 64, "yuv420p"
        for t in range(12):
            frame = np.full((64, 128, 3), 40 + 12 * t, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def opens(path: str) -> bool:
    import decord

    try:
        frames = decord.VideoReader(path, num_threads=1).get_batch([1, 9]).asnumpy()
        return abs(float(frames[1].mean()) - 148.0) < 6
    except Exception:
        return False


def clips_per_s(paths: list[str], rounds: int = 3) -> float:
    import decord

    start, clips = time.perf_counter(), 0
    for r in range(rounds):
        for i, path in enumerate(paths):
            probe = decord.VideoReader(path, num_threads=1)
            h, w, _ = probe[0].shape
            scale = 256 / min(h, w)
            reader = decord.VideoReader(path, num_threads=1, width=round(w * scale / 2) * 2,
                                        height=round(h * scale / 2) * 2)
            n = len(reader)
            first = np.random.default_rng([r, i]).integers(0, max(1, n - 8 * 16))
            reader.get_batch(list(range(first, min(n, first + 8 * 16), 16))).asnumpy()
            clips += 1
    return clips / (time.perf_counter() - start)


def main() -> None:
    os.environ["SVT_LOG"] = "1"
    videos = sys.argv[1]
    with tempfile.TemporaryDirectory() as folder:
        clips = {name: make_clip(codec, suffix, folder) for name, (codec, suffix) in CODECS.items()}
        coverage = {name: opens(path) for name, path in clips.items()}
    import decord

    speed = {}
    for name in ("340x256", "1280x720"):
        for version, pattern in (("source", f"{name}-*.mp4"), ("prepared", f"gop16/{name}-*.mp4")):
            paths = sorted(glob.glob(os.path.join(videos, pattern)))
            if paths:
                clips_per_s(paths, rounds=1)  # warm-up
                speed[f"{name} {version}"] = round(clips_per_s(paths), 2)
    print(json.dumps({"decord": decord.__version__, "opens": coverage, "clips_per_s": speed}))


if __name__ == "__main__":
    main()
