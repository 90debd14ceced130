"""m2clip_fast/data/transforms.py: one random draw per clip — the same crop and flip for every frame —
evenly spaced test crops, uint8 clips from the workers and the model's input made from them on the device,
equal to the float pipeline of before up to uint8 rounding."""
import torch
import torch.nn.functional as F

from m2clip_fast.data import transforms


def _clip(t=4, h=40, w=56, seed=0):
    """uint8 [T, H, W, 3] frames that all show the same image (so per-frame differences can only come
    from the transform)."""
    image = torch.randint(0, 256, (h, w, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return image.expand(t, h, w, 3).contiguous()


def _reference(frames, short_side, crop_size, flip, generator):
    """The float pipeline the workers used to run (resize in float, crop, flip, normalise on the CPU), with
    the same random draws: what the uint8 + device path must reproduce."""
    clip = frames.permute(0, 3, 1, 2).float() / 255
    h, w = clip.shape[-2:]
    scale = short_side / min(h, w)
    clip = F.interpolate(clip, size=(max(short_side, round(h * scale)), max(short_side, round(w * scale))),
                         mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    h, w = clip.shape[-2:]
    top = int(torch.randint(0, h - crop_size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - crop_size + 1, (1,), generator=generator))
    clip = clip[..., top:top + crop_size, left:left + crop_size]
    if flip and torch.rand((), generator=generator) < 0.5:
        clip = clip.flip(-1)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (transforms.CLIP_MEAN, transforms.CLIP_STD))
    return ((clip - mean) / std).transpose(0, 1)


def test_uint8_clips_made_the_model_input_equal_the_float_pipeline():
    """Same crop, same flip, same normalisation; values within one uint8 step of the old float pipeline."""
    frames = torch.randint(0, 256, (3, 40, 56, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    one_step = 1 / 255 / min(transforms.CLIP_STD)
    for seed in range(8):
        clip = transforms.train_clip(frames, 36, 32, True, torch.Generator().manual_seed(seed))
        assert clip.dtype == torch.uint8 and clip.shape == (3, 3, 32, 32)  # [T, 3, S, S]: a quarter of float32
        got = transforms.model_input(clip[None])[0]  # [3, T, S, S], as on the device
        expected = _reference(frames, 36, 32, True, torch.Generator().manual_seed(seed))
        assert (got - expected).abs().max() <= one_step + 1e-6


def test_train_clip_crops_and_flips_every_frame_alike():
    frames = _clip()
    flipped_seen = unflipped_seen = 0
    for seed in range(12):
        plain = transforms.train_clip(frames, 40, 32, False, torch.Generator().manual_seed(seed))
        maybe = transforms.train_clip(frames, 40, 32, True, torch.Generator().manual_seed(seed))
        assert plain.shape == (4, 3, 32, 32)
        for out in (plain, maybe):  # [T, 3, S, S]: every frame identical
            assert all(torch.equal(out[0], out[t]) for t in range(1, 4))
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
    views = transforms.test_views(frames, 32, 3)  # [3 crops, T, 3, 32, 32]
    full = frames.permute(0, 3, 1, 2)  # [T, 3, 32, 64]
    assert views.dtype == torch.uint8 and views.shape == (3, 4, 3, 32, 32)
    for view, left in zip(views, (0, 16, 32)):
        assert torch.equal(view, full[..., left:left + 32])


def test_model_input_maps_the_clip_mean_to_zero_and_puts_channels_before_time():
    mean = torch.tensor([round(255 * m) for m in transforms.CLIP_MEAN], dtype=torch.uint8).view(1, 3, 1, 1)
    out = transforms.model_input(mean.expand(2, 3, 4, 4)[None])  # [1, T=2, 3, 4, 4] uint8
    assert out.shape == (1, 3, 2, 4, 4) and out.dtype == torch.float32 and out.abs().max() < 0.01


def test_random_resized_crop_and_timm_randaugment_are_the_same_for_every_frame():
    """The SSv2 recipe's augmentations: one random-resized crop and one RandAugment draw per clip."""
    frames = _clip(t=3)
    outputs = []
    for seed in range(6):
        out = transforms.train_clip(frames, 40, 32, False, torch.Generator().manual_seed(seed),
                                    randaugment="rand-m7-n4-mstd0.5-inc1", crop_scale=(0.08, 1.0), interpolation="bicubic")
        assert out.shape == (3, 3, 32, 32) and out.dtype == torch.uint8
        assert all(torch.equal(out[0], out[t]) for t in range(1, 3))
        outputs.append(out)
    assert len({o.float().sum().item() for o in outputs}) == len(outputs)  # different draws across clips
    again = transforms.train_clip(frames, 40, 32, False, torch.Generator().manual_seed(0),
                                  randaugment="rand-m7-n4-mstd0.5-inc1", crop_scale=(0.08, 1.0), interpolation="bicubic")
    assert torch.equal(again, outputs[0])  # a clip's draw depends on its generator only


def _device_path(frames, seeds, randaugment, flip=True):
    """What training does now: workers crop and draw; the batch is augmented and converted on the device."""
    clips, flips, aug_seeds = [], [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        clips.append(transforms.crop_clip(frames, 36, 32, gen).contiguous())
        flipped, aug_seed = transforms.draw_augment(flip, randaugment, gen)
        flips.append(flipped)
        aug_seeds.append(aug_seed)
    video = transforms.augment_batch(torch.stack(clips), torch.tensor(flips), torch.tensor(aug_seeds), randaugment)
    return transforms.model_input(video), flips


def test_flips_and_randaugment_on_the_device_equal_the_worker_pipeline():
    """Same crop, flip, RandAugment draw and normalisation as a worker doing everything (``train_clip``), bit for
    bit, for a batch; every frame of a clip augmented alike; flips drawn both ways."""
    from torchvision.transforms import v2

    frames = _clip(t=3, seed=2)
    seeds = list(range(10))
    for randaugment in (None, v2.RandAugment()):
        got, flips = _device_path(frames, seeds, randaugment)
        expected = torch.stack([transforms.model_input(transforms.train_clip(
            frames, 36, 32, True, torch.Generator().manual_seed(s), randaugment)[None])[0] for s in seeds])
        assert torch.equal(got, expected)
        assert 0 < sum(flips) < len(seeds)
        assert all(torch.equal(got[:, :, 0], got[:, :, t]) for t in range(1, 3))  # [B, 3, T, S, S]


def test_a_clips_randaugment_depends_on_its_draw_only():
    """The device path does not read or disturb the global RNG: the same draws give the same batch."""
    from torchvision.transforms import v2

    frames = _clip(t=2, seed=3)
    first, _ = _device_path(frames, [5, 6, 7], v2.RandAugment())
    state = torch.get_rng_state()
    torch.manual_seed(1234)
    second, _ = _device_path(frames, [5, 6, 7], v2.RandAugment())
    assert torch.equal(first, second)
    torch.set_rng_state(state)
