"""Splits without leakage: spatial blocks, split units, split rules.

Samples are never split one by one. The grid is cut into square blocks (``block_size_px``),
the *split units*; a field belongs whole to its home block (the block holding most of its
pixels), even where it reaches into a neighbour. Every pixel thus belongs to exactly one unit,
so every field, and every patch kept (a patch is kept only when all its pixels are in one
split), lies in one split, and neighbouring samples inside a block travel together. Imported
sample tables use one unit per field (polygon) id.

Units are assigned by rules first, then by fractions, stratified by class (a greedy fill that
gives each unit to the split most short of that unit's classes), in an order drawn from the
seed: the same inputs and seed give the same splits.

Split rules file (YAML), in the spirit of agri_strat; rules apply in order, first match wins::

    rules:
      - {split: test, bbox: [10.60, 47.10, 10.70, 47.20], crs: "EPSG:4326"}  # unit centroid
      - {split: test, tile: ["33TUN"]}
      - {split: val, year: [2021]}
      - stratified: {train: 0.8, val: 0.2, test: 0.0}   # the rest (must be last)

Units no rule matched get the stratified fractions of the last rule, else the default
fractions of :class:`SplitOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator
from pyproj import CRS, Transformer

from cropflow.classes import IGNORE_INDEX
from cropflow.errors import ConfigError

SplitName = Literal["train", "val", "test"]
#: Split names in code order: a split raster or array holds the position in this tuple.
SPLIT_NAMES: tuple[SplitName, ...] = ("train", "val", "test")
#: Code of pixels or samples in no split.
NO_SPLIT = 255


class SplitFractions(BaseModel):
    """Shares of labelled pixels (or samples) per split; they sum to 1."""

    train: float = Field(0.7, ge=0, le=1, description="Share of the training split.")
    val: float = Field(0.15, ge=0, le=1, description="Share of the validation split.")
    test: float = Field(0.15, ge=0, le=1, description="Share of the test split.")

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        if self.train <= 0:
            raise ValueError("the training split must have a positive fraction")
        return self

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, s) for s in SPLIT_NAMES], dtype=float)


class SplitRule(BaseModel):
    """One rule: a selector (bbox, tile or year) and its split, or a final stratified rule."""

    split: SplitName | None = Field(None, description="Split of the units the rule selects.")
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="minx, miny, maxx, maxy: units whose centroid lies inside."
    )
    crs: str = Field("EPSG:4326", description="CRS of the bbox.")
    tile: list[str] | None = Field(None, description="Tile ids.")
    year: list[int] | None = Field(None, description="Years (season / harvest year).")
    stratified: SplitFractions | None = Field(
        None, description="Fractions for every unit not yet matched (last rule only)."
    )

    @model_validator(mode="after")
    def _one_selector(self) -> SplitRule:
        selectors = [k for k in ("bbox", "tile", "year", "stratified") if getattr(self, k)]
        if len(selectors) != 1:
            raise ValueError(
                f"a rule needs exactly one of bbox, tile, year, stratified; got {selectors}"
            )
        if self.stratified is None and self.split is None:
            raise ValueError(f"a {selectors[0]} rule needs a split (train, val or test)")
        if self.stratified is not None and self.split is not None:
            raise ValueError("a stratified rule takes fractions, not a split")
        return self

    def describe(self) -> str:
        for key in ("bbox", "tile", "year"):
            if getattr(self, key):
                return f"{key}={getattr(self, key)} -> {self.split}"
        return f"stratified {self.stratified}"


class SplitRules(BaseModel):
    """An ordered list of split rules."""

    rules: list[SplitRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _stratified_last(self) -> SplitRules:
        for i, rule in enumerate(self.rules[:-1]):
            if rule.stratified is not None:
                raise ValueError(f"rule {i} is stratified but not last; it must be the last rule")
        return self


class SplitOptions(BaseModel):
    """How samples are split into train / val / test."""

    block_size_px: int = Field(
        64,
        ge=1,
        description="Side of the spatial blocks, in pixels (a multiple of the "
        "patch size and stride keeps most patches).",
    )
    fractions: SplitFractions = Field(
        default_factory=SplitFractions, description="Default shares of the splits."
    )
    seed: int = Field(0, description="Seed of the split assignment (deterministic).")
    rules_path: str | None = Field(None, description="YAML split rules (bbox/tile/year/...).")


def load_split_rules(path: str | Path) -> SplitRules:
    """Read a split rules YAML file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"split rules file not found: {path}", hint="check the path")
    try:
        raw = yaml.safe_load(path.read_text())
        return SplitRules.model_validate(raw if isinstance(raw, dict) else {"rules": raw})
    except yaml.YAMLError as exc:
        raise ConfigError(f"split rules {path} are not valid YAML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(
            f"split rules {path} are invalid: {problems}",
            hint="see cropflow.labels.splits for the format",
        ) from exc


@dataclass
class Units:
    """Split units: per unit, labelled pixels per class and the attributes rules look at."""

    counts: np.ndarray  # (U, K) labelled pixels (or samples) per class
    cx: np.ndarray | None = None  # (U,) centroid x in ``crs``
    cy: np.ndarray | None = None
    crs: str | None = None
    tile: np.ndarray | None = None  # (U,) object
    year: np.ndarray | None = None  # (U,) int

    @property
    def n(self) -> int:
        return int(self.counts.shape[0])


def block_units(field: np.ndarray, block_size: int) -> tuple[np.ndarray, int]:
    """Split unit of every pixel, and the number of units.

    Units are the square blocks of ``block_size`` pixels, except that a field's pixels all
    belong to the field's *home* block (the block holding most of them; ties: the lower block
    number), even where the field reaches into a neighbouring block. Blocks are never merged,
    so units stay small whatever the field sizes.
    """
    ny, nx = field.shape
    nbx = -(-nx // block_size)
    rows = np.arange(ny) // block_size
    cols = np.arange(nx) // block_size
    unit = (rows[:, None] * nbx + cols[None, :]).astype(np.int64)
    in_field = field > 0
    if in_field.any():
        f = field[in_field].astype(np.int64)
        pairs, counts = np.unique(np.stack([f, unit[in_field]]), axis=1, return_counts=True)
        order = np.lexsort((pairs[1], -counts, pairs[0]))  # by field, most pixels, block
        fields_sorted = pairs[0][order]
        _, first = np.unique(fields_sorted, return_index=True)
        home = np.zeros(int(f.max()) + 1, dtype=np.int64)
        home[fields_sorted[first]] = pairs[1][order][first]
        unit[in_field] = home[f]
    _, compact = np.unique(unit, return_inverse=True)
    compact = compact.reshape(unit.shape).astype(np.int32)
    return compact, int(compact.max()) + 1


def units_from_rasters(
    label: np.ndarray,
    unit: np.ndarray,
    n_units: int,
    class_ids: list[int],
    *,
    centres: tuple[np.ndarray, np.ndarray] | None = None,
    crs: str | None = None,
    tile: str | None = None,
    year: int | None = None,
) -> Units:
    """Class counts and attributes of raster units; ``centres`` = (x of columns, y of rows)."""
    k = len(class_ids)
    lut = np.full(256, -1, dtype=np.int64)
    lut[np.asarray(class_ids, dtype=np.int64)] = np.arange(k)
    pos = lut[label]
    ok = (label != IGNORE_INDEX) & (pos >= 0)
    flat = unit[ok].astype(np.int64) * k + pos[ok]
    counts = np.bincount(flat, minlength=n_units * k).reshape(n_units, k)
    cx = cy = None
    if centres is not None:
        xs, ys = centres
        n_pix = np.bincount(unit.ravel(), minlength=n_units).astype(float)
        sum_x = np.bincount(
            unit.ravel(),
            weights=np.broadcast_to(xs[None, :], unit.shape).ravel(),
            minlength=n_units,
        )
        sum_y = np.bincount(
            unit.ravel(),
            weights=np.broadcast_to(ys[:, None], unit.shape).ravel(),
            minlength=n_units,
        )
        cx, cy = sum_x / np.maximum(n_pix, 1), sum_y / np.maximum(n_pix, 1)
    return Units(
        counts=counts,
        cx=cx,
        cy=cy,
        crs=crs,
        tile=None if tile is None else np.full(n_units, tile, dtype=object),
        year=None if year is None else np.full(n_units, year, dtype=np.int64),
    )


def stratified_assign(
    counts: np.ndarray, fractions: SplitFractions, rng: np.random.Generator
) -> np.ndarray:
    """Split code per unit: units in seeded random order, each to the split most short of its
    classes relative to the target fractions. Units without labels are drawn by fraction."""
    n_units, _ = counts.shape
    target_share = fractions.as_array()
    allowed = target_share > 0
    total = counts.sum(axis=0).astype(float)
    target = target_share[:, None] * total[None, :]
    current = np.zeros_like(target)
    weight = 1.0 / np.maximum(total, 1.0)
    codes = np.empty(n_units, dtype=np.uint8)
    for u in rng.permutation(n_units):
        n = counts[u]
        if not n.any():
            codes[u] = rng.choice(len(SPLIT_NAMES), p=target_share)
            continue
        deficit = ((target - current) * (n * weight)[None, :]).sum(axis=1)
        deficit[~allowed] = -np.inf
        s = int(np.argmax(deficit))
        codes[u] = s
        current[s] += n
    return codes


def _rule_matches(rule: SplitRule, units: Units) -> np.ndarray:
    if rule.bbox is not None:
        if units.cx is None or units.cy is None or units.crs is None:
            raise ConfigError(
                f"split rule {rule.describe()} needs unit coordinates, which these samples lack",
                hint="use tile/year/stratified rules for tables without coordinates",
            )
        transformer = Transformer.from_crs(
            CRS.from_user_input(rule.crs), CRS.from_user_input(units.crs), always_xy=True
        )
        x0, y0, x1, y1 = transformer.transform_bounds(*rule.bbox)
        match: np.ndarray = (
            (units.cx >= x0) & (units.cx <= x1) & (units.cy >= y0) & (units.cy <= y1)
        )
        return match
    if rule.tile is not None:
        if units.tile is None:
            raise ConfigError(
                f"split rule {rule.describe()} needs a tile id, which these samples lack",
                hint="give the tile id of the cube (parameter 'tile'), or drop the rule",
            )
        return np.isin(units.tile.astype(str), [str(t) for t in rule.tile])
    if rule.year is not None:
        if units.year is None:
            raise ConfigError(
                f"split rule {rule.describe()} needs a year, which these samples lack",
                hint="give the season year (parameter 'year'), or drop the rule",
            )
        return np.isin(units.year, rule.year)
    return np.ones(units.n, dtype=bool)


def assign_splits(
    units: Units,
    fractions: SplitFractions,
    seed: int,
    rules: SplitRules | None = None,
) -> np.ndarray:
    """Split code (position in SPLIT_NAMES) of every unit: rules in order, then fractions."""
    rng = np.random.default_rng(seed)
    codes = np.full(units.n, NO_SPLIT, dtype=np.uint8)
    rest_fractions = fractions
    for rule in rules.rules if rules else []:
        if rule.stratified is not None:
            rest_fractions = rule.stratified
            break
        if rule.split is None:  # excluded by SplitRule's validator
            continue
        hit = _rule_matches(rule, units) & (codes == NO_SPLIT)
        codes[hit] = SPLIT_NAMES.index(rule.split)
    rest = np.flatnonzero(codes == NO_SPLIT)
    if rest.size:
        codes[rest] = stratified_assign(units.counts[rest], rest_fractions, rng)
    return codes


def patch_origins(size: int, stride: int, extent: int) -> np.ndarray:
    """Start offsets of patches of ``size`` every ``stride`` that fit in ``extent`` pixels."""
    if size > extent:
        return np.empty(0, dtype=np.int64)
    return np.arange(0, extent - size + 1, stride, dtype=np.int64)


def leakage_problems(
    split: np.ndarray,
    field: np.ndarray,
    windows: np.ndarray | None = None,
    *,
    grid_shape: tuple[int, int] | None = None,
) -> list[str]:
    """What would leak between splits (empty list: nothing).

    ``split``: split code per sample; ``field``: field per sample, (N,) or per patch pixel
    (N, H, W) (0 = no field); ``windows``: (N, 4) row0, row1, col0, col1 of each patch (or
    pixel) on the cube grid; two samples of different splits must not share a pixel.
    """
    problems: list[str] = []
    split = np.asarray(split)
    fld = np.asarray(field)
    per_pixel_split = np.broadcast_to(split.reshape((-1,) + (1,) * (fld.ndim - 1)), fld.shape)
    has = fld > 0
    pairs = np.unique(
        np.stack([fld[has].astype(np.int64), per_pixel_split[has].astype(np.int64)]), axis=1
    )
    fields, n_splits = np.unique(pairs[0], return_counts=True)
    crossing = fields[n_splits > 1]
    if crossing.size:
        problems.append(
            f"{crossing.size} fields are in more than one split (e.g. {crossing[:5].tolist()})"
        )
    if windows is not None and len(windows):
        w = np.asarray(windows, dtype=np.int64)
        shape = grid_shape or (int(w[:, 1].max()), int(w[:, 3].max()))
        owner = np.full(shape, -1, dtype=np.int16)
        clash = 0
        for (r0, r1, c0, c1), s in zip(w, split, strict=True):
            view = owner[r0:r1, c0:c1]
            clash += int(((view >= 0) & (view != s)).sum())
            view[view < 0] = s
        if clash:
            problems.append(f"{clash} pixels are shared by samples of different splits")
    return problems
