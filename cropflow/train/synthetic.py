"""Small learnable training data made in memory (tests, benchmarks, smoke runs).

Each class has its own temporal signature per band (a phase-shifted seasonal curve plus
noise), so that every model family can learn it in a few epochs. Sizes are explicit; nothing
here is used by the pipeline itself.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from cropflow.classes import IGNORE_INDEX, ClassDef, ClassMap
from cropflow.train.data import SplitArrays, TrainingData
from models.contract import BandStats

_EPOCH_2021 = int(np.datetime64("2021-01-01", "D").astype(np.int64))


def _signature(k: int, n_time: int, n_bands: int, separation: float) -> npt.NDArray[np.float32]:
    t = np.linspace(0.0, 2.0 * np.pi, n_time, endpoint=False)
    sig = np.stack([np.sin(t + 0.9 * k + 0.5 * b) for b in range(n_bands)], axis=1)
    return (separation * sig + 0.2 * k).astype(np.float32)  # [T, C]


def synthetic_training_data(
    kind: Literal["pixel", "patch", "field"] = "pixel",
    *,
    sizes: tuple[int, int, int] = (96, 32, 32),
    n_time: int = 6,
    bands: tuple[str, ...] = ("red", "nir"),
    classes: tuple[str, ...] = ("wheat", "maize", "forest"),
    size: int = 8,
    separation: float = 1.0,
    noise: float = 0.5,
    seed: int = 0,
    uri: str = "memory://synthetic",
) -> TrainingData:
    """A :class:`TrainingData` with ``sizes`` = samples per (train, val, test) split.

    Pixel: ``[N, T, C]``; patch: ``[N, T, C, size, size]`` with two class regions per patch
    (left/right of a random vertical cut) and an unlabelled border column; field: ``[N, T, C,
    size, size]`` canvases with a random rectangular field mask (values outside it are NaN).
    """
    rng = np.random.default_rng(seed)
    k = len(classes)
    c = len(bands)
    sigs = np.stack([_signature(i, n_time, c, separation) for i in range(k)])  # [K, T, C]
    dates = _EPOCH_2021 + 20 + 15 * np.arange(n_time, dtype=np.int64)
    splits: dict[str, SplitArrays] = {}
    for name, n in zip(("train", "val", "test"), sizes, strict=True):
        field_mask = None
        if kind == "pixel":
            y = rng.integers(0, k, n)
            x = sigs[y] + noise * rng.standard_normal((n, n_time, c)).astype(np.float32)
        elif kind == "patch":
            left = rng.integers(0, k, n)
            right = (left + rng.integers(1, k, n)) % k if k > 1 else left
            cut = rng.integers(1, size, n)
            cols = np.arange(size)[None, None, :]
            y = np.where(cols < cut[:, None, None], left[:, None, None], right[:, None, None])
            y = np.broadcast_to(y, (n, size, size)).copy()
            x = np.moveaxis(sigs[y], (1, 2), (3, 4))  # [N, T, C, H, W]
            x = x + noise * rng.standard_normal(x.shape)
            y[:, :, 0] = IGNORE_INDEX
        else:
            y = rng.integers(0, k, n)
            x = np.broadcast_to(sigs[y][..., None, None], (n, n_time, c, size, size)).copy()
            x = x + noise * rng.standard_normal(x.shape)
            field_mask = np.zeros((n, size, size), dtype=bool)
            for i in range(n):
                r0, c0 = rng.integers(0, size // 2, 2)
                r1, c1 = rng.integers(size // 2 + 1, size + 1, 2)
                field_mask[i, r0:r1, c0:c1] = True
            x = np.where(field_mask[:, None, None], x, np.nan)
        splits[name] = SplitArrays(
            x=np.ascontiguousarray(x, dtype=np.float32),
            y=np.asarray(y, dtype=np.int64),
            dates=np.broadcast_to(dates, (n, n_time)).copy(),
            pad_mask=np.zeros((n, n_time), dtype=bool),
            field_mask=field_mask,
        )
    train_x = splits["train"].x
    axes = tuple(i for i in range(train_x.ndim) if i != 2)
    mean = np.nanmean(train_x, axis=axes)
    std = np.nanstd(train_x, axis=axes)
    class_map = ClassMap(classes=[ClassDef(id=10 * (i + 1), name=n) for i, n in enumerate(classes)])
    return TrainingData(
        uri=uri,
        input_kind=kind,
        time_kind="composite",
        bands=list(bands),
        class_map=class_map,
        normalisation={
            b: BandStats(mean=float(mean[i]), std=max(float(std[i]), 1e-6))
            for i, b in enumerate(bands)
        },
        splits=splits,
        class_weights=dict.fromkeys(classes, 1.0),
        n_time=n_time,
        period="15D",
        patch_size=size if kind == "patch" else None,
    )
