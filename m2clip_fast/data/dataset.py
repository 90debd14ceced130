"""Video classification data: class-name CSVs, ``<path> <label>`` list files, and a decord dataset
that decodes only the sampled frames and replaces unreadable videos."""
from __future__ import annotations

import csv
import functools
import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from . import frame_indices
from .transforms import crop_clip, draw_augment, test_views, train_clip

log = logging.getLogger(__name__)


class UnreadableData(RuntimeError):
    """Too much of a data set could not be read to go on (the message says what to check)."""


@dataclass(frozen=True)
class VideoRecord:
    path: str
    label: int


def read_text_lines(path: str, what: str) -> list[str]:
    """The lines of a UTF-8 text file (a byte-order mark, as spreadsheet programs write, is dropped; CRLF line
    ends are fine). Bytes that are not UTF-8 (a file saved as Latin-1, say) raise ``ValueError`` naming the
    file, the line and the byte."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}" if not os.path.isdir(path)
                                else f"{what} {path} is a folder, not a file")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ValueError(f"{path}:{line}: byte 0x{data[err.start]:02x} at column {column} is not UTF-8 text; save the "
                         "file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    return text.splitlines()


def read_class_names(csv_path: str) -> list[str]:
    """Class names from an ``id,name`` CSV whose ids are ``0..K-1`` (any order)."""
    reader = csv.DictReader(read_text_lines(csv_path, "class list"))
    if reader.fieldnames is None or not {"id", "name"} <= {n.strip() for n in reader.fieldnames}:
        raise ValueError(f"{csv_path}: expected a header 'id,name', got {reader.fieldnames}")
    rows: dict[int, str] = {}
    for row in reader:
        row = {(k or "").strip(): v for k, v in row.items()}
        where = f"{csv_path}:{reader.line_num}"
        ident, name = (row.get("id") or "").strip(), (row.get("name") or "").strip()
        if not ident.isdigit():
            raise ValueError(f"{where}: expected an integer class id, got {ident!r} (rows are 'id,name')")
        if not name:
            raise ValueError(f"{where}: class {ident} has no name (rows are 'id,name')")
        if int(ident) in rows:
            raise ValueError(f"{where}: class id {ident} appears twice")
        rows[int(ident)] = name
    if sorted(rows) != list(range(len(rows))) or not rows:
        raise ValueError(f"{csv_path}: class ids must be 0..K-1 without gaps")
    return [rows[i] for i in range(len(rows))]


def read_video_list(list_file: str, root: str, num_classes: int) -> list[VideoRecord]:
    """``<video path> <label>`` lines (the released format; paths relative to ``root`` may hold spaces).

    A line that repeats an earlier one (same path, same label) is dropped, with a warning that counts them: a
    video is listed once. The same path with two labels is an error naming both lines."""
    records: dict[str, tuple[int, VideoRecord]] = {}
    repeats: list[int] = []
    for lineno, line in enumerate(read_text_lines(list_file, "video list"), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{list_file}:{lineno}: expected '<video path> <label>', got {line.strip()!r}")
        if not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{list_file}:{lineno}: the label must be an integer class id, got {parts[1]!r} "
                             f"(lines are '<video path> <label>')")
        label = int(parts[1])
        if not 0 <= label < num_classes:
            raise ValueError(f"{list_file}:{lineno}: label {label} is out of range for {num_classes} classes")
        path = parts[0].strip()
        if path in records:
            first, seen = records[path]
            if seen.label != label:
                raise ValueError(f"{list_file}:{lineno}: {path} is listed with label {label}, but line {first} "
                                 f"gives it label {seen.label}: a video has one label")
            repeats.append(lineno)
            continue
        records[path] = (lineno, VideoRecord(os.path.join(root, path), label))
    if not records:
        raise ValueError(f"{list_file} lists no videos")
    if repeats:
        log.warning("%s: %d repeated line%s dropped (each video is listed once; first at line %d)", list_file,
                    len(repeats), "" if len(repeats) == 1 else "s", repeats[0])
    return [record for _, record in records.values()]


@functools.lru_cache(maxsize=None)  # one header read per video and worker process, not one per sample
def _probe_size(path: str) -> tuple[int, int]:
    """(height, width) of the first video stream, from the container header (no decoding)."""
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream (audio only?)")
        stream = container.streams.video[0]
        return stream.height, stream.width


def decode_frames(path: str, pick: Callable[[int], np.ndarray], short_side: Optional[int] = None) -> torch.Tensor:
    """Decode only the frames ``pick(num_frames)`` selects. -> uint8 ``[*pick shape, H, W, 3]``.

    ``short_side``: when the video is more than 10% larger, the decoder itself scales it to about this
    short side (aspect kept), so large frames are never materialised at full size. decord (the decord2
    package) decodes; a video it cannot open or misreads (decord 0.6, if installed instead, cannot open AV1
    and misreads some frame widths, e.g. 48 px) is decoded by PyAV instead."""
    import decord

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is a folder, not a video" if os.path.isdir(path) else f"video not found: {path}")
    size = {}
    if short_side is not None:
        h, w = _probe_size(path)
        if min(h, w) > 1.1 * short_side:
            scale = short_side / min(h, w)
            size = {"height": max(short_side, round(h * scale)), "width": max(short_side, round(w * scale))}
    try:
        reader = decord.VideoReader(path, num_threads=1, **size)
        indices = pick(len(reader))
        unique, inverse = np.unique(indices, return_inverse=True)
        frames = torch.from_numpy(reader.get_batch(unique.tolist()).asnumpy())
    except decord.DECORDError:  # a codec it lacks, or one of its own bugs (some frame widths): PyAV instead
        return _decode_with_pyav(path, pick, size)
    return frames[torch.from_numpy(inverse.reshape(-1))].view(*indices.shape, *frames.shape[1:])


def _decode_with_pyav(path: str, pick: Callable[[int], np.ndarray], size: dict) -> torch.Tensor:
    """PyAV (FFmpeg's own decoders) for what decord cannot open: frames are counted from the packets, then
    decoded in order up to the last picked one, keeping only those (scaled by the decoder to ``size``)."""
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream (audio only?)")
        stream = container.streams.video[0]
        count = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
    if count < 1:
        raise ValueError(f"{path}: no video frames")
    indices = pick(count)
    unique, inverse = np.unique(indices, return_inverse=True)
    wanted, kept = set(unique.tolist()), {}
    with av.open(path) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                kept[i] = frame.to_ndarray(format="rgb24", **size)
            if i >= unique[-1]:
                break
    missing = wanted - set(kept)
    if missing:
        raise ValueError(f"{path}: frames {sorted(missing)[:4]} could not be decoded ({len(kept)} of {len(wanted)})")
    frames = torch.from_numpy(np.stack([kept[i] for i in unique.tolist()]))
    return frames[torch.from_numpy(inverse.reshape(-1))].view(*indices.shape, *frames.shape[1:])


@dataclass(frozen=True)
class FrameSampling:
    """Which frames a clip takes: ``num_frames`` of them, ``"dense"`` (every ``rate``-th frame from a random start
    in training, evenly spaced clips in test) or ``"segment"`` (TSN: one frame from each of ``num_frames``
    equal segments)."""

    num_frames: int
    mode: str = "dense"
    rate: int = 16

    def __post_init__(self) -> None:
        if self.mode not in ("dense", "segment"):
            raise ValueError(f"sampling mode must be 'dense' or 'segment', got {self.mode!r}")


@dataclass(frozen=True)
class Augmentation:
    """Training's spatial augmentation: short-side jitter over ``scale_range`` (default crop to 258/224 of it)
    or random-resized crops over ``crop_scale``; horizontal flips; RandAugment (a torchvision module, or a timm
    config string); the resize interpolation."""

    flip: bool = True
    randaugment: Optional[Union[torch.nn.Module, str]] = None
    crop_scale: Optional[tuple[float, float]] = None
    scale_range: Optional[tuple[int, int]] = None
    interpolation: str = "bilinear"


class VideoDataset(Dataset):
    """uint8 clips for training (``train=True``: one cropped clip ``[T, 3, S, S]``) or test (all views
    ``[spatial*temporal, T, 3, S, S]``); :mod:`m2clip_fast.data.device` makes a batch of them the model's input, on the
    device.

    Each item is ``{"video", "label", "skipped", "readable", "unreadable", "short"}``, and in training also the
    clip's augmentation draw, ``"flip"`` and ``"augment_seed"``, which the device step applies on the
    device (with timm's RandAugment the worker applies them and the item has neither). In training an unreadable,
    missing or empty video is replaced by another sample (``skipped`` counts the replacements). In test mode
    it is *not* replaced: the item has ``readable=False`` and a zero video, so that evaluation can exclude
    it and count it — an evaluated set is exactly the listed videos that could be read. ``unreadable``
    names each such video and why, one per line, for the training loop to report in the main process
    (above its progress bar, whatever the worker count). ``short`` says when the video has fewer frames than a
    clip spans (its frames were spread over the whole video, repeated where it has fewer than ``num_frames``).
    Randomness depends only on ``(seed, epoch, index)``, so results do not depend on workers or on resuming.
    """

    def __init__(self, records: list[VideoRecord], frames: FrameSampling, crop_size: int, train: bool,
                 augment: Augmentation = Augmentation(), views: tuple[int, int] = (1, 1), seed: int = 0,
                 max_tries: int = 10) -> None:
        """``frames``: which frames a clip takes; ``augment``: training's crops and flips; ``views``: (spatial,
        temporal) views a test item holds; ``max_tries``: unreadable videos in a row before training gives up."""
        self.records, self.frames, self.crop_size, self.train = records, frames, crop_size, train
        self.augment, self.spatial_views, self.temporal_views = augment, *views
        self.scale_range = augment.scale_range or (crop_size, round(crop_size * 258 / 224))
        self.seed, self.epoch, self.max_tries = seed, 0, max_tries

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _pick(self, rng: np.random.Generator):
        t, stride = self.frames.num_frames, self.frames.rate
        if self.train:
            if self.frames.mode == "dense":
                return lambda n: frame_indices.dense_indices(n, t, stride, rng)
            return lambda n: frame_indices.segment_indices(n, t, rng)
        if self.frames.mode == "dense":
            return lambda n: frame_indices.dense_clips(n, t, stride, self.temporal_views)
        return lambda n: frame_indices.segment_clips(n, t, self.temporal_views)

    @property
    def augments_on_device(self) -> bool:
        """Whether flips and RandAugment wait for the device step (training, unless timm's RandAugment,
        which works on PIL images, makes the workers do it)."""
        return self.train and not isinstance(self.augment.randaugment, str)

    def _span(self) -> int:
        """Frames a clip covers: a dense clip's stride span; TSN segments need ``num_frames``."""
        t = self.frames.num_frames
        return (t - 1) * self.frames.rate + 1 if self.frames.mode == "dense" else t

    def _short_note(self, path: str, count: int) -> str:
        if count >= self._span():
            return ""
        repeats = " (repeating frames)" if count < self.frames.num_frames else ""
        return (f"{path} has {count} frame{'s' * (count != 1)}, fewer than the {self._span()} a clip spans: its "
                f"{self.frames.num_frames} frames were spread over the whole video{repeats}")

    def _load(self, record: VideoRecord, rng: np.random.Generator, gen: torch.Generator) -> dict:
        counted, pick = {}, self._pick(rng)

        def pick_counting(n: int) -> np.ndarray:
            counted["n"] = n
            return pick(n)

        item = self._decode(record, pick_counting, gen)
        return {**item, "short": self._short_note(record.path, counted.get("n", self._span()))}

    def _decode(self, record: VideoRecord, pick: Callable[[int], np.ndarray], gen: torch.Generator) -> dict:
        if self.train:
            short = int(torch.randint(self.scale_range[0], self.scale_range[1] + 1, (1,), generator=gen))
            frames = decode_frames(record.path, pick, short)
            a = self.augment
            if not self.augments_on_device:
                return {"video": train_clip(frames, short, self.crop_size, a.flip, gen, a.randaugment, a.crop_scale,
                                            a.interpolation)}
            clip = crop_clip(frames, short, self.crop_size, gen, a.crop_scale, a.interpolation)
            flipped, seed = draw_augment(a.flip, a.randaugment, gen)
            return {"video": clip.contiguous(), "flip": flipped, "augment_seed": seed}
        frames = decode_frames(record.path, pick, self.crop_size)
        views = [test_views(clip, self.crop_size, self.spatial_views) for clip in frames]  # per temporal clip
        return {"video": torch.cat(views)}

    @property
    def device_randaugment(self) -> Optional[torch.nn.Module]:
        """The RandAugment the device step applies (torchvision's, drawn per clip by the workers), or None."""
        randaugment = self.augment.randaugment
        return randaugment if self.augments_on_device and not isinstance(randaugment, str) else None

    def __getitem__(self, index: int) -> dict:
        seed = [self.seed, self.epoch, index]
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        candidate, problems = index, []
        for attempt in range(self.max_tries):
            record = self.records[candidate]
            try:
                return {**self._load(record, rng, gen), "label": record.label, "skipped": attempt,
                        "readable": True, "unreadable": "\n".join(problems)}
            except Exception as err:  # decord raises its own error types; every failure is reported
                problems.append(f"{record.path} ({type(err).__name__}: {str(err).strip().splitlines()[0][:200]})"
                                if str(err).strip() else f"{record.path} ({type(err).__name__})")
                log.debug("unreadable video %s", problems[-1])
                if not self.train:
                    views = self.spatial_views * self.temporal_views
                    empty = torch.zeros(views, self.frames.num_frames, 3, self.crop_size, self.crop_size,
                                        dtype=torch.uint8)
                    return {"video": empty, "label": record.label, "skipped": 0, "readable": False,
                            "unreadable": problems[0], "short": ""}
                candidate = int(rng.integers(len(self.records)))
        raise UnreadableData(
            f"{self.max_tries} videos in a row were unreadable (last: {record.path}); most of the data set "
            "seems unreadable — check --data-root and the list file"
        )
