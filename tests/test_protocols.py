"""m2clip_fast/protocols.py: the zero-shot protocols — prompt words, the official split files in their own
formats, and ``--zero-shot`` over three splits (per split and mean ± std) on generated videos."""
import os
import shutil

import pytest

from m2clip_fast import cli
from m2clip_fast.data import read_class_names
from m2clip_fast.protocols import ASSETS, PROTOCOLS, prompt_words, read_official_split

from .runs import records, train_args


@pytest.mark.parametrize("name, words", [("ApplyEyeMakeup", "apply eye makeup"), ("brush_hair", "brush hair"),
                                         ("YoYo", "yo yo"), ("PlayingDaf", "playing daf"), ("moving left", "moving left"),
                                         ("BasketballDunk", "basketball dunk"), ("TaiChi", "tai chi")])
def test_class_names_become_prompt_words(name, words):
    assert prompt_words(name) == words


def test_shipped_protocol_files_are_complete():
    for protocol, classes, first_split in (("hmdb51", 51, 1530), ("ucf101", 101, 3783), ("k600", 160, None)):
        split = PROTOCOLS[protocol].split(1, "/nowhere")
        assert len(split.class_names) == classes and all(0 <= r.label < classes for r in split.records)
        if first_split:
            assert len(split.records) == first_split  # the official test split's size


def _ucf_split_files(folder, videos_by_split):
    os.makedirs(folder, exist_ok=True)
    for n, videos in videos_by_split.items():
        with open(os.path.join(folder, f"testlist0{n}.txt"), "w") as f:
            f.write("".join(f"{v}\n" for v in videos))


def test_official_ucf101_testlist_is_read_with_labels_from_the_class_folder(tmp_path):
    _ucf_split_files(tmp_path, {1: ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "YoYo/v_YoYo_g07_c03.avi"]})
    names = read_class_names(os.path.join(ASSETS, "ucf101_labels.csv"))
    records = read_official_split("ucf101", str(tmp_path), 1, "/data", names)
    assert [(r.path, names[r.label]) for r in records] == [
        ("/data/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "ApplyEyeMakeup"), ("/data/YoYo/v_YoYo_g07_c03.avi", "YoYo")]


def test_official_hmdb51_split_files_keep_the_test_videos_only(tmp_path):
    names = read_class_names(os.path.join(ASSETS, "hmdb51_labels.csv"))
    for name in names:
        (tmp_path / f"{name.replace(' ', '_')}_test_split2.txt").write_text("")
    (tmp_path / "brush_hair_test_split2.txt").write_text("a.avi 2 \nb.avi 1 \nc.avi 0 \nd.avi 2 \n")
    records = read_official_split("hmdb51", str(tmp_path), 2, "/data", names)
    assert [(r.path, names[r.label]) for r in records] == [("/data/brush_hair/a.avi", "brush hair"),
                                                             ("/data/brush_hair/d.avi", "brush hair")]
    (tmp_path / "cartwheel_test_split2.txt").write_text("x.avi test\n")
    with pytest.raises(ValueError, match=r"cartwheel_test_split2.txt:1: expected '<video> 0\|1\|2'"):
        read_official_split("hmdb51", str(tmp_path), 2, "/data", names)


@pytest.fixture(scope="module")
def checkpoint(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("zs-run")
    cli.main(train_args(demo_data, out, "--epochs", "1"))
    return out / "last.pt"


def test_zero_shot_evaluates_three_splits_and_reports_mean_and_std(demo_data, checkpoint, tmp_path, capsys):
    """UCF101 laid out as downloaded (a folder per class) with the official testlists, here three tiny ones
    over generated clips."""
    root, splits = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    source = sorted(os.path.join(demo_data.root, "videos", v) for v in os.listdir(os.path.join(demo_data.root, "videos")))
    videos_by_split = {}
    for n, classes in ((1, ("ApplyEyeMakeup", "YoYo")), (2, ("Archery", "Rowing")), (3, ("TaiChi", "Typing", "Surfing"))):
        videos_by_split[n] = []
        for i, name in enumerate(classes):
            os.makedirs(root / name, exist_ok=True)
            video = f"{name}/v_{name}_g01_c0{i + 1}.avi"
            shutil.copy(source[n * 3 + i], root / video)
            videos_by_split[n].append(video)
    _ucf_split_files(splits, videos_by_split)
    capsys.readouterr()
    cli.main(["--zero-shot", "ucf101", "--resume", str(checkpoint), "--data-root", str(root), "--split-dir",
              str(splits), "--workers", "0", "--output-dir", str(tmp_path), "--device", "cpu"])
    out = capsys.readouterr().out
    logged = [r for r in records(tmp_path) if r["split"] == "zero-shot"]
    assert [r["name"] for r in logged] == ["ucf101 split 1", "ucf101 split 2", "ucf101 split 3", "mean over splits"]
    assert [r["videos"] for r in logged[:3]] == [2, 2, 3] and all(r["unreadable"] == 0 for r in logged[:3])
    top1 = [r["top1"] for r in logged[:3]]
    assert logged[3]["top1_mean"] == pytest.approx(sum(top1) / 3)
    assert "ucf101 split 2: top-1" in out and "(101 classes)" in out and "ucf101 zero-shot: top-1" in out
    assert f"{logged[3]['top1_mean']:.1f} ± {logged[3]['top1_std']:.1f}%" in out


def test_zero_shot_needs_a_checkpoint_and_the_videos(demo_data, checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["--zero-shot", "hmdb51", "--data-root", str(tmp_path), "--device", "cpu"])
    assert "give --resume CHECKPOINT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--zero-shot", "hmdb51", "--resume", str(checkpoint), "--data-root", str(tmp_path), "--device", "cpu"])
    assert "none of 16 sampled videos of hmdb51 split 1 exist" in capsys.readouterr().err
