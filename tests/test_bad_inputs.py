"""Every bad input we try, in one place: what a user can get wrong (files, checkpoints, flags, demo_data) and
the one clear message or the honest count it must give. Each case fails if the handling regresses."""
import os
import shutil

import pytest
import torch

import kernels
from m2clip_fast import checkpointing
from m2clip_fast import cli
from m2clip_fast.data import read_class_names, read_video_list

from .parity import branch
from .runs import records, train_args




@pytest.fixture(scope="module")
def trained(demo_data, tmp_path_factory):
    """A finished 1-epoch run on 4-frame clips, stride 2, 1x1 views."""
    out = tmp_path_factory.mktemp("run")
    cli.main(train_args(demo_data, out, "--epochs", "1"))
    return out


# --- fused ops ----------------------------------------------------------------------------------------

_G = torch.Generator().manual_seed(0)
_TE, _TD = branch(16, 8, (3,), _G), branch(16, 8, (3, 3), _G)
_X = torch.randn(4, 5, 16)
BAD_OP_CALLS = {  # what was wrong -> (the call, the message that must say so)
    "x not [B*T, L, C]": (lambda: kernels.ted_adapter(_X[0], 2, (2, 2), _TE, _TD), r"x must be \[B\*T, L, C\]"),
    "B*T not a multiple of T": (lambda: kernels.ted_adapter(_X, 3, (2, 2), _TE, _TD), "multiple of num_frames"),
    "grid does not match L": (lambda: kernels.ted_adapter(_X, 2, (2, 3), _TE, _TD), "L = 5 tokens"),
    "width does not match": (lambda: kernels.ted_adapter(torch.randn(4, 5, 12), 2, (2, 2), _TE, _TD),
                             r"te.fc1_weight must be \[8, 12\]"),
    "fp64": (lambda: kernels.ted_adapter(_X.double(), 2, (2, 2), _TE, _TD), "float32/bfloat16/float16"),
    "mixed dtypes outside autocast": (lambda: kernels.ted_adapter(_X.bfloat16(), 2, (2, 2), _TE, _TD), "share a dtype"),
    "mixed devices": (lambda: kernels.ted_adapter(_X.to("meta"), 2, (2, 2), _TE, _TD), "one device"),
    "text adapter weight shape": (lambda: kernels.text_adapter(_X, _TE.fc1_weight, _TE.fc1_bias, _TE.fc2_weight[:, :4],
                                                               _TE.fc2_bias), r"fc2_weight must be \[16, 8\]"),
    "grid does not tile the tokens": (lambda: kernels.spatial_conv(_X[:, 1:], (3, 2), _TD.conv_weight), "does not tile"),
    "temporal conv given a 3x3 kernel": (lambda: kernels.temporal_conv(_X, 2, _TD.conv_weight),
                                         r"weight must be \[16, 1, 3\]"),
    "linear K mismatch": (lambda: kernels.linear(_X, _TE.fc1_weight.t()), "agree on K"),
    "QuickGELU of integers": (lambda: kernels.quick_gelu(torch.arange(6)), "float32/bfloat16/float16"),
}


@pytest.mark.parametrize("case", sorted(BAD_OP_CALLS))
def test_bad_op_calls_raise_a_value_error_that_says_what_was_wrong(case):
    call, match = BAD_OP_CALLS[case]
    with pytest.raises(ValueError, match=match):
        call()


# --- checkpoints ---------------------------------------------------------------------------------------

class _Hostile:
    """Unpickling this would run a shell command: a hostile checkpoint."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("kind", ["garbage", "truncated", "hostile", "empty"])
def test_bad_checkpoint_is_refused_with_one_clear_line(tmp_path, kind, capsys):
    path, good = tmp_path / f"{kind}.pt", tmp_path / "good.pt"
    checkpointing.atomic_save({"format": checkpointing.FORMAT, "model": {"w": torch.zeros(1000)}}, str(good))
    if kind == "garbage":
        path.write_bytes(b"this is not a checkpoint\n" * 10)
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:1000])
    elif kind == "hostile":
        torch.save({"format": checkpointing.FORMAT, "payload": _Hostile()}, str(path))
    else:
        path.write_bytes(b"")
    with pytest.raises(ValueError) as err:
        checkpointing.load(str(path))
    message = str(err.value)
    assert str(path) in message and "\n" not in message and "weights_only" not in message
    assert ("not allowed" in message) if kind == "hostile" else ("not a valid checkpoint" in message)
    val = tmp_path / "val.txt"
    val.write_text("a.mp4 0\n")
    with pytest.raises(SystemExit):
        cli.main(["--resume", str(path), "--eval-only", "--val-list", str(val), "--device", "cpu"])
    stderr = capsys.readouterr().err
    assert f"--resume: {message}" in stderr and "Traceback" not in stderr and "weights_only" not in stderr


# --- class lists and video lists ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, match", [
    ("id,name\n0,a\nx,b\n", r"c.csv:3: expected an integer class id, got 'x'"),
    ("id,name\n0,a\n1\n", r"c.csv:3: class 1 has no name"),
    ("id,name\n0,a\n1,  \n", r"c.csv:3: class 1 has no name"),
    ("id,name\n0,a\n0,b\n", r"c.csv:3: class id 0 appears twice"),
    ("id,name\n0,a\n2,b\n", r"without gaps"),
    ("name,label\na,0\n", r"expected a header 'id,name'"),
])
def test_class_csv_errors_name_the_file_and_line(tmp_path, text, match):
    csv = tmp_path / "c.csv"
    csv.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_class_names(str(csv))


@pytest.mark.parametrize("text, match", [
    ("a.mp4 0\nb.mp4 dog\n", r"bad.txt:2: the label must be an integer class id, got 'dog'"),
    ("a.mp4 0\nb.mp4 7\n", r"bad.txt:2: label 7 is out of range for 4 classes"),
    ("just-a-path.mp4\n", r"bad.txt:1: expected '<video path> <label>'"),
    ("\n\n", r"lists no videos"),
])
def test_list_file_errors_name_the_file_line_and_problem(tmp_path, text, match):
    bad = tmp_path / "bad.txt"
    bad.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_video_list(str(bad), "", 4)


def test_forgotten_data_root_fails_fast_with_the_hint(demo_data, tmp_path, capsys):
    elsewhere = tmp_path / "train.txt"
    shutil.copy(demo_data.train_list, elsewhere)  # relative paths, but not relative to this folder
    with pytest.raises(SystemExit):
        cli.main(["--train-list", str(elsewhere), "--classes", demo_data.classes_csv, "--device", "cpu"])
    err = capsys.readouterr().err
    assert "none of 16 sampled videos exist" in err and "give --data-root" in err
    assert "unreadable" not in err and "Traceback" not in err


def test_without_data_root_the_list_files_folder_is_tried_and_said(demo_data, capsys):
    args = cli.resolve_args(["--train-list", demo_data.train_list, "--classes", demo_data.classes_csv, "--device", "cpu"])
    assert all(os.path.isfile(r.path) for r in args.train_records)
    assert f"relative to its folder {os.path.dirname(os.path.abspath(demo_data.train_list))}" in capsys.readouterr().out


# --- evaluation with unreadable videos -------------------------------------------------------------------

def _val_with_broken(demo_data, tmp_path, good: int):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    lines = open(demo_data.val_list).read().splitlines()[:good]
    val = tmp_path / "val.txt"
    val.write_text("".join(f"{os.path.join(demo_data.root, line)}\n" for line in lines)
                   + f"{corrupt} 0\n{tmp_path / 'missing.mp4'} 1\n")
    return val


def test_evaluation_scores_exactly_the_readable_listed_videos(demo_data, trained, tmp_path, capsys):
    val = _val_with_broken(demo_data, tmp_path, good=3)
    capsys.readouterr()
    cli.main(["--eval-only", "--resume", str(trained / "last.pt"), "--val-list", str(val), "--workers", "0",
                   "--output-dir", str(tmp_path), "--device", "cpu"])
    record = records(tmp_path)[-1]
    assert (record["videos"], record["listed"], record["unreadable"]) == (3, 5, 2)  # none replaced, none twice
    out = capsys.readouterr().out
    assert "on 3 of 5 listed videos (2 unreadable" in out
    assert "not scoring unreadable video " + str(tmp_path / "corrupt.mp4") in out
    assert "not scoring unreadable video " + str(tmp_path / "missing.mp4") in out


def test_evaluation_with_mostly_unreadable_videos_stops_clearly(demo_data, trained, tmp_path):
    val = _val_with_broken(demo_data, tmp_path, good=1)
    with pytest.raises(SystemExit) as err:
        cli.main(["--eval-only", "--resume", str(trained / "last.pt"), "--val-list", str(val), "--workers",
                       "0", "--output-dir", str(tmp_path), "--device", "cpu"])
    assert "2 of 3 evaluation videos are unreadable" in str(err.value) and "--data-root" in str(err.value)


# --- resume and evaluation keep the run's own settings ---------------------------------------------------

def test_resume_refuses_a_flag_that_changes_the_run(demo_data, trained, capsys):
    with pytest.raises(SystemExit):
        cli.resolve_args(train_args(demo_data, trained, "--resume", "auto", "--epochs", "3"))
    err = capsys.readouterr().err
    assert "continues the run in" in err and "--epochs 3 (the run used 1)" in err and "--allow-changes" in err


def test_resuming_a_finished_run_says_so_and_trains_nothing(demo_data, trained, capsys):
    before = records(trained)
    capsys.readouterr()
    cli.main(["--resume", "auto", "--output-dir", str(trained), "--train-list", demo_data.train_list, "--data-root",
                   demo_data.root, "--workers", "0", "--device", "cpu"])  # settings: the run's own
    out = capsys.readouterr().out
    assert "resumed from" in out and "(epoch 1, step " in out and "is a finished run (1 of 1 epochs" in out
    assert records(trained) == before


def test_an_allowed_change_is_applied_and_announced(demo_data, trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    cli.main(train_args(demo_data, out, "--resume", "auto", "--epochs", "2", "--allow-changes"))
    printed = capsys.readouterr().out
    assert "note: --epochs 2, where the checkpoint's run used 1" in printed
    assert checkpointing.load(str(out / "last.pt"))["epoch"] == 2


def test_eval_only_takes_the_checkpoints_data_settings(demo_data, trained, capsys):
    base = ["--eval-only", "--resume", str(trained / "last.pt"), "--val-list", demo_data.val_list, "--data-root",
            demo_data.root, "--device", "cpu"]
    args = cli.resolve_args(base)
    assert (args.num_frames, args.sampling_rate, args.views) == (4, 2, "1x1") and args.changes == []
    args = cli.resolve_args([*base, "--views", "2x1"])
    assert args.changes == [("views", "1x1", "2x1")]


def test_training_replaces_unreadable_videos_and_says_which_above_the_bar(demo_data, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    train = tmp_path / "train.txt"
    train.write_text("".join(f"{os.path.join(demo_data.root, line)}\n" for line in open(demo_data.train_list).read().splitlines())
                     + f"{corrupt} 0\n")
    cli.main(["--train-list", str(train), "--classes", demo_data.classes_csv, "--preset", "tiny", "--num-frames", "4",
                   "--sampling-rate", "2", "--batch-size", "4", "--epochs", "1", "--workers", "2", "--lr", "1e-3",
                   "--output-dir", str(tmp_path / "run"), "--device", "cpu", "--no-flip"])
    out = capsys.readouterr().out
    assert f"replaced unreadable video {corrupt} (" in out  # printed by the main process, from a worker's item
    assert "epoch 0: 1 unreadable videos were skipped and replaced" in out


# --- config overrides (--set) ---------------------------------------------------------------------------

@pytest.mark.parametrize("item, match", [
    ("adapter_widht=192", "expected FIELD=VALUE with FIELD one of"),
    ("adapter_width", "expected FIELD=VALUE"),
    ("visual_adapter_positions=attn,ffn", "visual_adapter_positions has ['ffn']"),
    ("crossmodal_loss=softmax", "crossmodal_loss='softmax'"),
    ("adapter_width=0", "adapter_width must be >= 1"),
    ("adapter_width.x=1", "adapter_width is not a dict field"),
])
def test_bad_config_overrides_are_refused_before_anything_runs(demo_data, tmp_path, item, match, capsys):
    with pytest.raises(SystemExit):
        cli.resolve_args(train_args(demo_data, tmp_path, "--set", item))
    assert match in capsys.readouterr().err


def test_config_overrides_build_the_ablation_and_are_saved(demo_data, tmp_path, capsys):
    cli.main(train_args(demo_data, tmp_path, "--epochs", "1", "--set", "visual_adapter_positions=attn,mlp",
                        "--set", "text_adapter_last_blocks=0", "--set", "loss_weights.mlm=0", "--set", "adapter_width=8"))
    cfg = checkpointing.load(str(tmp_path / "last.pt"))["config"]
    assert cfg["visual_adapter_positions"] == ("attn", "mlp") and cfg["text_adapter_last_blocks"] == 0
    assert cfg["loss_weights"]["mlm"] == 0 and cfg["loss_weights"]["visual"] == 1.0 and cfg["adapter_width"] == 8
    assert "config: preset tiny with visual_adapter_positions=('attn', 'mlp')" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.resolve_args(train_args(demo_data, tmp_path, "--resume", "auto", "--set", "adapter_width=16"))
    assert "keeps its checkpoint's model config" in capsys.readouterr().err


def test_the_ssv2_preset_brings_the_released_recipe_and_flags_override_it(demo_data, tmp_path, capsys):
    base = ["--train-list", demo_data.train_list, "--classes", demo_data.classes_csv, "--data-root", demo_data.root,
            "--preset", "vit-b16-ssv2", "--device", "cpu"]
    args = cli.resolve_args(base)
    assert (args.crop_range, args.randaugment, args.interpolation, args.flip) == (
        (0.08, 1.0), "rand-m7-n4-mstd0.5-inc1", "bicubic", False)
    args = cli.resolve_args([*base, "--crop-scale", "0.5,1", "--interpolation", "bilinear"])
    assert (args.crop_range, args.interpolation) == ((0.5, 1.0), "bilinear")
    for flag, value, message in (("--crop-scale", "1,0.5", "--crop-scale must be LOW,HIGH"),
                                 ("--randaugment", "rand-x9", "is not a timm RandAugment config")):
        with pytest.raises(SystemExit):
            cli.resolve_args([*base, flag, value])
        assert message in capsys.readouterr().err
