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
fractions of :class:`SplitOptions`. The last rule may give train a share of 0 when an earlier
rule selects train units (an assignment that leaves train empty is refused).

Split file (``SplitOptions.layer_path``) instead of rules: polygons in any CRS, each with a
value in ``layer_column`` (train/training, val/valid/validation, test/testing, any case, or
values mapped with ``layer_values``; ``none`` marks a gap polygon). They are reprojected onto
the cube grid and rasterised by the pixel-centre rule:

- a pixel takes the split of the polygons holding its centre; pixels in no polygon (the gap
  between areas), under a ``none`` polygon, or under polygons of *different* splits (counted
  in the report, not an error) are in no split and in no sample;
- a field in two or more splits is cut (``crossing="cut"``): its part in each split becomes a
  field of its own, with a new field number and the source id of the field; with
  ``crossing="drop"`` it loses its labels. A field in one split and partly in none is trimmed
  (``cut``: the outside part is left out) or dropped (``drop``: fields are kept whole or not
  at all). Point labels are always cut: each pixel takes its split;
- the file's val polygons are used as they are; when none holds a pixel centre of the cube,
  val is carved from the train area: units are blocks of ``block_size_px`` (fields whole)
  within the train area, assigned by the stratified fill in the ratio train : val of
  ``fractions`` (test and the gap are never touched).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import yaml
from odc.geo.geobox import GeoBox
from pydantic import BaseModel, Field, ValidationError, model_validator
from pyproj import CRS, Transformer
from rasterio.features import rasterize
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from cropflow.classes import IGNORE_INDEX
from cropflow.errors import ConfigError, LabelError
from cropflow.labels.grid import grid_crs_wkt
from cropflow.labels.options import (  # noqa: F401 - also imported from here
    DEFAULT_LAYER_VALUES,
    NO_SPLIT,
    SPLIT_NAMES,
    LayerValue,
    RuleFractions,
    SplitFractions,
    SplitName,
    SplitOptions,
    _normalise_value,
)


class SplitRule(BaseModel):
    """One rule: a selector (bbox, tile or year) and its split, or a final stratified rule."""

    split: SplitName | None = Field(None, description="Split of the units the rule selects.")
    bbox: tuple[float, float, float, float] | None = Field(
        None, description="minx, miny, maxx, maxy: units whose centroid lies inside."
    )
    crs: str = Field("EPSG:4326", description="CRS of the bbox.")
    tile: list[str] | None = Field(None, description="Tile ids.")
    year: list[int] | None = Field(None, description="Years (season / harvest year).")
    stratified: RuleFractions | None = Field(
        None,
        description="Fractions for every unit not yet matched (last rule only); train may be 0 "
        "when an earlier rule selects train units.",
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
        last = self.rules[-1].stratified
        if last is not None and last.train <= 0 and not self.selects_train():
            raise ValueError(
                "the stratified rule gives train a share of 0 and no rule selects train units; "
                "give train a share, or add a rule with split: train before it"
            )
        return self

    def selects_train(self) -> bool:
        """Whether a selector rule assigns units to train."""
        return any(r.split == "train" and r.stratified is None for r in self.rules)


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
    if units.n and rest_fractions.train <= 0 and not (codes == 0).any():
        raise ConfigError(
            "no split unit is in train: the train rules matched no unit and the stratified "
            "rule gives train a share of 0",
            hint="check the train rules' bbox/tile/year, or give train a share in the "
            "stratified rule",
        )
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


# --- Split files (``SplitOptions.layer_path``) -------------------------------------------------

#: Cut fields the report lists one by one (its counts cover all of them).
MAX_CUT_EXAMPLES = 100
#: Position of "in no split" in per-pixel keys (the splits are 0, 1, 2).
_OUT = 3


class CutPiece(BaseModel):
    """One piece of a field cut by a split line."""

    field: int = Field(description="Field number of the piece (a new number).")
    split: SplitName | None = Field(description="Split of the piece.")
    n_pixels: int = Field(description="Pixels of the piece.")


class CutField(BaseModel):
    """A field cut by a split line, and its pieces."""

    source_id: str = Field(description="The field's id in the label file; its pieces keep it.")
    field: int = Field(description="The field's number before it was cut.")
    pieces: list[CutPiece] = Field(description="One piece per split the field lies in.")


class SplitLayerReport(BaseModel):
    """What a split file did to the grid and the fields."""

    path: str = Field(description="The split file.")
    column: str = Field(description="Its split column.")
    crs: str = Field(description="Its CRS (polygons are reprojected onto the cube grid).")
    crossing: Literal["cut", "drop"] = Field(description="What was done to crossing fields.")
    polygons_per_value: dict[str, int] = Field(description="Polygons read per split value.")
    n_polygons_empty: int = Field(0, description="Polygons without a usable geometry, skipped.")
    pixels_per_split: dict[str, int] = Field(description="Grid pixels per split.")
    labelled_pixels_per_split: dict[str, int] = Field(description="Labelled pixels per split.")
    n_pixels_no_split: int = Field(
        description="Grid pixels in no split: in gaps between polygons, outside every polygon, "
        "under none polygons or under polygons of different splits."
    )
    n_labelled_pixels_no_split: int = Field(0, description="Labelled pixels left in no split.")
    n_overlap_pixels: int = Field(
        0, description="Pixels under polygons of different splits (left in no split)."
    )
    val_source: Literal["layer", "train", "none"] = Field(
        description="Where val comes from: layer: the file's val polygons; train: carved "
        "from the train area block by block; none: nowhere (the val share is 0)."
    )
    n_fields_cut: int = Field(0, description="Fields (or point windows) in two or more splits.")
    n_pieces: int = Field(0, description="Fields made of the cut fields (crossing=cut).")
    n_fields_dropped: int = Field(
        0,
        description="Fields that lost their labels (crossing=drop): in two or more splits, "
        "or partly in no split.",
    )
    n_fields_trimmed: int = Field(
        0,
        description="Fields in one split and partly in no split; the pixels in no split are "
        "left out (crossing=cut).",
    )
    n_fields_outside: int = Field(0, description="Fields wholly in no split.")
    cut_fields: list[CutField] = Field(
        default_factory=list,
        description=f"The first {MAX_CUT_EXAMPLES} cut fields (by number) and their pieces.",
    )


@dataclass
class SplitLayer:
    """A split file, read and checked: the meaning of each polygon's value, file CRS."""

    path: str
    column: str
    crs: str
    polygons: gpd.GeoDataFrame  # column "split" (a LayerValue) and the geometry
    polygons_per_value: dict[str, int]
    n_empty: int

    @property
    def source(self) -> str:
        return f"split file {self.path}"


def _read_vector(path: Path, layer: str | None, source: str) -> gpd.GeoDataFrame:
    """A vector file as a GeoDataFrame; unreadable files are a LabelError naming the file."""
    try:
        if path.suffix.lower() in (".parquet", ".geoparquet"):
            return gpd.read_parquet(path)
        return gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as exc:  # pyogrio/pyarrow raise many types for unreadable files
        raise LabelError(
            f"{source} could not be read: {exc}",
            hint="give layer_path a GeoPackage, GeoParquet, Shapefile or GeoJSON of polygons "
            "(and layer_name for a multi-layer file)",
        ) from exc


def _split_column(columns: list[str], wanted: str, source: str) -> str:
    """The split column: ``wanted`` exactly, else the one column equal to it ignoring case."""
    if wanted in columns:
        return wanted
    same = [c for c in columns if c.lower() == wanted.lower()]
    if len(same) == 1:
        return same[0]
    raise ConfigError(
        f"{source} has no column {wanted!r}; its columns are {columns}",
        hint="name the column that holds train/val/test with layer_column",
    )


def _polygon_geometries(geoms: np.ndarray, source: str) -> np.ndarray:
    """Polygonal geometries, repaired (make_valid keeps polygonal parts); None when unusable.

    Points or lines are refused: a split file holds areas.
    """
    out = np.empty(len(geoms), dtype=object)
    for i, geom in enumerate(geoms):
        if geom is None or geom.is_empty:
            out[i] = None
            continue
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            raise LabelError(
                f"{source}: row {i} is a {geom.geom_type}; a split file holds polygons",
                hint="draw the train/val/test areas as polygons",
            )
        if not shapely.is_valid(geom):
            parts = [
                p
                for p in shapely.get_parts(shapely.make_valid(geom))
                if p.geom_type in ("Polygon", "MultiPolygon")
            ]
            geom = shapely.union_all(parts) if parts else None
        out[i] = geom if geom is not None and not geom.is_empty else None
    return out


def read_split_layer(options: SplitOptions) -> SplitLayer:
    """Read ``options.layer_path`` and give each polygon its split (or ``none``).

    Errors name the file, the column and the values, and the option that fixes them.
    """
    if options.layer_path is None:
        raise ConfigError("no split file is given", hint="set layer_path")
    path = Path(options.layer_path.removeprefix("file://"))
    source = f"split file {path}"
    if not path.exists():
        raise ConfigError(f"{source} not found", hint="check layer_path")
    frame = _read_vector(path, options.layer_name, source)
    if frame.crs is None:
        raise LabelError(
            f"{source} has no CRS",
            hint="write the file with its CRS (e.g. ogr2ogr -a_srs EPSG:4326 out.gpkg in.gpkg) "
            "and give that file as layer_path",
        )
    if len(frame) == 0:
        raise LabelError(f"{source} holds no polygon", hint="check layer_path and layer_name")
    column = _split_column([str(c) for c in frame.columns], options.layer_column, source)
    raw = frame[column]
    missing = np.flatnonzero(raw.isna().to_numpy())
    if missing.size:
        raise ConfigError(
            f"{source}: {missing.size} polygons have no value in column {column!r} "
            f"(rows {missing[:10].tolist()})",
            hint="give every polygon a split value (train, val, test or none), or remove it",
        )
    values = raw.astype(str).to_numpy(dtype=object)
    value_map = options.layer_value_map()
    meaning = np.array([value_map.get(_normalise_value(v)) for v in values], dtype=object)
    unknown = sorted({str(v) for v, m in zip(values, meaning, strict=True) if m is None})
    if unknown:
        raise ConfigError(
            f"{source}: column {column!r} holds values that name no split: {unknown[:20]}",
            hint=f"map them to train, val, test or none with layer_values, e.g. "
            f"{{{unknown[0]!r}: 'train'}} (known now: {sorted(value_map)})",
        )
    geoms = _polygon_geometries(frame.geometry.to_numpy(), source)
    usable = np.array([g is not None for g in geoms], dtype=bool)
    per_value = {str(k): int(n) for k, n in pd.Series(values).value_counts(sort=False).items()}
    if not ((meaning == "train") & usable).any():
        raise LabelError(
            f"{source} has no train polygon (polygons per value of {column!r}: {per_value})",
            hint="add train polygons, or map a value to train with layer_values",
        )
    polygons = gpd.GeoDataFrame(
        {"split": meaning[usable]}, geometry=list(geoms[usable]), crs=frame.crs
    )
    return SplitLayer(
        path=str(path),
        column=column,
        crs=CRS.from_user_input(frame.crs).to_string(),
        polygons=polygons,
        polygons_per_value=per_value,
        n_empty=int((~usable).sum()),
    )


def _burn(geoms: list[BaseGeometry], gbox: GeoBox) -> np.ndarray:
    """Pixels whose centre lies in any of ``geoms``."""
    shape = (int(gbox.shape[0]), int(gbox.shape[1]))
    if not geoms:
        return np.zeros(shape, dtype=bool)
    burnt = rasterize(
        ((g, 1) for g in geoms),
        out_shape=shape,
        transform=gbox.affine,
        fill=0,
        all_touched=False,
        dtype=np.uint8,
    )
    return np.asarray(burnt, dtype=bool)


def split_layer_raster(layer: SplitLayer, gbox: GeoBox) -> tuple[np.ndarray, int]:
    """Split code per pixel of the grid by the pixel-centre rule, and the overlap pixel count.

    A pixel takes the split of the polygons holding its centre. Pixels in no polygon, under a
    ``none`` polygon, or under polygons of different splits (counted) get NO_SPLIT.
    """
    on_grid = layer.polygons.to_crs(CRS.from_wkt(grid_crs_wkt(gbox)))
    left, bottom, right, top = gbox.extent.boundingbox[:4]
    if not bool(on_grid.geometry.intersects(box(left, bottom, right, top)).any()):
        span = np.round(on_grid.total_bounds, 3).tolist()
        raise LabelError(
            f"{layer.source}: no polygon overlaps the cube (polygons span {span} in the cube "
            f"CRS, the cube spans {[left, bottom, right, top]})",
            hint="give layer_path a split file of the cube's area, and check the file's CRS",
        )
    cover = np.stack(
        [_burn(list(on_grid.geometry[on_grid["split"] == name]), gbox) for name in SPLIT_NAMES]
    )
    n_cover = cover.sum(axis=0)
    split = np.full(n_cover.shape, NO_SPLIT, dtype=np.uint8)
    single = n_cover == 1
    split[single] = np.argmax(cover, axis=0)[single].astype(np.uint8)
    excluded = _burn(list(on_grid.geometry[on_grid["split"] == "none"]), gbox)
    split[excluded] = NO_SPLIT
    n_overlap = int(((n_cover > 1) & ~excluded).sum())
    if not (split == 0).any():
        raise LabelError(
            f"{layer.source}: no train polygon holds a pixel centre of the cube "
            f"({n_overlap} pixels are under polygons of different splits)",
            hint="give layer_path a split file with train areas on the cube, or map a value "
            "to train with layer_values",
        )
    return split, n_overlap


@dataclass
class CutFields:
    """Fields after a split file's lines: each field lies in one split."""

    field: np.ndarray  # (y, x) int32; 0 also where no split
    label: np.ndarray  # (y, x) uint8; dropped fields unlabelled
    fields: pd.DataFrame  # field, source_id, class_id, parent (the number before cutting)
    pieces: pd.DataFrame  # field, parent, n_pixels: the pieces of cut fields
    n_cut: int
    n_dropped: int
    n_trimmed: int
    n_outside: int


def cut_fields(
    field: np.ndarray,
    label: np.ndarray,
    layer_split: np.ndarray,
    fields: pd.DataFrame,
    crossing: Literal["cut", "drop"],
) -> CutFields:
    """Make every field lie in one split of ``layer_split`` (code per pixel, NO_SPLIT: none).

    A field in two or more splits is *cut*: with ``crossing="cut"`` its part in each split
    becomes a field with a new number (after every existing one), keeping the field's source
    id and class; with ``"drop"`` it loses its labels and its field number. A field in one
    split and partly in none is *trimmed* (``"cut"``: its part in no split is left out) or
    dropped (``"drop"``). Pixels in no split belong to no field. ``fields`` is the table of
    the field raster (field, source_id, class_id).
    """
    code = np.where(layer_split == NO_SPLIT, _OUT, layer_split).astype(np.int64)
    n_max = int(field.max()) + 1 if field.size else 1
    in_field = field > 0
    key = field[in_field].astype(np.int64) * 4 + code[in_field]
    keys, n_pix = np.unique(key, return_counts=True)
    kf, ks = keys // 4, keys % 4
    in_split = ks != _OUT
    n_splits = np.bincount(kf[in_split], minlength=n_max)
    partly_out = np.zeros(n_max, dtype=bool)
    partly_out[kf[~in_split]] = True
    present = np.zeros(n_max, dtype=bool)
    present[kf] = True
    cut = n_splits >= 2
    trimmed = (n_splits == 1) & partly_out
    new_field = field.astype(np.int32, copy=True)
    new_label = label.copy()
    piece = np.zeros(keys.size, dtype=bool)
    if crossing == "drop":
        gone = in_field & (cut | trimmed)[field]
        new_field[gone] = 0
        new_label[gone] = IGNORE_INDEX
    else:
        piece = cut[kf] & in_split
        lut = np.zeros(n_max * 4, dtype=np.int64)
        lut[keys[piece]] = np.arange(n_max, n_max + int(piece.sum()))
        renumbered = lut[key]
        flat = np.flatnonzero(in_field.ravel())
        moved = renumbered > 0
        np.put(new_field, flat[moved], renumbered[moved].astype(np.int32))
    new_field[layer_split == NO_SPLIT] = 0
    table = fields[["field", "source_id", "class_id"]].assign(parent=fields["field"].to_numpy())
    parents = table.set_index("field")
    pieces = pd.DataFrame(
        {
            "field": np.arange(n_max, n_max + int(piece.sum()), dtype=np.int64),
            "parent": kf[piece],
            "n_pixels": n_pix[piece],
        }
    )
    piece_rows = pd.DataFrame(
        {
            "field": pieces["field"].to_numpy(),
            "source_id": parents.loc[pieces["parent"], "source_id"].to_numpy(),
            "class_id": parents.loc[pieces["parent"], "class_id"].to_numpy(),
            "parent": pieces["parent"].to_numpy(),
        }
    )
    kept = np.unique(new_field[new_field > 0])
    table = pd.concat([table, piece_rows], ignore_index=True)
    table = table[table["field"].isin(kept)].sort_values("field").reset_index(drop=True)
    table = table.astype({"field": np.int32, "class_id": np.uint8, "parent": np.int32})
    return CutFields(
        field=new_field,
        label=new_label,
        fields=table,
        pieces=pieces,
        n_cut=int(cut.sum()),
        n_dropped=int((cut | trimmed).sum()) if crossing == "drop" else 0,
        n_trimmed=int(trimmed.sum()) if crossing == "cut" else 0,
        n_outside=int((present & (n_splits == 0)).sum()),
    )


def carve_val(
    unit_codes: np.ndarray, counts: np.ndarray, fractions: SplitFractions, seed: int
) -> np.ndarray:
    """Unit codes with val units drawn from the train units, by the stratified assignment, in
    the ratio ``fractions.train : fractions.val`` (test and units in no split are untouched)."""
    out = unit_codes.copy()
    share = fractions.val / (fractions.train + fractions.val)
    if share <= 0:
        return out
    carve = SplitFractions(train=1.0 - share, val=share, test=0.0)
    train_units = np.flatnonzero(unit_codes == 0)
    if train_units.size:
        rng = np.random.default_rng(seed)
        out[train_units] = stratified_assign(counts[train_units], carve, rng)
    return out


@dataclass
class LayerSplits:
    """Splits from a split file: per-pixel split and unit, fields cut or dropped, report."""

    split: np.ndarray  # (y, x) uint8 final split code, NO_SPLIT where none
    layer_split: np.ndarray  # (y, x) uint8 split code of the file (before carving val)
    unit: np.ndarray  # (y, x) int32
    unit_codes: np.ndarray  # (U,) uint8
    counts: np.ndarray  # (U, K) labelled pixels per unit and class
    cut: CutFields
    report: SplitLayerReport


def _cut_examples(cut: CutFields, split: np.ndarray) -> list[CutField]:
    """The first MAX_CUT_EXAMPLES cut fields with their pieces' splits and pixel counts."""
    if cut.pieces.empty:
        return []
    numbers, first = np.unique(cut.field.ravel(), return_index=True)
    split_of = dict(zip(numbers.tolist(), split.ravel()[first].tolist(), strict=True))
    source_of = dict(zip(cut.fields["field"].tolist(), cut.fields["source_id"], strict=True))
    piece_field = cut.pieces["field"].to_numpy(dtype=np.int64)
    piece_parent = cut.pieces["parent"].to_numpy(dtype=np.int64)
    piece_pixels = cut.pieces["n_pixels"].to_numpy(dtype=np.int64)
    out: list[CutField] = []
    for parent in np.unique(piece_parent)[:MAX_CUT_EXAMPLES].tolist():
        mine = np.flatnonzero(piece_parent == parent)
        pieces = [
            CutPiece(field=f, split=_split_name(split_of.get(f, NO_SPLIT)), n_pixels=n)
            for f, n in zip(piece_field[mine].tolist(), piece_pixels[mine].tolist(), strict=True)
        ]
        source = str(source_of.get(pieces[0].field, ""))
        out.append(CutField(source_id=source, field=parent, pieces=pieces))
    return out


def _split_name(code: int) -> SplitName | None:
    """Name of a split code (None for NO_SPLIT)."""
    return SPLIT_NAMES[code] if 0 <= code < len(SPLIT_NAMES) else None


def split_by_layer(
    label: np.ndarray,
    field: np.ndarray,
    fields: pd.DataFrame,
    gbox: GeoBox,
    class_ids: list[int],
    options: SplitOptions,
    *,
    points: bool = False,
) -> LayerSplits:
    """Splits from ``options.layer_path``: pixels by their centre, fields cut or dropped.

    Units are blocks of ``block_size_px`` (fields whole, in their home block) within one split
    of the file. Without val polygons on the cube, val units are carved from the train units
    (:func:`carve_val`). Point labels (``points``) are always cut: each pixel takes its split.
    """
    layer = read_split_layer(options)
    layer_split, n_overlap = split_layer_raster(layer, gbox)
    crossing: Literal["cut", "drop"] = "cut" if points else options.crossing
    cut = cut_fields(field, label, layer_split, fields, crossing)
    block, _ = block_units(cut.field, options.block_px)
    code = np.where(layer_split == NO_SPLIT, _OUT, layer_split).astype(np.int64)
    _, inverse = np.unique(block.astype(np.int64) * 4 + code, return_inverse=True)
    unit = inverse.reshape(block.shape).astype(np.int32)
    n_units = int(unit.max()) + 1
    file_codes = np.full(n_units, NO_SPLIT, dtype=np.uint8)
    file_codes[unit.ravel()] = layer_split.ravel()  # one code per unit by construction
    counts = units_from_rasters(cut.label, unit, n_units, class_ids).counts
    if (layer_split == 1).any():
        unit_codes, val_source = file_codes, "layer"
    elif options.fractions.val > 0:
        unit_codes, val_source = (
            carve_val(file_codes, counts, options.fractions, options.seed),
            "train",
        )
    else:
        unit_codes, val_source = file_codes, "none"
    split = unit_codes[unit]
    labelled = cut.label != IGNORE_INDEX
    report = SplitLayerReport(
        path=layer.path,
        column=layer.column,
        crs=layer.crs,
        crossing=crossing,
        polygons_per_value=layer.polygons_per_value,
        n_polygons_empty=layer.n_empty,
        pixels_per_split={s: int((split == i).sum()) for i, s in enumerate(SPLIT_NAMES)},
        labelled_pixels_per_split={
            s: int(((split == i) & labelled).sum()) for i, s in enumerate(SPLIT_NAMES)
        },
        n_pixels_no_split=int((split == NO_SPLIT).sum()),
        n_labelled_pixels_no_split=int(((split == NO_SPLIT) & (label != IGNORE_INDEX)).sum()),
        n_overlap_pixels=n_overlap,
        val_source=val_source,
        n_fields_cut=cut.n_cut,
        n_pieces=len(cut.pieces),
        n_fields_dropped=cut.n_dropped,
        n_fields_trimmed=cut.n_trimmed,
        n_fields_outside=cut.n_outside,
        cut_fields=_cut_examples(cut, split),
    )
    return LayerSplits(
        split=split,
        layer_split=layer_split,
        unit=unit,
        unit_codes=unit_codes,
        counts=counts,
        cut=cut,
        report=report,
    )
