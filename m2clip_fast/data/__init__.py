"""Video data: sampling, clip-consistent transforms, the decord dataset and the synthetic default."""
from .dataset import Augmentation, FrameSampling, UnreadableData, VideoDataset, VideoRecord, decode_frames, read_class_names, read_video_list
from .sampler import EpochSampler
from .synthetic import make_synthetic_dataset

__all__ = ["Augmentation", "EpochSampler", "FrameSampling", "UnreadableData", "VideoDataset", "VideoRecord", "decode_frames", "make_synthetic_dataset", "read_class_names",
           "read_video_list"]
