"""python -m m2clip_fast.prepare: re-encoded to the short side with a short keyframe interval, in parallel,
resumable, broken inputs reported and skipped, and a new list that trains."""
import os
import shutil

import pytest

av = pytest.importorskip("av", reason="prepare re-encodes with PyAV (a CPU dependency; the GPU image lacks it)")

from m2clip_fast import prepare
from m2clip_fast.data import read_video_list
from m2clip_fast.data.synthetic import render_motion, write_mp4


def _inputs(tmp_path):
    import numpy as np

    root = tmp_path / "raw"
    (root / "a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        write_mp4(str(root / "a" / f"v{i}.mp4"), np.repeat(np.repeat(render_motion(i % 4, 40, 32, rng), 2, 1), 3, 2))
    (root / "a" / "broken.mp4").write_bytes(os.urandom(2048))
    listing = tmp_path / "train.txt"
    listing.write_text("a/v0.mp4 0\na/v1.mp4 1\na/broken.mp4 2\na/v2.mp4 2\n")
    return root, listing


def test_prepare_reencodes_resumably_and_reports_broken_inputs(tmp_path, capsys):
    root, listing = _inputs(tmp_path)  # 40 frames of 96x64
    out = tmp_path / "prepared"
    prepare.main([str(listing), "--data-root", str(root), "--out", str(out), "--short-side", "32", "--gop", "8",
                  "--workers", "2"])
    printed = capsys.readouterr()
    assert "broken.mp4" in printed.out + printed.err and "1 unreadable video skipped" in printed.out
    records = read_video_list(str(out / "train.txt"), str(out), 3)
    assert [(os.path.relpath(r.path, out), r.label) for r in records] == [("a/v0.mp4", 0), ("a/v1.mp4", 1),
                                                                          ("a/v2.mp4", 2)]
    with av.open(records[0].path) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (48, 32)  # short side 32, aspect kept
        keyframes = [i for i, packet in enumerate(container.demux(stream)) if packet.is_keyframe]
    assert keyframes[:5] == [0, 8, 16, 24, 32]  # a keyframe every --gop frames
    assert not [n for n in os.listdir(out / "a") if "partial" in n]  # written atomically
    # Resumable: finished outputs are kept, a missing one is redone.
    stamp = os.path.getmtime(records[1].path)
    os.remove(records[0].path)
    prepare.main([str(listing), "--data-root", str(root), "--out", str(out), "--short-side", "32", "--gop", "8",
                  "--workers", "1"])
    assert os.path.exists(records[0].path) and os.path.getmtime(records[1].path) == stamp
    shutil.rmtree(root)  # the prepared list stands on its own
    assert len(read_video_list(str(out / "train.txt"), str(out), 3)) == 3
