"""The device step, the one way a batch reaches the model in training, evaluation and prediction: the uint8
copy (one step ahead on CUDA, so it overlaps the step instead of preceding it), then the flips and RandAugment
the workers drew (training), then the conversion to float and CLIP's normalisation, batched on the device."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Optional

import torch

from .transforms import augment_batch, model_input

MOVED = ("video", "flip")  # what the device step reads on the device (labels go along with the prompts)


def device_input(batch: dict, device: torch.device, randaugment: Optional[torch.nn.Module] = None) -> torch.Tensor:
    """A collated batch -> the model's float input on ``device``: its uint8 ``video`` copied (a no-op when
    :func:`to_device_ahead` moved it), the augmentation drawn by the workers applied where the batch has one
    (``"flip"``, ``"augment_seed"``; ``randaugment``: torchvision's, or None), then normalised.
    uint8 ``[B, (V,) T, 3, S, S]`` -> float ``[B, (V,) 3, T, S, S]``."""
    video = batch["video"].to(device, non_blocking=True)
    if "flip" in batch:
        video = augment_batch(video, batch["flip"], batch["augment_seed"], randaugment)
    return model_input(video)


def device_batches(batches: Iterable[dict], device: torch.device, randaugment: Optional[torch.nn.Module] = None
                   ) -> Iterator[tuple[dict, torch.Tensor]]:
    """``(batch, its model input on the device)`` for each batch, the copies issued one batch ahead."""
    for batch in to_device_ahead(batches, device):
        yield batch, device_input(batch, device, randaugment)


def to_device_ahead(batches: Iterable[dict], device: torch.device, keys: tuple[str, ...] = MOVED) -> Iterator[dict]:
    """Yield each batch with its ``keys`` tensors on ``device``. On CUDA the next batch's copy is issued on a
    side stream before the current batch is yielded, so it runs while the current step computes (from
    pinned memory: the loader's ``pin_memory``); the step's stream waits for the copy only when it reaches
    the batch. Elsewhere the batches are moved as they come."""
    if device.type != "cuda":
        for batch in batches:
            yield {k: v.to(device) if k in keys else v for k, v in batch.items()}
        return
    side = torch.cuda.Stream(device)

    def issue(batch: dict) -> dict:
        with torch.cuda.stream(side):
            return {k: v.to(device, non_blocking=True) if k in keys else v for k, v in batch.items()}

    def ready(batch: dict) -> dict:
        compute = torch.cuda.current_stream(device)
        compute.wait_stream(side)
        for k in keys:
            if k in batch:
                batch[k].record_stream(compute)  # allocated on the side stream, freed after the step's use
        return batch

    ahead = None
    for batch in batches:
        if ahead is not None:
            current = ready(ahead)
            ahead = issue(batch)
            yield current
        else:
            ahead = issue(batch)
    if ahead is not None:
        yield ready(ahead)
