"""The built-in default data set: real mp4 videos of a square whose classes differ only in the
direction of motion. Opposite directions visit the same positions in reverse order, so a model that
averages frames over time cannot tell them apart."""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np

CLASSES = ("moving left", "moving right", "moving up", "moving down")
VERSION = "v2"  # v2: lossless and byte-identical on every run (v1's lossy x264 output varied between runs)


@dataclass(frozen=True)
class SyntheticPaths:
    root: str
    train_list: str
    val_list: str
    classes_csv: str


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB (even H, W) -> the planar ``[H * 3 // 2, W]`` yuv420p layout (BT.601, limited
    range), computed here so that no library's threaded or SIMD conversion enters the data."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b

    def half(c: np.ndarray) -> np.ndarray:
        return c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).mean((1, 3))

    planes = (y, half(u), half(v))
    return np.concatenate([p.round().clip(0, 255).astype(np.uint8).ravel() for p in planes]).reshape(-1, rgb.shape[1])


def write_mp4(path: str, frames: np.ndarray, fps: int = 8) -> None:
    """uint8 ``[T, H, W, 3]`` (even H, W) -> a lossless H.264 mp4 via PyAV. Lossless (qp 0), from our own
    yuv420p conversion, on one encoder thread: the file is the same bytes on every machine and run (x264's
    lossy decisions and libswscale's conversion are not, which made the demo data differ between runs)."""
    import av

    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"qp": "0", "threads": "1"})
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")))
        container.mux(stream.encode())


def render_motion(label: int, num_frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A bright square crossing a noisy background in direction ``CLASSES[label]``. -> ``[T, S, S, 3]``."""
    side = int(rng.integers(size // 5, size // 3))
    travel = np.linspace(0, size - side, num_frames).round().astype(int)
    if label in (0, 2):  # left / up: travel backwards
        travel = travel[::-1]
    across = int(rng.integers(0, size - side + 1))
    background = rng.integers(0, 60, size=(size, size, 3))
    color = rng.integers(160, 256, size=3)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t, pos in enumerate(travel):
        frame = background + rng.integers(0, 20, size=(size, size, 3))
        y, x = (across, pos) if label in (0, 1) else (pos, across)
        frame[y : y + side, x : x + side] = color
        frames[t] = np.clip(frame, 0, 255)
    return frames


def make_synthetic_dataset(
    root: str, train_per_class: int = 48, val_per_class: int = 16, num_frames: int = 16, size: int = 32, seed: int = 0
) -> SyntheticPaths:
    """Generate the data set into ``root`` once (a later call reuses it). Written to a temporary folder
    and renamed, so an interrupted generation never leaves a half-made data set behind."""
    paths = SyntheticPaths(root, *(os.path.join(root, f) for f in ("train.txt", "val.txt", "classes.csv")))
    if os.path.isfile(os.path.join(root, f"DONE-{VERSION}")):
        return paths
    os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
    print(f"generating the demo data set into {root} (once; about ten seconds)", flush=True)
    tmp = tempfile.mkdtemp(prefix=".synthetic-", dir=os.path.dirname(os.path.abspath(root)))
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(tmp, "videos"))
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        lines = []
        for i in range(per_class * len(CLASSES)):
            label = i % len(CLASSES)
            name = f"videos/{split}_{i:04d}.mp4"
            write_mp4(os.path.join(tmp, name), render_motion(label, num_frames, size, rng))
            lines.append(f"{name} {label}\n")
        with open(os.path.join(tmp, f"{split}.txt"), "w") as f:
            f.writelines(lines)
    with open(os.path.join(tmp, "classes.csv"), "w") as f:
        f.write("id,name\n" + "".join(f"{i},{name}\n" for i, name in enumerate(CLASSES)))
    open(os.path.join(tmp, f"DONE-{VERSION}"), "w").close()
    if os.path.exists(root):
        shutil.rmtree(root)
    os.replace(tmp, root)
    return paths
