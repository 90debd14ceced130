"""The data pipeline's speed, on generated Kinetics-like videos (10 s at 30 fps, x264 with the encoder's default
keyframe interval, 340×256 and 1280×720), before and after ``python -m m2clip_fast.prepare`` (short side
320, a keyframe every 16 frames), with dense (8 frames, stride 16) and segment sampling:

- ``per-process``: clips/s of one process decoding only the sampled frames, scaled in the decoder, and
  cropping (``VideoDataset.__getitem__``: what one loader worker does);
- ``decode limit``: clips/s of FFmpeg (PyAV) decoding just the same frames, single-threaded, converted to
  RGB at full size — the better of two ways: one forward pass from the keyframe before the first frame to
  the last, or a seek to the keyframe before each frame;
- ``loader``: clips/s end to end through a ``DataLoader`` with ``M2CLIP_BENCH_DATA_WORKERS`` workers
  (default: the CPUs this process may use, at most 4).

Runs on the CPU. ``M2CLIP_BENCH_DATA_VIDEOS`` (default 2) videos per resolution, generated once into the
cache folder.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from m2clip_fast.data import FrameSampling, VideoDataset, VideoRecord, frame_indices
from m2clip_fast.prepare import encode

VIDEOS = int(os.environ.get("M2CLIP_BENCH_DATA_VIDEOS", "2"))
WORKERS = int(os.environ.get("M2CLIP_BENCH_DATA_WORKERS", "0")) or min(4, len(os.sched_getaffinity(0)))
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "m2clip_fast", "bench-data-v1")
SIZES = {"340x256": (340, 256), "1280x720": (1280, 720)}
SAMPLING = {"dense 8x16": ("dense", 16), "segment 8": ("segment", 16)}
# prepare's keyframe interval (frames; 250 is x264's default): M2CLIP_BENCH_DATA_GOPS="8,16,32,250"
GOPS = [int(g) for g in os.environ.get("M2CLIP_BENCH_DATA_GOPS", "8,16,32,250").split(",") if g]
CROP = 224


def _generate(path: str, width: int, height: int, seconds: int = 10, fps: int = 30) -> None:
    """Moving textured blocks (compressible like real video, not static), x264 with its default GOP."""
    import av

    rng = np.random.default_rng(abs(hash(path)) % 2**32)
    texture = rng.integers(0, 255, (height // 8 + 8, width // 8 + 8, 3), dtype=np.uint8)
    with av.open(path + ".partial.mp4", "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(seconds * fps):
            shift = t // 4
            tile = np.roll(texture, (shift, 2 * shift), axis=(0, 1))[: height // 8, : width // 8]
            frame = np.repeat(np.repeat(tile, 8, 0), 8, 1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    os.replace(path + ".partial.mp4", path)


def _prepared(src: str, gop: int) -> str:
    """``src`` re-encoded by ``prepare`` (short side 320, a keyframe every ``gop`` frames), made once."""
    dst = os.path.join(CACHE, f"gop{gop}", os.path.basename(src))
    if not os.path.exists(dst):
        encode(src, dst, short_side=320, gop=gop)
    return dst


@pytest.fixture(scope="module")
def videos() -> dict[tuple[str, str], list[str]]:
    """(resolution, "source" | "prepared") -> video paths, made once into the cache folder."""
    out = {}
    for name, (width, height) in SIZES.items():
        sources, prepared = [], []
        for i in range(VIDEOS):
            src = os.path.join(CACHE, f"{name}-{i}.mp4")
            if not os.path.exists(src):
                os.makedirs(CACHE, exist_ok=True)
                _generate(src, width, height)
            sources.append(src)
            prepared.append(_prepared(src, 16))  # prepare's default
        out[(name, "source")], out[(name, "prepared")] = sources, prepared
    return out


def _indices(mode: str, stride: int, count: int, rng: np.random.Generator) -> np.ndarray:
    return frame_indices.dense_indices(count, 8, stride, rng) if mode == "dense" else frame_indices.segment_indices(count, 8, rng)


def _decode_limit(path: str, indices: np.ndarray, seek_each: bool) -> None:
    """PyAV, one thread: decode the wanted frames (and the ones they depend on), convert them to RGB."""
    import av

    wanted = sorted(set(indices.tolist()))
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        step = 1 / (stream.average_rate * stream.time_base)  # pts per frame
        for index in wanted if seek_each else wanted[:1]:
            container.seek(int(round(index * step)), stream=stream, backward=True)
            for frame in container.decode(stream):
                position = round(frame.pts / step) if frame.pts is not None else -1
                if position in wanted:
                    frame.to_ndarray(format="rgb24")
                if position >= (index if seek_each else wanted[-1]):
                    break


def _per_process(dataset: VideoDataset, rounds: int = 3) -> float:
    """Clips/s of one process going through ``dataset`` ``rounds`` times (a new draw each epoch)."""
    start = time.perf_counter()
    for epoch in range(rounds):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            assert dataset[i]["readable"]
    return rounds * len(dataset) / (time.perf_counter() - start)


@pytest.mark.parametrize("sampling_name", list(SAMPLING))
@pytest.mark.parametrize("version", ["source", "prepared"])
@pytest.mark.parametrize("resolution", list(SIZES))
def test_data(benchmark, record, videos, resolution, version, sampling_name):
    paths = videos[(resolution, version)]
    mode, stride = SAMPLING[sampling_name]
    records = [VideoRecord(p, 0) for p in paths]
    dataset = VideoDataset(records, FrameSampling(8, mode, stride), CROP, train=True, seed=0)
    torch.set_num_threads(1)  # one worker process's share

    def decode_limit(rounds: int = 3) -> float:
        import av

        counts = []
        for p in paths:
            with av.open(p) as container:
                counts.append(container.streams.video[0].frames)
        best = float("inf")
        for seek_each in (False, True):
            start = time.perf_counter()
            for epoch in range(rounds):
                for i, (p, n) in enumerate(zip(paths, counts)):
                    _decode_limit(p, _indices(mode, stride, n, np.random.default_rng([0, epoch, i])), seek_each)
            best = min(best, time.perf_counter() - start)
        return rounds * len(paths) / best

    def loader(rounds: int = 3) -> float:
        many = VideoDataset(records * 4, FrameSampling(8, mode, stride), CROP, train=True, seed=0)
        dl = torch.utils.data.DataLoader(many, batch_size=2, num_workers=WORKERS, persistent_workers=False)
        start = time.perf_counter()
        clips = sum(batch["video"].shape[0] for _ in range(rounds) for batch in dl)
        return clips / (time.perf_counter() - start)

    _per_process(dataset, rounds=1)  # warm-up: imports, header probes
    row = dict(suite="data", op="clips", width=resolution, version=version, sampling=sampling_name, B=0, T=8,
               dtype="uint8", provider="data", passes="-", median_ms=0.0,
               per_process=_per_process(dataset), decode_limit=decode_limit(), loader=loader(), workers=WORKERS)
    row["vs_decode_limit"] = row["decode_limit"] / row["per_process"]
    benchmark.group = f"data {resolution} {version} {sampling_name}"
    benchmark.extra_info.update(row)
    benchmark.pedantic(lambda: dataset[0], rounds=3, warmup_rounds=0)
    record(row)


@pytest.mark.parametrize("sampling_name", list(SAMPLING))
@pytest.mark.parametrize("gop", GOPS)
@pytest.mark.parametrize("resolution", list(SIZES))
def test_prepare_gop(benchmark, record, videos, resolution, gop, sampling_name):
    """``prepare``'s keyframe interval: clips/s of one process and the file size, the same sources re-encoded
    to a 320 px short side with a keyframe every ``gop`` frames (250: x264's default)."""
    mode, stride = SAMPLING[sampling_name]
    paths = [_prepared(src, gop) for src in videos[(resolution, "source")]]
    dataset = VideoDataset([VideoRecord(p, 0) for p in paths], FrameSampling(8, mode, stride), CROP, train=True,
                           seed=0)
    torch.set_num_threads(1)
    _per_process(dataset, rounds=1)  # warm-up
    row = dict(suite="data_gop", op="clips", width=resolution, gop=gop, sampling=sampling_name, B=0, T=8,
               dtype="uint8", provider="data", passes="-", median_ms=0.0, per_process=_per_process(dataset),
               mb_per_minute=sum(os.path.getsize(p) for p in paths) / len(paths) / 1e6 * 6)  # 10 s videos
    benchmark.group = f"data gop {resolution} {gop} {sampling_name}"
    benchmark.extra_info.update(row)
    benchmark.pedantic(lambda: dataset[0], rounds=3, warmup_rounds=0)
    record(row)
