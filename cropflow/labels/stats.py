"""Normalisation statistics (training split only) and class weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from models.contract import BandStats


class NormStats(BaseModel):
    """Per-band statistics of the training split (NaN values skipped)."""

    mean: float
    std: float = Field(description="Population standard deviation; 1.0 when the band is flat.")
    min: float | None = Field(None, description="Smallest value (None: no value).")
    max: float | None = Field(None, description="Largest value (None: no value).")
    count: int = Field(description="Values the statistics were computed from.")

    def band_stats(self) -> BandStats:
        """The model contract's normalisation of this band."""
        from models.contract import BandStats  # models/ imports torch: only when asked

        return BandStats(mean=self.mean, std=self.std)


class StatsAccumulator:
    """Streaming per-band sums over blocks of samples (float64, NaN skipped)."""

    #: Rows (values of all bands) converted to float64 at a time.
    CHUNK_ROWS = 65536

    def __init__(self, bands: list[str], band_axis: int = 2) -> None:
        self.bands = list(bands)
        self.band_axis = band_axis
        n = len(bands)
        self._n = np.zeros(n, dtype=np.int64)
        self._sum = np.zeros(n)
        self._sumsq = np.zeros(n)
        self._min = np.full(n, np.inf)
        self._max = np.full(n, -np.inf)

    def add(self, block: np.ndarray) -> None:
        """Add a block of values whose ``band_axis`` runs over ``bands``."""
        if block.size == 0:
            return
        rows = np.moveaxis(np.asarray(block), self.band_axis, -1).reshape(-1, len(self.bands))
        for start in range(0, rows.shape[0], self.CHUNK_ROWS):  # bounded float64 copies
            chunk = rows[start : start + self.CHUNK_ROWS].astype(np.float64)
            finite = np.isfinite(chunk)
            if not finite.all():
                self._n += finite.sum(axis=0)
                low = np.where(finite, chunk, np.inf).min(axis=0)
                high = np.where(finite, chunk, -np.inf).max(axis=0)
                chunk = np.where(finite, chunk, 0.0)
            else:
                self._n += chunk.shape[0]
                low, high = chunk.min(axis=0), chunk.max(axis=0)
            self._sum += chunk.sum(axis=0)
            self._sumsq += (chunk * chunk).sum(axis=0)
            self._min = np.fmin(self._min, low)
            self._max = np.fmax(self._max, high)

    def result(self) -> dict[str, NormStats]:
        """Statistics by band name; a band without any value gets mean 0, std 1."""
        out: dict[str, NormStats] = {}
        for i, band in enumerate(self.bands):
            n = int(self._n[i])
            if n == 0:
                out[band] = NormStats(mean=0.0, std=1.0, count=0)
                continue
            mean = self._sum[i] / n
            var = max(self._sumsq[i] / n - mean * mean, 0.0)
            std = float(np.sqrt(var))
            out[band] = NormStats(
                mean=float(mean),
                std=std if std > 1e-12 else 1.0,
                min=float(self._min[i]),
                max=float(self._max[i]),
                count=n,
            )
        return out


def class_weights(counts: dict[str, int], blend: float) -> dict[str, float]:
    """Inverse-frequency weights blended toward uniform: ``(1 - blend) * inv + blend``.

    ``inv = N / (K * n_c)`` over the K classes present (so a balanced set gets 1.0 everywhere).
    Classes absent from ``counts`` (or with 0) get weight 0: they have no sample to weigh.
    """
    present = {name: n for name, n in counts.items() if n > 0}
    total = sum(present.values())
    k = len(present)
    out: dict[str, float] = {}
    for name, n in counts.items():
        if n <= 0:
            out[name] = 0.0
            continue
        inverse = total / (k * n)
        out[name] = float((1.0 - blend) * inverse + blend)
    return out
