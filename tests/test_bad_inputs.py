"""Every bad input we try, in one place: what a user can get wrong (files, checkpoints, flags, demo_data) and
the one clear message or the honest count it must give. Each case fails if the handling regresses."""
import os
import shutil

import pytest
import torch

import kernels
from m2clip_fast import cli, run_state
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
    "TE branch given a 3x3 kernel": (lambda: kernels.ted_adapter(_X, 2, (2, 2), _TD, None),
                                     r"te.conv_weight must be \[8, 1, 3\]"),
    "TE and TD of different widths": (lambda: kernels.ted_adapter(_X, 2, (2, 2), _TE, branch(16, 4, (3, 3), _G)),
                                      "must have one width, got 8 and 4"),
    "temporal adapter on tokens": (lambda: kernels.temporal_adapter(_X, 2, _TE), r"f must be \[B\*T, D\]"),
    "QuickGELU of integers": (lambda: kernels.quick_gelu(torch.arange(6)), "float32/bfloat16/float16"),
    "LayerNorm residual of another shape": (lambda: kernels.add_layer_norm(_X, None, None, 1e-5, _X[:2]),
                                            r"residual must have x's shape \[4, 5, 16\]"),
    "LayerNorm weight of another width": (lambda: kernels.add_layer_norm(_X, torch.ones(12), None, 1e-5),
                                          r"weight must be a float \[16\] tensor"),
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
    run_state.atomic_save({"format": run_state.FORMAT, "model": {"w": torch.zeros(1000)}}, str(good))
    if kind == "garbage":
        path.write_bytes(b"this is not a checkpoint\n" * 10)
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:1000])
    elif kind == "hostile":
        torch.save({"format": run_state.FORMAT, "payload": _Hostile()}, str(path))
    else:
        path.write_bytes(b"")
    with pytest.raises(ValueError) as err:
        run_state.load(str(path))
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
    plan = cli.resolve(["--train-list", demo_data.train_list, "--classes", demo_data.classes_csv, "--device", "cpu",
                             "--preset", "tiny"])
    assert all(os.path.isfile(r.path) for r in plan.data.train)
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
        cli.resolve(train_args(demo_data, trained, "--resume", "auto", "--epochs", "3"))
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
    assert run_state.load(str(out / "last.pt"))["epoch"] == 2


def test_eval_only_takes_the_checkpoints_data_settings(demo_data, trained, capsys):
    base = ["--eval-only", "--resume", str(trained / "last.pt"), "--val-list", demo_data.val_list, "--data-root",
            demo_data.root, "--device", "cpu"]
    plan = cli.resolve(base)
    assert (plan.data.clip.num_frames, plan.data.clip.sampling_rate, plan.data.clip.views) == (4, 2, "1x1") and plan.run.changes == ()
    plan = cli.resolve([*base, "--views", "2x1"])
    assert plan.run.changes == (("views", "1x1", "2x1"),)


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
    assert "epoch 0: 1 unreadable video (named above), replaced by other samples 1 time" in out


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
        cli.resolve(train_args(demo_data, tmp_path, "--set", item))
    assert match in capsys.readouterr().err


def test_config_overrides_build_the_ablation_and_are_saved(demo_data, tmp_path, capsys):
    cli.main(train_args(demo_data, tmp_path, "--epochs", "1", "--set", "visual_adapter_positions=attn,mlp",
                        "--set", "text_adapter_last_blocks=0", "--set", "loss_weights.mlm=0", "--set", "adapter_width=8"))
    cfg = run_state.load(str(tmp_path / "last.pt"))["config"]
    assert cfg["visual_adapter_positions"] == ("attn", "mlp") and cfg["text_adapter_last_blocks"] == 0
    assert cfg["loss_weights"]["mlm"] == 0 and cfg["loss_weights"]["visual"] == 1.0 and cfg["adapter_width"] == 8
    assert "config: preset tiny with visual_adapter_positions=('attn', 'mlp')" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.resolve(train_args(demo_data, tmp_path, "--resume", "auto", "--set", "adapter_width=16"))
    assert "keeps its checkpoint's model config" in capsys.readouterr().err


def test_the_ssv2_preset_brings_the_released_recipe_and_flags_override_it(demo_data, tmp_path, capsys):
    base = ["--train-list", demo_data.train_list, "--classes", demo_data.classes_csv, "--data-root", demo_data.root,
            "--preset", "vit-b16-ssv2", "--pretrained", "random", "--device", "cpu"]
    plan = cli.resolve(base)
    assert (plan.data.crop_range, plan.recipe.randaugment, plan.recipe.interpolation, plan.recipe.flip) == (
        (0.08, 1.0), "rand-m7-n4-mstd0.5-inc1", "bicubic", False)
    plan = cli.resolve([*base, "--crop-scale", "0.5,1", "--interpolation", "bilinear"])
    assert (plan.data.crop_range, plan.recipe.interpolation) == ((0.5, 1.0), "bilinear")
    for flag, value, message in (("--crop-scale", "1,0.5", "--crop-scale must be LOW,HIGH"),
                                 ("--randaugment", "rand-x9", "is not a timm RandAugment config")):
        with pytest.raises(SystemExit):
            cli.resolve([*base, flag, value])
        assert message in capsys.readouterr().err


# --- issue 24: silent wrong results ------------------------------------------------------------------------

def test_a_clip_preset_on_real_data_needs_pretrained_weights(demo_data, tmp_path, capsys):
    base = ["--train-list", demo_data.train_list, "--classes", demo_data.classes_csv, "--data-root", demo_data.root,
            "--output-dir", str(tmp_path), "--device", "cpu"]
    with pytest.raises(SystemExit):
        cli.resolve([*base, "--preset", "vit-b32-k400"])
    err = capsys.readouterr().err
    assert "--preset vit-b32-k400 adapts a pretrained CLIP, and no --pretrained was given" in err
    assert "--pretrained random" in err
    plan = cli.resolve([*base, "--preset", "vit-b32-k400", "--pretrained", "random"])
    assert plan.model.pretrained is None and "randomly initialised" in capsys.readouterr().out


def test_pretrained_tags_of_a_preset_without_any_are_explained(demo_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.resolve(train_args(demo_data, tmp_path, "--pretrained", "openai"))
    assert "small test config with no published weights" in capsys.readouterr().err


def test_an_unreachable_weights_host_fails_in_seconds_and_a_cached_file_needs_no_network(tmp_path, monkeypatch):
    """Offline, a pretrained tag used to wait out about a minute of the hub client's retries: now the host is tried
    once, the error names the backbone's own file, and a cached file is used without trying the host at all."""
    import socket

    from m2clip_fast import factory

    tried = []

    def unreachable(address, timeout=None):
        tried.append(address)
        raise socket.gaierror(-2, "Name or service not known")

    def no_download(*args, **kwargs):
        raise AssertionError("the hub client ran: it would retry for a minute")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(factory.open_clip.pretrained, "download_pretrained", no_download)
    with pytest.raises(ValueError, match=r"huggingface.co cannot be reached.*--pretrained /path/to/ViT-B-32.pt"):
        factory.resolve_pretrained("ViT-B-32-quickgelu", "openai", cache_dir=str(tmp_path))
    assert tried == [("huggingface.co", 443)]
    repo = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "open_clip_model.safetensors").write_bytes(b"weights")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    found = factory.resolve_pretrained("ViT-B-32-quickgelu", "openai", cache_dir=str(tmp_path))
    assert found.endswith("open_clip_model.safetensors") and len(tried) == 1


def test_eval_only_resume_auto_without_a_checkpoint_is_refused(demo_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.resolve(["--eval-only", "--resume", "auto", "--output-dir", str(tmp_path / "typo"), "--val-list",
                          demo_data.val_list, "--classes", demo_data.classes_csv, "--device", "cpu"])
    assert "holds no checkpoint (last.pt)" in capsys.readouterr().err


def test_resume_auto_without_a_checkpoint_says_it_starts_afresh(demo_data, tmp_path, capsys):
    cli.resolve(train_args(demo_data, tmp_path, "--resume", "auto"))
    assert f"--resume auto: no checkpoint in {tmp_path}; starting a new run" in capsys.readouterr().out


def test_resume_with_another_preset_is_refused(demo_data, trained, capsys):
    with pytest.raises(SystemExit):
        cli.resolve([*train_args(demo_data, trained, "--resume", "auto"), "--preset", "vit-b16-k400"])
    err = capsys.readouterr().err
    assert "--preset vit-b16-k400" in err and "model of preset tiny" in err and "drop --preset" in err
    assert cli.resolve(train_args(demo_data, trained, "--resume", "auto")).model.saved_preset == "tiny"


@pytest.mark.parametrize("flag, value, match", [
    ("--lr", "0", "--lr must be > 0, got 0 (0 would train nothing)"),
    ("--lr", "-1", "--lr must be > 0, got -1"),
    ("--base-lr", "0", "--base-lr must be > 0"),
    ("--weight-decay", "-1", "--weight-decay must be >= 0, got -1"),
    ("--warmup-epochs", "-1", "--warmup-epochs must be >= 0"),
    ("--save-every", "-1", "--save-every must be >= 0"),
    ("--max-steps", "0", "--max-steps must be >= 1, got 0"),
    ("--workers", "-1", "--workers must be >= 0, got -1"),
    ("--clip-grad", "-0.5", "--clip-grad must be >= 0"),
    ("--mlm-mask-rate", "2", "--mlm-mask-rate is a share of the words, from 0 to 1, got 2"),
    ("--mlm-mask-rate", "-0.1", "--mlm-mask-rate must be >= 0"),
    ("--seed", "-3", "--seed must be >= 0"),
    ("--device", "foo", "--device 'foo': expected 'auto', 'cpu', 'cuda' or 'cuda:N'"),
])
def test_flags_out_of_range_are_refused_in_one_line(demo_data, tmp_path, flag, value, match, capsys):
    with pytest.raises(SystemExit):
        cli.resolve([*train_args(demo_data, tmp_path), flag, value])
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_device_cuda_without_a_gpu_says_so(demo_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.resolve([*train_args(demo_data, tmp_path), "--device", "cuda"])
    assert "--device cuda: no CUDA device is visible to this process" in capsys.readouterr().err


def test_nested_config_keys_and_value_types_are_checked(demo_data, tmp_path, capsys):
    for item, match in (("loss_weights.mlmm=0", "loss_weights has no key 'mlmm'; its keys are contrastive"),
                        ("adapter_width=abc", "adapter_width must be an integer, got 'abc'"),
                        ("loss_weights.mlm=x", "loss_weights.mlm must be a number, got 'x'"),
                        ("grad_checkpointing=1", "grad_checkpointing must be True or False")):
        with pytest.raises(SystemExit):
            cli.resolve(train_args(demo_data, tmp_path, "--set", item))
        assert match in capsys.readouterr().err, item


def test_output_dir_that_is_a_file_or_not_writable_is_refused_up_front(demo_data, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(SystemExit):
        cli.resolve(train_args(demo_data, afile))
    assert "is a file, not a folder" in capsys.readouterr().err
    if os.geteuid() == 0:  # root writes anywhere: a folder below a file stands in for a read-only one
        target = afile / "run"
    else:
        target = tmp_path / "ro"
        target.mkdir(mode=0o500)
    with pytest.raises(SystemExit):
        cli.resolve(train_args(demo_data, target))
    err = capsys.readouterr().err
    assert f"--output-dir {target}: cannot write there" in err and "Traceback" not in err


def test_resume_drops_metrics_rows_logged_after_the_checkpoint(demo_data, trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    ckpt = run_state.load(str(out / "last.pt"))
    with open(out / "metrics.jsonl", "a") as f:  # what a run killed after its checkpoint had logged
        f.write('{"split": "train", "epoch": 1, "step": %d, "total": 1.0}\n' % (ckpt["step"] + 1))
        f.write('{"split": "val", "epoch": 1, "step": %d, "top1": 1.0}\n' % (ckpt["step"] + 1))
    cli.main(train_args(demo_data, out, "--resume", "auto", "--epochs", "2", "--allow-changes", "--log-interval", "1"))
    rows = records(out)
    train_steps = [r["step"] for r in rows if r["split"] == "train"]
    val_epochs = [r["epoch"] for r in rows if r["split"] == "val"]
    assert train_steps == sorted(set(train_steps)) and val_epochs == sorted(set(val_epochs)) == [0, 1]


def test_ctrl_c_saves_where_training_stopped_and_says_how_to_continue(demo_data, tmp_path, monkeypatch, capsys):
    import signal

    from m2clip_fast import trainer

    save, sent = trainer.Trainer.save, []

    def save_then_interrupt(self, name, epoch, step, batches_done):
        save(self, name, epoch, step, batches_done)
        if step == 1 and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the epoch

    monkeypatch.setattr(trainer.Trainer, "save", save_then_interrupt)
    assert cli.main(train_args(demo_data, tmp_path, "--epochs", "2", "--save-every", "1")) == 130
    ckpt = run_state.load(str(tmp_path / "last.pt"))
    assert (ckpt["epoch"], ckpt["step"], ckpt["batches_done"]) == (0, 1, 1)
    err = capsys.readouterr().err
    assert "interrupted at epoch 0, step 1: saved" in err and "--resume auto" in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


# --- issue 24: tracebacks, misleading lines and silence ---------------------------------------------------

def test_checkpoint_errors_are_whole_sentences_and_say_what_the_file_is(tmp_path):
    good, truncated, noise = tmp_path / "good.pt", tmp_path / "truncated.pt", tmp_path / "noise.pt"
    run_state.atomic_save({"format": run_state.FORMAT, "model": {"w": torch.zeros(1000)}}, str(good))
    truncated.write_bytes(good.read_bytes()[:1000])
    noise.write_bytes(bytes(range(7, 256)) * 20)
    with pytest.raises(ValueError) as err:
        run_state.load(str(truncated))
    assert "truncated or corrupt" in str(err.value) and not str(err.value).endswith("yo)")
    assert str(err.value).endswith("…)") or str(err.value).endswith(".)")
    with pytest.raises(ValueError, match="not a file torch.save wrote"):
        run_state.load(str(noise))
    with pytest.raises(FileNotFoundError, match="is a folder, not a checkpoint file"):
        run_state.load(str(tmp_path))


@pytest.mark.parametrize("content, match", [
    (b"a.mp4 0\nb\xe9.mp4 1\n", r"bad.txt:2: byte 0xe9 at column 2 is not UTF-8 text; save the file as UTF-8"),
    (b"a.mp4 0\nb.mp4 1\na.mp4 2\n", r"bad.txt:3: a.mp4 is listed with label 2, but line 1 gives it label 0"),
])
def test_list_file_encoding_and_conflicting_lines_name_file_and_line(tmp_path, content, match):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_video_list(str(bad), "", 4)


def test_repeated_list_lines_are_dropped_with_a_warning(tmp_path, caplog):
    listed = tmp_path / "list.txt"
    listed.write_bytes(b"a.mp4 0\r\nb.mp4 1\r\na.mp4 0\r\na.mp4 0\r\n")
    records_read = read_video_list(str(listed), "", 4)
    assert [(r.path, r.label) for r in records_read] == [("a.mp4", 0), ("b.mp4", 1)]
    assert "2 repeated lines dropped (each video is listed once; first at line 3)" in caplog.text


def test_class_csv_with_a_bom_is_read_and_latin1_is_named(tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_bytes("\ufeffid,name\n0,café\n1,b\n".encode("utf-8"))
    assert read_class_names(str(csv)) == ["café", "b"]
    csv.write_bytes("id,name\n0,café\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"c.csv:2: byte 0xe9 at column 6 is not UTF-8 text"):
        read_class_names(str(csv))


def test_resume_with_a_changed_lr_names_the_default_the_run_used(demo_data, tmp_path, capsys):
    default_lr = [a for a in train_args(demo_data, tmp_path, "--max-steps", "1") if a not in ("--lr", "1e-3")]
    cli.main(default_lr)
    with pytest.raises(SystemExit):
        cli.resolve([*default_lr, "--resume", "auto", "--lr", "1e-3"])
    err = capsys.readouterr().err
    assert "--lr 0.001 (the run used the default)" in err and "None" not in err


def test_predict_refuses_a_folder_empty_labels_and_top_k_0(trained, tmp_path, demo_data, capsys):
    from m2clip_fast import predict

    video = os.path.join(demo_data.root, open(demo_data.val_list).readline().rsplit(maxsplit=1)[0])
    ckpt = str(trained / "last.pt")
    for argv, match in (([str(tmp_path), "--checkpoint", ckpt], "is a folder: give one video file"),
                        ([video, "--checkpoint", ckpt, "--labels", ""], "holds no label"),
                        ([video, "--checkpoint", ckpt, "--labels", " , "], "holds no label"),
                        ([video, "--checkpoint", ckpt, "--top-k", "0"], "--top-k must be >= 1, got 0"),
                        ([video, "--checkpoint", ckpt, "--device", "foo"], "expected 'auto', 'cpu'")):
        with pytest.raises(SystemExit):
            predict.main(argv)
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err, argv


def _encode(path, frames: int, audio_only: bool = False) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        if audio_only:
            stream = container.add_stream("aac", rate=8000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate = 8000
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
            return
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = np.full((32, 32, 3), 40 * i % 255, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


def test_audio_only_and_short_videos_are_explained(trained, tmp_path, capsys):
    from m2clip_fast import predict

    audio, short = tmp_path / "audio.mp4", tmp_path / "short.mp4"
    _encode(audio, 0, audio_only=True)
    _encode(short, 1)
    ckpt = str(trained / "last.pt")
    with pytest.raises(SystemExit):
        predict.main([str(audio), "--checkpoint", ckpt, "--device", "cpu"])
    assert "has no video stream (audio only?)" in capsys.readouterr().err
    assert predict.main([str(short), "--checkpoint", ckpt, "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"note: {short} has 1 frame, fewer than the 7 a clip spans" in err and "(repeating frames)" in err


def test_eval_only_writes_beside_the_checkpoint_at_its_position(demo_data, trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    cli.main(["--eval-only", "--resume", str(run / "last.pt"), "--val-list", demo_data.val_list, "--data-root",
              demo_data.root, "--workers", "0", "--device", "cpu"])
    ckpt = run_state.load(str(run / "last.pt"))
    row = records(run)[-1]
    assert row["split"] == "val" and (row["epoch"], row["step"]) == (ckpt["epoch"], ckpt["step"])


def test_counts_and_labels_read_right(demo_data, trained, tmp_path, capsys):
    cli.main(train_args(demo_data, tmp_path / "run", "--epochs", "1"))
    out = capsys.readouterr().out
    assert "training: 1 epoch x 4 steps" in out and "epoch 0: validation top-1" in out
    assert "(chance 25.0%)" in out  # the demo's validation set is balanced
    first, second = (os.path.join(demo_data.root, line.rsplit(maxsplit=1)[0])
                     for line in open(demo_data.val_list).read().splitlines()[:2])
    val = tmp_path / "val.txt"  # 3:1 between two classes
    for i in range(3):
        shutil.copy(first, tmp_path / f"a{i}.mp4")
    val.write_text("".join(f"{tmp_path / f'a{i}.mp4'} 0\n" for i in range(3)) + f"{second} 1\n")
    cli.main(["--eval-only", "--resume", str(trained / "last.pt"), "--val-list", str(val), "--workers", "0",
              "--output-dir", str(tmp_path), "--device", "cpu"])
    assert "chance 25.0%; 75.0% by always answering the most frequent class" in capsys.readouterr().out


def test_use_fused_where_triton_cannot_run_is_said_once_not_warned_per_op(demo_data, tmp_path, monkeypatch, capsys):
    import warnings

    import kernels.runtime

    monkeypatch.setattr(kernels.runtime, "INTERPRET", False)  # a CPU without the interpreter: the eager reference
    monkeypatch.setattr(kernels.runtime, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        cli.main(train_args(demo_data, tmp_path, "--epochs", "1", "--max-steps", "1", "--use-fused"))
    assert "adapters: eager reference (TRITON_INTERPRET=1 was not set" in capsys.readouterr().out
    assert not [w for w in caught if issubclass(w.category, kernels.runtime.EagerFallbackWarning)]
