"""Deterministic randomness: named random streams and smooth noise fields in map coordinates.

A :class:`SmoothField` is a sum of random plane waves with a power-law spectrum (a Gaussian-like
random field). It is a function of UTM coordinates, not of a pixel grid, so any window of the
world, and any shifted copy (a cloud's shadow), is evaluated consistently.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np


def stream(seed: int, name: str, *keys: int) -> np.random.Generator:
    """A random generator for one named purpose; equal arguments give equal streams."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), *keys])


@dataclass(frozen=True)
class SmoothField:
    """A zero-mean, unit-variance smooth random field ``f(x, y)`` over map coordinates (m)."""

    kx: np.ndarray  # wave numbers (rad / m)
    ky: np.ndarray
    phase: np.ndarray
    amplitude: np.ndarray

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        min_scale_m: float,
        max_scale_m: float,
        n_waves: int = 96,
        roughness: float = 0.6,
    ) -> SmoothField:
        """Waves with wavelengths log-uniform in ``[min_scale_m, max_scale_m]``.

        ``roughness`` < 1 gives large features with ragged edges (amplitude ~ wavelength^(1 -
        roughness)); amplitudes are normalised so that the field has unit variance.
        """
        wavelength = np.exp(rng.uniform(np.log(min_scale_m), np.log(max_scale_m), n_waves))
        direction = rng.uniform(0.0, 2.0 * np.pi, n_waves)
        k = 2.0 * np.pi / wavelength
        amplitude = (wavelength / max_scale_m) ** (1.0 - roughness)
        amplitude = amplitude / np.sqrt(0.5 * np.sum(amplitude**2))
        return cls(
            kx=k * np.cos(direction),
            ky=k * np.sin(direction),
            phase=rng.uniform(0.0, 2.0 * np.pi, n_waves),
            amplitude=amplitude,
        )

    def sample(
        self, xs: np.ndarray, ys: np.ndarray, shift: tuple[float, float] = (0.0, 0.0)
    ) -> np.ndarray:
        """The field on the grid ``ys x xs`` (pixel centres), at coordinates minus ``shift``.

        ``sample(xs, ys, (dx, dy))[i, j] == f(xs[j] - dx, ys[i] - dy)``: the field moved by
        ``(dx, dy)`` metres east and north.
        """
        dx, dy = shift
        # cos(kx x + ky y + p) = Re(e^{i(ky y + p)} e^{i kx x}): an outer product per wave,
        # summed over waves as one complex matrix product.
        # Phases are formed in float64 (coordinates are ~1e6 m); the product in complex64.
        phase = self.phase - self.kx * dx - self.ky * dy
        ey = (self.amplitude * np.exp(1j * phase))[:, None] * np.exp(
            1j * np.outer(self.ky, np.asarray(ys, dtype=np.float64))
        )
        ex = np.exp(1j * np.outer(self.kx, np.asarray(xs, dtype=np.float64)))
        product = ey.T.astype(np.complex64) @ ex.astype(np.complex64)
        return np.ascontiguousarray(product.real)
