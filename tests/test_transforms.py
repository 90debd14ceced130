"""m2clip_fast/data/transforms.py: one random draw per clip — the same crop and flip for every frame —
evenly spaced test crops, CLIP normalisation."""
import torch

from m2clip_fast.data import transforms


def _clip(t=4, h=40, w=56, seed=0):
    """uint8 [T, H, W, 3] frames that all show the same image (so per-frame differences can only come
    from the transform)."""
    image = torch.randint(0, 256, (h, w, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return image.expand(t, h, w, 3).contiguous()


def test_train_clip_crops_and_flips_every_frame_alike():
    frames = _clip()
    flipped_seen = unflipped_seen = 0
    for seed in range(12):
        plain = transforms.train_clip(frames, 40, 32, False, torch.Generator().manual_seed(seed))
        maybe = transforms.train_clip(frames, 40, 32, True, torch.Generator().manual_seed(seed))
        assert plain.shape == (3, 4, 32, 32)
        for out in (plain, maybe):  # [3, T, S, S]: every frame identical
            assert all(torch.equal(out[:, 0], out[:, t]) for t in range(1, 4))
        if torch.equal(maybe, plain):
            unflipped_seen += 1
        else:
            assert torch.equal(maybe, plain.flip(-1))  # the same crop, mirrored
            flipped_seen += 1
    assert flipped_seen and unflipped_seen
    crops = {transforms.train_clip(frames, 40, 32, False, torch.Generator().manual_seed(s))[0, 0, 0, 0].item()
             for s in range(12)}
    assert len(crops) > 1  # the crop position is random across clips


def test_test_views_are_evenly_spaced_along_the_long_side():
    frames = _clip(h=32, w=64)  # already at the crop size on the short side: no resize
    views = transforms.test_views(frames, 32, 3)  # [3 crops, 3, T, 32, 32]
    full = transforms.normalize(transforms.to_float(frames))  # [3, T, 32, 64]
    for view, left in zip(views, (0, 16, 32)):
        torch.testing.assert_close(view, full[..., left:left + 32])


def test_normalize_maps_the_clip_mean_to_zero_and_swaps_time_and_channels():
    mean = torch.tensor(transforms.CLIP_MEAN).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    out = transforms.normalize(mean)
    assert out.shape == (3, 2, 4, 4) and out.abs().max() < 1e-6


def test_random_resized_crop_and_timm_randaugment_are_the_same_for_every_frame():
    """The SSv2 recipe's augmentations: one random-resized crop and one RandAugment draw per clip."""
    frames = _clip(t=3)
    outputs = []
    for seed in range(6):
        out = transforms.train_clip(frames, 40, 32, False, torch.Generator().manual_seed(seed),
                                    randaugment="rand-m7-n4-mstd0.5-inc1", crop_scale=(0.08, 1.0), interpolation="bicubic")
        assert out.shape == (3, 3, 32, 32)
        assert all(torch.equal(out[:, 0], out[:, t]) for t in range(1, 3))
        outputs.append(out)
    assert len({o.sum().item() for o in outputs}) == len(outputs)  # different draws across clips
    again = transforms.train_clip(frames, 40, 32, False, torch.Generator().manual_seed(0),
                                  randaugment="rand-m7-n4-mstd0.5-inc1", crop_scale=(0.08, 1.0), interpolation="bicubic")
    assert torch.equal(again, outputs[0])  # a clip's draw depends on its generator only
