import json
import os
import subprocess
import sys

import pytest
import torch

from m2clip_fast import predict, run_state
from m2clip_fast.data.synthetic import CLASSES
from m2clip_fast.cli import main

from .runs import records, train_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))








def test_short_training_run_logs_and_checkpoints(demo_data, tmp_path, capsys):
    main(train_args(demo_data, tmp_path, "--epochs", "2", "--warmup-epochs", "1", "--log-interval", "2"))
    logged = records(tmp_path)
    train = [r for r in logged if r["split"] == "train"]
    val = [r for r in logged if r["split"] == "val"]
    assert train and len(val) == 2
    assert {"epoch", "step", "total", "contrastive", "crossmodal", "visual", "mlm", "lr"} <= set(train[0])
    assert {"epoch", "step", "top1_crossmodal", "top5_crossmodal", "top1_visual", "top5_visual", "top1", "top5"} <= set(val[0])
    for r in train:  # the logged total is the paper's weighting of the logged terms (means are linear)
        assert r["total"] == pytest.approx(0.5 * (r["contrastive"] + r["crossmodal"]) + r["visual"] + 0.1 * r["mlm"])
    ckpt = run_state.load(str(tmp_path / "last.pt"))
    assert ckpt["epoch"] == 2 and ckpt["step"] == 8 and ckpt["class_names"] == list(CLASSES)
    assert "done in" in capsys.readouterr().out


def _trainable(path):
    ckpt = run_state.load(path)
    model = run_state.model_from_checkpoint(ckpt)
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def test_resume_mid_epoch_equals_uninterrupted(demo_data, tmp_path):
    full, parts = tmp_path / "full", tmp_path / "parts"
    main(train_args(demo_data, full, "--epochs", "2"))
    main(train_args(demo_data, parts, "--epochs", "2", "--max-steps", "3", "--save-every", "1"))
    assert run_state.load(str(parts / "last.pt"))["batches_done"] == 3  # stopped mid-epoch
    main(train_args(demo_data, parts, "--epochs", "2", "--resume", "auto"))
    a, b = _trainable(str(full / "last.pt")), _trainable(str(parts / "last.pt"))
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_atomic_save_keeps_the_previous_checkpoint(tmp_path):
    path = str(tmp_path / "last.pt")
    run_state.atomic_save({"format": run_state.FORMAT, "v": 1}, path)

    class Exploding:
        def __reduce__(self):
            raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError, match="crash mid-write"):
        run_state.atomic_save({"format": run_state.FORMAT, "v": Exploding()}, path)
    assert run_state.load(path)["v"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


def test_zero_shot_eval_and_predict(demo_data, tmp_path, capsys):
    main(train_args(demo_data, tmp_path, "--epochs", "1"))
    other = tmp_path / "other.csv"
    other.write_text("id,name\n0,moving down\n1,moving up\n")
    val = tmp_path / "val.txt"
    val.write_text("videos/val_0003.mp4 0\nvideos/val_0002.mp4 1\n")
    main(["--eval-only", "--resume", str(tmp_path / "last.pt"), "--val-list", str(val), "--data-root", demo_data.root,
          "--eval-classes", str(other), "--num-frames", "4",  # model and classes: the checkpoint's
          "--sampling-rate", "2", "--views", "1x1", "--workers", "0", "--output-dir", str(tmp_path), "--device", "cpu"])
    zero_shot = records(tmp_path)[-1]
    assert zero_shot["split"] == "val" and zero_shot["videos"] == 2 and zero_shot["top1_visual"] is None
    assert zero_shot["top1"] == zero_shot["top1_crossmodal"]

    model = run_state.model_from_checkpoint(run_state.load(str(tmp_path / "last.pt")))
    clip = os.path.join(demo_data.root, "videos/val_0001.mp4")
    labels = ["moving right", "a dog", "moving up"]
    result = predict.predict(model, clip, labels, top_k=3)
    probs = [p for _, p in result]
    assert sorted(label for label, _ in result) == sorted(labels) and probs == sorted(probs, reverse=True)
    assert abs(sum(probs) - 1.0) < 1e-5
    # Each probability belongs to its label, whatever order the labels come in.
    shuffled = dict(predict.predict(model, clip, labels[::-1], top_k=3))
    assert all(abs(shuffled[label] - p) < 1e-5 for label, p in result)
    assert predict.predict(model, clip, labels, top_k=1) == result[:1]
    predict.main([os.path.join(demo_data.root, "videos/val_0001.mp4"), "--checkpoint", str(tmp_path / "last.pt"),
                  "--classes", demo_data.classes_csv, "--top-k", "2", "--device", "cpu"])
    printed = capsys.readouterr().out.strip().splitlines()[-2:]
    assert len(printed) == 2 and all(line.rstrip().endswith("%") for line in printed)


@pytest.mark.parametrize(
    "change, message",
    [
        (("--train-list", "nope.txt"), "--train-list: file not found: nope.txt"),
        (("--preset", "vit-h99"), "invalid choice: 'vit-h99'"),
        (("--views", "4by3"), "--views must look like 4x3"),
        (("--classes", None), "label 2 is out of range for 2 classes"),
    ],
)
def test_cli_errors_are_clear(demo_data, tmp_path, capsys, change, message):
    args = train_args(demo_data, tmp_path, "--epochs", "1")
    if change[1] is None:  # a class list with fewer classes than the labels use
        two = tmp_path / "two.csv"
        two.write_text("id,name\n0,a\n1,b\n")
        change = (change[0], str(two))
    args[args.index(change[0]) + 1] = change[1]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_two_process_ddp_with_torchrun(demo_data, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",  # a free port
           os.path.join(ROOT, "train.py"), *train_args(demo_data, tmp_path, "--epochs", "1")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    val = [r for r in records(tmp_path) if r["split"] == "val"]
    assert len(val) == 1 and val[0]["videos"] == 4  # both ranks' halves of the 4 val videos, reduced
    assert run_state.load(str(tmp_path / "last.pt"))["step"] == 2  # 16 videos / (2 ranks × 4) per step


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_and_gradient_accumulation(demo_data, tmp_path, amp):
    main(train_args(demo_data, tmp_path, "--epochs", "1", "--amp", amp, "--grad-accum", "2", "--log-interval", "1"))
    train = [r for r in records(tmp_path) if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2]  # 4 batches, one optimizer step per 2
    for r in train:  # under mixed precision too, the logged total is the weighting of the logged terms
        assert r["total"] == pytest.approx(0.5 * (r["contrastive"] + r["crossmodal"]) + r["visual"] + 0.1 * r["mlm"],
                                           rel=1e-3)
    assert bool(run_state.load(str(tmp_path / "last.pt"))["scaler"]) == (amp == "fp16")  # fp16: a grad scaler


def test_a_fresh_run_starts_a_fresh_metrics_log(demo_data, tmp_path, capsys):
    main(train_args(demo_data, tmp_path, "--epochs", "1", "--log-interval", "1"))
    first = records(tmp_path)
    main(train_args(demo_data, tmp_path, "--epochs", "1", "--log-interval", "1"))  # not --resume: a new run
    assert len(records(tmp_path)) == len(first)  # not appended to the old run's lines
    aside = [name for name in os.listdir(tmp_path) if name.startswith("metrics.") and name != "metrics.jsonl"]
    assert len(aside) == 1 and "is now " + aside[0] in capsys.readouterr().out
    with open(tmp_path / aside[0]) as f:
        assert [json.loads(line) for line in f] == first


def test_default_workers_follow_the_cpus_this_process_may_use(demo_data, tmp_path, monkeypatch):
    from m2clip_fast import cli

    from m2clip_fast import plan

    monkeypatch.setattr(plan, "available_cpus", lambda: 1)
    base = ["--train-list", demo_data.train_list, "--classes", demo_data.classes_csv, "--data-root", demo_data.root,
            "--pretrained", "random"]
    assert cli.resolve(base).data.workers == 1  # the default 4 would oversubscribe one CPU
    assert cli.resolve([*base, "--workers", "3"]).data.workers == 3  # an explicit choice stands


def test_top5_is_shown_only_when_there_are_more_than_five_classes(demo_data, tmp_path, capsys):
    main(train_args(demo_data, tmp_path, "--epochs", "1"))
    summary = [line for line in capsys.readouterr().out.splitlines() if line.startswith("done in")][-1]
    assert "top-1" in summary and "top-5" not in summary  # the test demo_data has 4 classes


def test_prediction_scores_a_clip_exactly_as_evaluation_does(demo_data, tmp_path):
    """One scoring rule: predicting each validation video with the checkpoint's settings and its classes
    reproduces evaluation's cross-modal top-1."""
    main(train_args(demo_data, tmp_path, "--epochs", "1"))
    evaluated = [r for r in records(tmp_path) if r["split"] == "val"][-1]
    ckpt = run_state.load(str(tmp_path / "last.pt"))
    model = run_state.model_from_checkpoint(ckpt)
    correct = []
    for line in open(demo_data.val_list).read().splitlines():
        path, label = line.rsplit(maxsplit=1)
        top = predict.predict(model, os.path.join(demo_data.root, path), ckpt["class_names"], top_k=1,
                              settings=ckpt["settings"])
        correct.append(top[0][0] == ckpt["class_names"][int(label)])
    assert len(correct) == evaluated["videos"]
    assert 100.0 * sum(correct) / len(correct) == pytest.approx(evaluated["top1_crossmodal"])


def test_validation_cadence_and_cheap_views_during_training(demo_data, tmp_path):
    """--eval-every 2 over 3 epochs validates after epochs 1 and 2 (the last) with the quick 1x1 views, then
    evaluates the finished model once with the full --views."""
    main(train_args(demo_data, tmp_path, "--epochs", "3", "--eval-every", "2", "--views", "2x1"))
    val = [(r["epoch"], r["views"]) for r in records(tmp_path) if r["split"] == "val"]
    assert val == [(1, "1x1"), (2, "1x1"), (3, "2x1")]


def test_init_from_transfers_a_run_to_a_new_label_set(demo_data, tmp_path, capsys):
    """A 4-class run started on 2 other classes: adapters and the rest kept, class-sized heads reset."""
    main(train_args(demo_data, tmp_path / "source", "--epochs", "1"))
    classes = tmp_path / "two.csv"
    classes.write_text("id,name\n0,moving left\n1,moving right\n")
    two = tmp_path / "two.txt"
    two.write_text("".join(line + "\n" for line in open(demo_data.train_list).read().splitlines()
                           if line.endswith((" 0", " 1"))))
    capsys.readouterr()
    main([*train_args(demo_data, tmp_path / "target", "--epochs", "1"), "--train-list", str(two), "--val-list", str(two),
          "--classes", str(classes), "--init-from", str(tmp_path / "source" / "last.pt")])
    out = capsys.readouterr().out
    assert "initialised from" in out and "visual_head.weight" in out and "mlm_head.decoder.weight" in out
    target = run_state.model_from_checkpoint(run_state.load(str(tmp_path / "target" / "last.pt")))
    assert target.cfg.num_classes == 2 and target.visual_head.weight.shape[0] == 2
    source = run_state.load(str(tmp_path / "source" / "last.pt"))
    model, kept, reset = run_state.transfer_from_checkpoint(source, 2, 6)  # [PAD][UNK][MASK] moving left right
    assert set(reset) == {"visual_head.weight", "visual_head.bias", "mlm_head.decoder.weight", "mlm_head.bias"}
    weights = model.state_dict()
    assert kept and all(torch.equal(weights[n], source["model"][n]) for n in kept)


def test_tensorboard_and_the_data_wait_share_are_logged(demo_data, tmp_path):
    main(train_args(demo_data, tmp_path, "--epochs", "1", "--log-interval", "1", "--tensorboard"))
    train = [r for r in records(tmp_path) if r["split"] == "train"]
    assert train and all(0.0 <= r["data_wait"] <= 1.0 for r in train)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/total", "train/lr", "train/clips_per_s", "train/data_wait", "val/top1"} <= tags
    assert [e.value for e in events.Scalars("train/total")] == pytest.approx([r["total"] for r in train])


def test_two_nodes_rendezvous_on_loopback(demo_data, tmp_path):
    """torchrun --nnodes 2: two "nodes" (one process each) find each other through c10d rendezvous on this
    machine's loopback and train as one world of two ranks."""
    import socket

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                               "--node_rank", str(rank), "--rdzv_backend", "c10d", "--rdzv_id", "m2clip-test",
                               "--rdzv_endpoint", f"127.0.0.1:{port}", os.path.join(ROOT, "train.py"),
                               *train_args(demo_data, tmp_path, "--epochs", "1")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert "cpu x 2" in outputs[0][0] + outputs[1][0]  # one world of two ranks
    assert run_state.load(str(tmp_path / "last.pt"))["step"] == 2  # 16 videos / (2 ranks × 4) per step


def test_the_released_ssv2_augmentations_train(demo_data, tmp_path):
    main(train_args(demo_data, tmp_path, "--epochs", "1", "--randaugment", "rand-m7-n4-mstd0.5-inc1", "--crop-scale",
                    "0.08,1", "--interpolation", "bicubic", "--workers", "2"))
    settings = run_state.load(str(tmp_path / "last.pt"))["settings"]
    assert (settings["randaugment"], settings["crop_scale"], settings["interpolation"]) == (
        "rand-m7-n4-mstd0.5-inc1", "0.08,1", "bicubic")
