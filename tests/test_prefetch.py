"""m2clip_fast/data/prefetch.py: batches reach the device one step ahead, unchanged."""
import pytest
import torch

from m2clip_fast.data.prefetch import to_device_ahead


def _batches(n):
    return [{"video": torch.full((2, 3), i, dtype=torch.uint8), "flip": torch.tensor([i % 2 == 0, False]),
             "label": torch.tensor([i, i])} for i in range(n)]


@pytest.mark.parametrize("n", [0, 1, 3])
def test_every_batch_arrives_once_in_order_with_its_values(n):
    got = list(to_device_ahead(iter(_batches(n)), torch.device("cpu")))
    assert len(got) == n
    for want, batch in zip(_batches(n), got):
        assert batch.keys() == want.keys() and all(torch.equal(batch[k], want[k]) for k in want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_moved_tensors_are_on_the_device_and_equal():
    device = torch.device("cuda")
    batches = [{k: v.pin_memory() for k, v in b.items()} for b in _batches(4)]
    for want, batch in zip(_batches(4), to_device_ahead(iter(batches), device)):
        assert batch["video"].device.type == "cuda" and batch["label"].device.type == "cpu"
        assert torch.equal(batch["video"].cpu(), want["video"]) and torch.equal(batch["flip"].cpu(), want["flip"])
