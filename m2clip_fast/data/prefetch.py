"""Batches copied to the device one step ahead, so the copy overlaps the step instead of preceding it."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

MOVED = ("video", "flip")  # what the training step reads on the device (labels go along with the prompts)


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
