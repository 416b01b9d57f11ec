"""The compositing kernel: masked temporal median, gap filling, mask dilation (pure numpy).

A NaN-aware median (``np.nanmedian``) over a handful of dates is slow: it sorts every pixel
with Python-level NaN handling. Here observations stay in their stored dtype (uint16 DN or
float32) and are ordered along time by a *sorting network* applied to whole 2-D slices
(vectorised ``minimum``/``maximum``). Missing observations are replaced alternately by the
lowest and the highest value of the dtype (0 / 65535, -inf / +inf), so that the valid ones sit
in the middle: the median of the ``c`` valid values is then at the fixed middle position(s)
``(n-1)//2`` and ``(n-1)//2 + 1``, chosen per pixel only by the parity of the number missing.
Only the comparators those two positions depend on are kept (a selection network).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy.ndimage import maximum_filter1d

#: Comparator modes: which outputs of a compare-exchange are needed.
MIN_ONLY, MAX_ONLY, BOTH = 1, 2, 3


@lru_cache(maxsize=64)
def batcher_network(n: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sorting network for ``n`` inputs (ascending).

    Built for the next power of two and pruned of comparators that touch padding (padding
    holds +inf, so those comparators never swap).
    """
    if n < 2:
        return ()
    p = 1 << (n - 1).bit_length()
    t = p.bit_length() - 1
    pairs: list[tuple[int, int]] = []
    pp = 1 << (t - 1)
    while pp > 0:
        q, r, d = 1 << (t - 1), 0, pp
        while True:
            pairs.extend((i, i + d) for i in range(p - d) if (i & pp) == r)
            if q == pp:
                break
            d, q, r = q - pp, q >> 1, pp
        pp >>= 1
    return tuple((i, j) for i, j in pairs if j < n)


@lru_cache(maxsize=128)
def pruned_network(n: int, positions: frozenset[int]) -> tuple[tuple[int, int, int], ...]:
    """The comparators of :func:`batcher_network` that output ``positions`` depend on.

    Each entry is ``(i, j, mode)``: mode says whether the min (to ``i``), the max (to ``j``)
    or both are still needed downstream.
    """
    needed = set(positions)
    kept: list[tuple[int, int, int]] = []
    for i, j in reversed(batcher_network(n)):
        mode = (MIN_ONLY if i in needed else 0) | (MAX_ONLY if j in needed else 0)
        if mode:
            kept.append((i, j, mode))
            needed.update((i, j))
    return tuple(reversed(kept))


def network_sort(
    rows: list[np.ndarray], positions: frozenset[int] | None = None
) -> list[np.ndarray]:
    """Sort equally shaped arrays element-wise along the list (ascending), in place.

    Only ``positions`` of the returned list are exact (all when None). Arrays are swapped by
    reference, so the returned list may hold them in another order.
    """
    n = len(rows)
    if n < 2:
        return rows
    spare = np.empty_like(rows[0])
    wanted = frozenset(range(n)) if positions is None else positions
    for i, j, mode in pruned_network(n, wanted):
        a, b = rows[i], rows[j]
        if mode == BOTH:
            np.minimum(a, b, out=spare)
            np.maximum(a, b, out=b)
            rows[i], spare = spare, a
        elif mode == MAX_ONLY:
            np.maximum(a, b, out=b)
        else:
            np.minimum(a, b, out=a)
    return rows


def extremes(dtype: np.dtype) -> tuple[float, float]:
    """The lowest and highest values of a kernel dtype (unsigned int or float)."""
    if np.issubdtype(dtype, np.unsignedinteger):
        return 0, float(np.iinfo(dtype).max)
    if np.issubdtype(dtype, np.floating):
        return -np.inf, np.inf
    raise TypeError(f"kernel dtype must be unsigned or float, not {dtype}")


def _select(cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(cond, a, b)


def _select_unsigned(cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``where(cond, a, b)`` for unsigned arrays with ``a >= b``, by arithmetic (faster)."""
    out = np.subtract(a, b)
    out *= cond
    out += b
    result: np.ndarray = out
    return result


class MedianMask:
    """What the median of every band of one time step shares: the validity of each of its
    D observations, their count, and where each missing observation goes high (not low)."""

    def __init__(self, valid: np.ndarray) -> None:
        if len(valid) == 0:
            raise ValueError("a median needs at least one observation")
        self.valid = valid
        self.count = valid.sum(axis=0, dtype=np.uint16)
        self.empty = self.count == 0
        self.any_empty = bool(self.empty.any())
        #: per observation: True when every pixel of it is valid (nothing to replace)
        self.complete = [bool(v.all()) for v in valid]
        odd = np.zeros(valid.shape[1:], dtype=bool)  # parity of missing values seen so far
        self.goes_high: list[np.ndarray] = []
        for d in range(len(valid)):
            missing = ~valid[d]
            self.goes_high.append(odd & missing)
            odd ^= missing
        self.odd = odd  # parity of the number of missing observations
        self._fills: dict[np.dtype, list[np.ndarray]] = {}

    def fills(self, dtype: np.dtype) -> list[np.ndarray]:
        """Per observation: the value a missing one takes (low or high; 0 where valid)."""
        if dtype not in self._fills:
            low, high = extremes(dtype)
            if low == 0:
                self._fills[dtype] = [
                    np.multiply(g, dtype.type(high), dtype=dtype) for g in self.goes_high
                ]
            else:
                self._fills[dtype] = [np.where(g, high, low).astype(dtype) for g in self.goes_high]
        return self._fills[dtype]


def masked_median(
    layers: Sequence[np.ndarray],
    valid: np.ndarray | MedianMask,
    scale: float = 1.0,
    offset: float = 0.0,
    *,
    overwrite: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median of the valid observations, as ``median * scale + offset`` (float32).

    ``layers``: D arrays (h, w) of one dtype (unsigned DN or float); ``valid``: (D, h, w) bool
    (or its :class:`MedianMask`, to share it between bands). Returns ``(values, count)``:
    float32 (h, w) with NaN where no observation is valid, and the number of valid
    observations (uint16). With an even count the two middle values are averaged, as
    ``np.nanmedian`` does. ``overwrite=True`` works in the layers' memory (they are
    scrambled) instead of copies.
    """
    mask = valid if isinstance(valid, MedianMask) else MedianMask(valid)
    n = len(layers)
    if n != len(mask.valid):
        raise ValueError(f"{n} layers but {len(mask.valid)} validity masks")
    count, odd = mask.count, mask.odd
    dtype = layers[0].dtype
    low, _ = extremes(dtype)
    fills = mask.fills(dtype)
    rows = []
    for d in range(n):
        if mask.complete[d]:
            row = layers[d] if overwrite else layers[d].copy()
        elif low == 0:  # unsigned: arithmetic select (masked copies are several times slower)
            row = np.multiply(layers[d], mask.valid[d], out=layers[d] if overwrite else None)
            row += fills[d]
        else:
            row = np.where(mask.valid[d], layers[d], fills[d])
        rows.append(row)
    m = (n - 1) // 2
    if n == 1:
        lo = hi = rows[0]
    else:
        rows = network_sort(rows, frozenset((m, m + 1)))
        # ``odd`` now holds the parity of the number of missing observations
        pick = _select_unsigned if low == 0 else _select
        if n % 2:
            lo, hi = rows[m], pick(odd, rows[m + 1], rows[m])
        else:
            lo, hi = pick(odd, rows[m + 1], rows[m]), rows[m + 1]
    out = lo.astype(np.float32)
    with np.errstate(invalid="ignore"):  # -inf + inf where nothing is valid: set NaN below
        out += hi
    out *= np.float32(0.5 * scale)
    out += np.float32(offset)
    if mask.any_empty:
        out[mask.empty] = np.nan
    return out, count


def masked_mean(
    layers: Sequence[np.ndarray],
    valid: np.ndarray | MedianMask,
    scale: float = 1.0,
    offset: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean of the valid observations, as ``mean * scale + offset`` (float32; NaN
    where none is valid). For backscatter in linear power: never average decibels."""
    mask = valid if isinstance(valid, MedianMask) else MedianMask(valid)
    total = np.zeros(layers[0].shape, dtype=np.float64)
    for layer, ok in zip(layers, mask.valid, strict=True):
        total += np.where(ok, layer, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (total / mask.count).astype(np.float32)
    out *= np.float32(scale)
    out += np.float32(offset)
    out[mask.empty] = np.nan
    return out, mask.count


#: Linear power below this (-50 dB: below any sensor's noise floor) is written as -50 dB, so
#: that a zero or slightly negative terrain-corrected value gives a finite decibel.
DB_FLOOR_LINEAR = 1e-5


def masked_mean_db(
    layers: Sequence[np.ndarray],
    valid: np.ndarray | MedianMask,
    scale: float = 1.0,
    offset: float = 0.0,
    *,
    source_db: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean of backscatter in **linear power**, written in decibels (float32; NaN
    where none is valid): ``10 log10(mean(p))``, never ``mean(10 log10 p)`` (which is biased
    low by speckle). ``source_db``: the observations are dB (``value * scale + offset``) and
    are made linear (``10 ** (v / 10)``) before averaging. Means below
    :data:`DB_FLOOR_LINEAR` are written as its dB value."""
    mask = valid if isinstance(valid, MedianMask) else MedianMask(valid)
    total = np.zeros(layers[0].shape, dtype=np.float64)
    for layer, ok in zip(layers, mask.valid, strict=True):
        value = layer.astype(np.float64) * scale + offset
        if source_db:
            with np.errstate(over="ignore", invalid="ignore"):
                value = np.power(10.0, value / 10.0)
        total += np.where(ok, value, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / mask.count
    out = (10.0 * np.log10(np.maximum(mean, DB_FLOOR_LINEAR))).astype(np.float32)
    out[mask.empty] = np.nan
    return out, mask.count


def masked_first(
    layers: Sequence[np.ndarray],
    valid: np.ndarray | MedianMask,
    scale: float = 1.0,
    offset: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel first valid observation (in the layers' order: time), as ``value * scale +
    offset`` (float32; NaN where none is valid). For categorical bands, never averaged."""
    mask = valid if isinstance(valid, MedianMask) else MedianMask(valid)
    out = np.full(layers[0].shape, np.nan, dtype=np.float32)
    todo = np.ones(layers[0].shape, dtype=bool)
    for layer, ok in zip(layers, mask.valid, strict=True):
        take = todo & ok
        out[take] = layer[take]
        todo &= ~ok
    out *= np.float32(scale)
    out += np.float32(offset)
    return out, mask.count


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow a (…, h, w) boolean mask by ``pixels`` in y and x (a square structuring element)."""
    if pixels <= 0:
        return mask
    size = 2 * pixels + 1
    out = maximum_filter1d(mask.view(np.uint8), size, axis=-1, mode="constant")
    out = maximum_filter1d(out, size, axis=-2, mode="constant")
    result: np.ndarray = out.view(bool)
    return result


def fill_linear(values: Sequence[np.ndarray], has: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Fill empty steps of (P, h, w) arrays in place by linear interpolation in time.

    ``has``: (P, h, w) bool, True where a step has a composite; ``t``: (P,) step times (e.g.
    days). Steps between two filled ones are interpolated; steps before the first or after the
    last take the nearest filled value; pixels with no filled step stay NaN. Returns the
    (P, h, w) bool mask of filled steps.
    """
    # Positions are flat indices into (P * h * w): the (few) filled positions, their source
    # steps and time weights are found once from ``has`` and serve every array, which then
    # costs two gathers and one scatter of the filled positions (masked whole-slice
    # operations cost more: on partly cloudy data the masks defeat branch prediction).
    p = has.shape[0]
    n = int(np.prod(has.shape[1:], dtype=np.int64))
    flat = has.reshape(p, n)
    steps = np.arange(p, dtype=np.int16)[:, None]
    prev = np.where(flat, steps, -1)  # the last filled step up to each (-1: none yet)
    nxt = np.where(flat, steps, p)  # the next filled step from each (p: none)
    for s in range(1, p):  # a loop of whole rows: ufunc.accumulate along axis 0 is slower
        np.maximum(prev[s - 1], prev[s], out=prev[s])
    for s in range(p - 2, -1, -1):
        np.minimum(nxt[s + 1], nxt[s], out=nxt[s])
    filled: np.ndarray = (~flat & ((prev >= 0) | (nxt < p))).reshape(has.shape)
    pos = np.flatnonzero(filled)
    if pos.size == 0:
        return filled
    lo = prev.reshape(-1)[pos].astype(np.intp)
    hi = nxt.reshape(-1)[pos].astype(np.intp)
    lo = np.where(lo < 0, hi, lo)  # before the first filled step: the first one
    hi = np.where(hi >= p, lo, hi)  # after the last: the last one
    col = pos % n
    tt = np.asarray(t, dtype=np.float64)
    at = tt[pos // n]
    t_lo, span = tt[lo], tt[hi] - tt[lo]
    w = np.where(span > 0, (at - t_lo) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)
    src_lo = lo * n + col
    src_hi = hi * n + col
    for v in values:
        if not v.flags.c_contiguous:
            raise ValueError("fill_linear needs C-contiguous arrays (it fills them in place)")
        vf = v.reshape(-1)
        a = vf[src_lo]
        b = vf[src_hi]
        b -= a
        b *= w
        a += b
        vf[pos] = a
    return filled
