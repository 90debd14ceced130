"""The paper's zero-shot protocols: a K400-trained model evaluated, without training, on HMDB51 and UCF101
(the three official test splits) and on the three Kinetics-600 zero-shot class subsets (160 classes each,
not in K400); each reported as the mean ± std over its three splits.

Class lists and split lists ship in ``m2clip_fast/assets/`` (their sources: ``assets/README.md``). The
official split files users download with the data sets are read in their own formats too: UCF101
``testlist0N.txt`` (``Class/v_Class_gXX_cYY.avi`` lines) and HMDB51 ``<class>_test_splitN.txt`` (one file per
class, ``video.avi 0|1|2`` lines, 2 = test).
"""
from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass
from typing import Callable, Optional

from .data import VideoRecord, read_class_names, read_video_list

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


def prompt_words(name: str) -> str:
    """A class name as the words the text tower reads: ``"ApplyEyeMakeup"`` -> ``"apply eye makeup"``,
    ``"brush_hair"`` -> ``"brush hair"``, ``"YoYo"`` -> ``"yo yo"``."""
    name = name.replace("_", " ")
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return " ".join(name.lower().split())


@dataclass(frozen=True)
class ZeroShotSplit:
    """One split: its class names (as prompt words), and its videos with labels into them."""

    name: str
    class_names: list[str]
    records: list[VideoRecord]


@dataclass(frozen=True)
class Protocol:
    """A zero-shot benchmark: for split ``n`` (1..3), the class CSV and the shipped ``<video> <label>`` list
    (``{n}`` in the file names), and where a video sits under the data root when not at the listed path."""

    name: str
    classes: str  # a CSV in assets/, "{n}" for per-split class subsets
    videos: str  # a list in assets/splits/
    folder: Callable[[str], str]  # class name (as in the CSV) -> the class folder of the official layout

    def split(self, n: int, root: str, split_dir: Optional[str] = None) -> ZeroShotSplit:
        names = read_class_names(os.path.join(ASSETS, self.classes.format(n=n)))
        if split_dir:
            records = read_official_split(self.name, split_dir, n, root, names)
        else:
            records = read_video_list(os.path.join(ASSETS, "splits", self.videos.format(n=n)), root, len(names))
            records = [_locate(r, root, self.folder(names[r.label])) for r in records]
        return ZeroShotSplit(f"{self.name} split {n}", [prompt_words(c) for c in names], records)


def _locate(record: VideoRecord, root: str, folder: str) -> VideoRecord:
    """The shipped lists name videos without their class folder; the official layouts keep one folder per
    class. Use ``root/folder/video`` when ``root/video`` does not exist."""
    if os.path.exists(record.path):
        return record
    nested = os.path.join(root, folder, os.path.relpath(record.path, root))
    return VideoRecord(nested, record.label) if os.path.exists(nested) else record


PROTOCOLS = {
    "hmdb51": Protocol("hmdb51", "hmdb51_labels.csv", "hmdb51_test_split{n}.txt", lambda c: c.replace(" ", "_")),
    "ucf101": Protocol("ucf101", "ucf101_labels.csv", "ucf101_test_split{n}.txt", lambda c: c),
    "k600": Protocol("k600", "k600_zeroshot_split{n}_labels.csv", "k600_zeroshot_split{n}.txt", lambda c: ""),
}


def read_official_split(dataset: str, split_dir: str, n: int, root: str, class_names: list[str]) -> list[VideoRecord]:
    """Test videos of split ``n`` from the official split files in ``split_dir`` (UCF101 ``testlist0N.txt``;
    HMDB51 ``<class>_test_splitN.txt``), labelled by ``class_names`` (the CSV's names)."""
    if dataset == "ucf101":
        by_folder = {c: i for i, c in enumerate(class_names)}
        path = os.path.join(split_dir, f"testlist0{n}.txt")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"UCF101 split file not found: {path}")
        records = []
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                video = line.strip().split()[0] if line.strip() else ""
                if not video:
                    continue
                folder = video.split("/")[0]
                if folder not in by_folder:
                    raise ValueError(f"{path}:{lineno}: class folder {folder!r} is not a UCF101 class")
                records.append(VideoRecord(os.path.join(root, video), by_folder[folder]))
        return records
    if dataset == "hmdb51":
        records = []
        for label, name in enumerate(class_names):
            folder = name.replace(" ", "_")
            path = os.path.join(split_dir, f"{folder}_test_split{n}.txt")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"HMDB51 split file not found: {path}")
            with open(path) as f:
                for lineno, line in enumerate(f, 1):
                    parts = line.split()
                    if not parts:
                        continue
                    if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                        raise ValueError(f"{path}:{lineno}: expected '<video> 0|1|2', got {line.strip()!r}")
                    if parts[1] == "2":  # 2: test, 1: train, 0: not used in this split
                        records.append(VideoRecord(os.path.join(root, folder, parts[0]), label))
        return records
    raise ValueError(f"official split files are read for hmdb51 and ucf101, not {dataset!r}")


def summarize(results: list[dict]) -> dict:
    """Mean and (sample) standard deviation of top-1/top-5 over splits."""
    out = {}
    for key in ("top1", "top5"):
        values = [r[key] for r in results]
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out
