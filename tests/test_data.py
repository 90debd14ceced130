import os

import numpy as np
import pytest
import torch

from m2clip_fast.data import (FrameSampling, VideoDataset, VideoRecord, decode_frames, frame_indices, read_class_names,
                              read_video_list)
from m2clip_fast.data.synthetic import CLASSES, make_synthetic_dataset, render_motion, write_mp4


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    return make_synthetic_dataset(str(tmp_path_factory.mktemp("data") / "synthetic"), train_per_class=3,
                                  val_per_class=2, num_frames=12)


def test_dense_indices():
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = frame_indices.dense_indices(100, 8, 4, rng)
        assert len(idx) == 8 and idx.min() >= 0 and idx.max() < 100 and (np.diff(idx) == 4).all()
    short = frame_indices.dense_indices(10, 8, 4, rng)  # span 29 > 10 frames: evenly over the video
    assert short.tolist() == [0, 1, 3, 4, 5, 6, 8, 9]
    assert frame_indices.dense_indices(1, 4, 2, rng).tolist() == [0, 0, 0, 0]
    clips = frame_indices.dense_clips(100, 8, 4, 3)
    assert clips.shape == (3, 8) and clips[0, 0] == 0 and clips[-1, -1] == 99


def test_segment_indices():
    rng = np.random.default_rng(0)
    idx = frame_indices.segment_indices(80, 8, rng)
    assert ((idx // 10) == np.arange(8)).all()  # one frame in each segment
    assert frame_indices.segment_indices(80, 8, None).tolist() == [5, 15, 25, 35, 45, 55, 65, 75]
    assert frame_indices.segment_indices(3, 6, None).tolist() == [0, 0, 1, 1, 2, 2]
    assert frame_indices.segment_clips(80, 8, 2).shape == (2, 8)
    with pytest.raises(ValueError, match="no frames"):
        frame_indices.segment_indices(0, 8, None)


def test_decoding_returns_the_encoded_frames(tmp_path):
    frames = render_motion(1, 12, 32, np.random.default_rng(3))  # moving right
    path = str(tmp_path / "right.mp4")
    write_mp4(path, frames)
    decoded = decode_frames(path, lambda n: np.arange(n))
    assert decoded.shape == (12, 32, 32, 3) and decoded.dtype == torch.uint8

    def column(f):  # x of the bright square's centre
        return float(np.nonzero(np.asarray(f).max(axis=(0, 2)) > 140)[0].mean())

    assert [round(column(f)) for f in decoded] == [round(column(f)) for f in frames]
    assert all(column(a) < column(b) for a, b in zip(decoded[:-1], decoded[1:]))
    picked = decode_frames(path, lambda n: np.array([[5, 2], [2, 11]]))  # only these, any order, repeats
    assert picked.shape == (2, 2, 32, 32, 3) and torch.equal(picked[0, 1], picked[1, 0])


def test_lists_and_class_csvs(synthetic, tmp_path):
    assert read_class_names(synthetic.classes_csv) == list(CLASSES)
    records = read_video_list(synthetic.train_list, synthetic.root, len(CLASSES))
    assert len(records) == 12 and all(os.path.isfile(r.path) for r in records)
    assert [r.label for r in records] == [i % len(CLASSES) for i in range(12)]  # (bad lists: test_bad_inputs.py)


def test_train_and_test_items(synthetic):
    records = read_video_list(synthetic.train_list, synthetic.root, len(CLASSES))
    train = VideoDataset(records, FrameSampling(4, rate=2), 32, train=True, seed=1)
    item = train[0]
    assert item["video"].shape == (4, 3, 32, 32) and item["skipped"] == 0
    assert torch.equal(train[0]["video"], item["video"])  # deterministic in (seed, epoch, index)
    train.set_epoch(1)
    assert not torch.equal(train[0]["video"], item["video"])
    test = VideoDataset(records, FrameSampling(4, rate=2), 32, train=False, views=(2, 3))
    assert test[0]["video"].shape == (6, 4, 3, 32, 32)


def test_corrupt_and_missing_videos_are_skipped_and_counted(synthetic, tmp_path, caplog):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    good = read_video_list(synthetic.train_list, synthetic.root, len(CLASSES))[:4]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{r.path} {r.label}\n" for r in good) + f"{corrupt} 0\nmissing.mp4 1\n")
    records = read_video_list(str(listing), "", len(CLASSES))
    ds = VideoDataset(records, FrameSampling(4, rate=2), 32, train=True)
    corrupt_item, missing_item = ds[4], ds[5]
    assert corrupt_item["skipped"] >= 1 and corrupt_item["video"].shape == (4, 3, 32, 32)
    assert missing_item["skipped"] >= 1
    assert "corrupt.mp4 (" in corrupt_item["unreadable"] and "missing.mp4 (" in missing_item["unreadable"]
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    batches = list(loader)
    assert sum(int(b["skipped"].sum()) for b in batches) >= 2
    assert sum(len(b["label"]) for b in batches) == 6


def test_mostly_unreadable_data_is_a_clear_error(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"missing{i}.mp4 0\n" for i in range(5)))
    ds = VideoDataset(read_video_list(str(listing), str(tmp_path), 1), FrameSampling(4), 32, train=True,
                      max_tries=4)
    with pytest.raises(RuntimeError, match="most of the data set seems unreadable"):
        ds[0]


def test_large_videos_are_scaled_by_the_decoder(tmp_path):
    blocks = np.random.default_rng(0).integers(0, 255, (4, 12, 16, 3)).astype(np.uint8)
    frames = np.repeat(np.repeat(blocks, 8, 1), 8, 2)  # 96×128, smooth at the scale we resize to
    path = str(tmp_path / "big.mp4")
    write_mp4(path, frames)
    small = decode_frames(path, lambda n: np.arange(n), short_side=48)
    assert small.shape == (4, 48, 64, 3)
    reference = torch.nn.functional.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=(48, 64),
                                                mode="bilinear", antialias=True)
    assert (small.permute(0, 3, 1, 2).float() - reference).abs().mean() < 10  # same picture, another filter
    assert decode_frames(path, lambda n: np.arange(n), short_side=90).shape == (4, 96, 128, 3)  # within 10%: native
    test = VideoDataset([VideoRecord(path, 0)], FrameSampling(2), 48, train=False, views=(3, 1))
    assert test[0]["video"].shape == (3, 2, 3, 48, 48)  # [views, T, 3, S, S]



def test_the_demo_data_set_is_the_same_bytes_every_time(tmp_path):
    """The built-in demo must be reproducible across runs and machines (encoder threads and lossy
    decisions made it differ before)."""
    import hashlib

    def digest(root):
        paths = make_synthetic_dataset(str(root), train_per_class=6, val_per_class=1, num_frames=8)
        h = hashlib.sha256()
        for name in sorted(os.listdir(os.path.join(paths.root, "videos"))):
            with open(os.path.join(paths.root, "videos", name), "rb") as f:
                h.update(f.read())
        return h.hexdigest()

    assert digest(tmp_path / "a") == digest(tmp_path / "b")


@pytest.mark.parametrize("codec, suffix, width", [("libx264", ".mp4", 128), ("libx265", ".mp4", 128),
                                                  ("libvpx-vp9", ".webm", 128), ("libsvtav1", ".mp4", 128),
                                                  ("libx264", ".mp4", 96)])
def test_codecs_users_have_decode_to_the_same_frames(tmp_path, monkeypatch, codec, suffix, width):
    """H.264, HEVC, VP9 and AV1 give the same frames, picked and scaled the same way, whichever decord is
    installed (decord 0.6 cannot open AV1 and misreads 48-px-wide frames — the 96-px clip scaled by half —
    and PyAV decodes those instead)."""
    import av

    monkeypatch.setenv("SVT_LOG", "1")  # SVT-AV1: errors only
    frames = np.stack([np.full((64, width, 3), 40 + 12 * t, np.uint8) for t in range(12)])  # brightness = time
    path = str(tmp_path / f"clip{suffix}")
    quiet = {"x265-params": "log-level=error"} if codec == "libx265" else {}
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=8, options=quiet)
        stream.width, stream.height, stream.pix_fmt = width, 64, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    picked = decode_frames(path, lambda n: np.array([[1, 5], [9, 5]]) if n == 12 else np.zeros(1, int), short_side=32)
    assert picked.shape == (2, 2, 32, width // 2, 3) and picked.dtype == torch.uint8  # scaled by the decoder
    brightness = picked.float().mean(dim=(2, 3, 4))
    expected = torch.tensor([[52.0, 100.0], [148.0, 100.0]])  # frames 1, 5, 9, 5
    assert (brightness - expected).abs().max() < 6  # lossy codecs: close, and in the right order
