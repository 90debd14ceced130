"""m2clip_fast/data/device.py: batches reach the device one step ahead, unchanged, and become the model's input
there in one way for training, evaluation and prediction."""
import pytest
import torch

from m2clip_fast.data import transforms
from m2clip_fast.data.device import device_batches, device_input, to_device_ahead


def _batches(n):
    return [{"video": torch.full((2, 3), i, dtype=torch.uint8), "flip": torch.tensor([i % 2 == 0, False]),
             "label": torch.tensor([i, i])} for i in range(n)]


@pytest.mark.parametrize("n", [0, 1, 3])
def test_every_batch_arrives_once_in_order_with_its_values(n):
    got = list(to_device_ahead(iter(_batches(n)), torch.device("cpu")))
    assert len(got) == n
    for want, batch in zip(_batches(n), got):
        assert batch.keys() == want.keys() and all(torch.equal(batch[k], want[k]) for k in want)


def test_the_device_step_applies_the_drawn_flips_then_normalises():
    video = torch.randint(0, 256, (2, 3, 3, 4, 5), dtype=torch.uint8)  # [B, T, 3, S, S']
    flips = torch.tensor([True, False])
    got = device_input({"video": video, "flip": flips, "augment_seed": torch.tensor([1, 2])}, torch.device("cpu"))
    want = transforms.model_input(torch.stack([video[0].flip(-1), video[1]]))
    assert torch.equal(got, want)
    views = video[:, None]  # evaluation: [B, V, T, 3, S, S'], no augmentation
    (batch, got), = device_batches([{"video": views, "label": torch.tensor([0, 1])}], torch.device("cpu"))
    assert torch.equal(got, transforms.model_input(views)) and got.shape == (2, 1, 3, 3, 4, 5)


@pytest.mark.cuda
def test_on_cuda_the_moved_tensors_are_on_the_device_and_equal():
    device = torch.device("cuda")
    batches = [{k: v.pin_memory() for k, v in b.items()} for b in _batches(4)]
    for want, batch in zip(_batches(4), to_device_ahead(iter(batches), device)):
        assert batch["video"].device.type == "cuda" and batch["label"].device.type == "cpu"
        assert torch.equal(batch["video"].cpu(), want["video"]) and torch.equal(batch["flip"].cpu(), want["flip"])
