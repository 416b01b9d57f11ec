"""The static landscape: roads, a lake, a village, forest, and fields split by margins or hedges.

Vector first, raster second: every parcel is a polygon in UTM metres; the class and field-id
rasters are the parcels burnt in by pixel centre, so rasterising any parcel gives back exactly
its class. Roads (12 m) and hedges (12 m) are strips between parcels; they and the thin field
margins are unit 0 / road / hedge in the simulation and class 0 in the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from rasterio.features import rasterize
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from cropflow.demo.config import DemoConfig
from cropflow.demo.grid import WorldGrid
from cropflow.demo.legend import (
    CLASSES,
    FOREST_CODES,
    PASTURE_CODE,
    UNLISTED,
    Kind,
    class_by_name,
)
from cropflow.demo.noise import stream
from cropflow.demo.phenology import CALENDARS, UnitTable
from cropflow.errors import ConfigError

ROAD_HALF_WIDTH_M = 6.0
HEDGE_HALF_WIDTH_M = 6.0
MARGIN_HALF_WIDTH_M = 1.5
#: Coordinates are snapped to this grid (m) so that every polygon stays valid.
PRECISION_M = 0.001


@dataclass(frozen=True)
class Parcel:
    """One parcel of the LPIS-like parcel file."""

    field_id: int
    cover: str  # land-cover model (a class name, or an unlisted crop's model)
    class_id: int  # legend id in the truth raster; 0 for unlisted raw codes
    kind: Kind
    code: int
    name: str
    geometry: Polygon  # UTM metres


@dataclass
class Landscape:
    """Parcels, linear features and their rasters on the 10 m world grid."""

    parcels: list[Parcel]
    roads: list[Polygon]
    hedges: list[Polygon]
    units: UnitTable
    unit_raster: np.ndarray  # int32: 0 margin, 1..N parcel = field id, N+1 road, N+2 hedge
    class_raster: np.ndarray  # uint8 legend ids (0 = none)
    field_raster: np.ndarray  # uint32 field ids (0 = none)


def _polygons(geom: BaseGeometry, min_area: float = 0.0) -> list[Polygon]:
    """The polygons of any geometry, largest first, dropping those below ``min_area``."""
    geom = shapely.set_precision(shapely.make_valid(geom), PRECISION_M)
    polys = [g for g in shapely.get_parts(geom) if isinstance(g, Polygon) and not g.is_empty]
    polys = [p for p in polys if p.area >= min_area]
    return sorted(polys, key=lambda p: (-p.area, p.centroid.x, p.centroid.y))


def _blob(cx: float, cy: float, radius: float, rng: np.random.Generator) -> Polygon:
    """A smooth irregular closed shape (lake, wood, village) of mean radius ``radius``."""
    phi = np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False)
    r = np.ones_like(phi)
    for k in range(2, 7):
        r += rng.uniform(0.1, 0.3) / (k - 1) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    xy = np.column_stack([cx + radius * r * np.cos(phi), cy + radius * r * np.sin(phi)])
    return Polygon(xy).buffer(0)


def _axis_lines(
    region: Polygon, angle_deg: float, spacing: tuple[float, float], rng: np.random.Generator
) -> list[LineString]:
    """Straight roads parallel to ``angle_deg`` (from east), spaced ``spacing`` m apart."""
    cx, cy = region.centroid.x, region.centroid.y
    a = math.radians(angle_deg)
    u = np.array([math.cos(a), math.sin(a)])
    v = np.array([-math.sin(a), math.cos(a)])
    xmin, ymin, xmax, ymax = region.bounds
    half = 0.5 * math.hypot(xmax - xmin, ymax - ymin)
    step = rng.uniform(*spacing)
    first = rng.uniform(-0.5, 0.5) * step
    offsets = [first + k * step for k in range(-int(half / step) - 1, int(half / step) + 2)]
    min_len = 0.5 * min(xmax - xmin, ymax - ymin)
    lines = []
    for off in offsets:
        p = np.array([cx, cy]) + off * v
        line = LineString([tuple(p - 2 * half * u), tuple(p + 2 * half * u)])
        if line.intersection(region).length >= min_len:
            lines.append(line)
    if not lines:  # always at least one road in each direction
        off = rng.uniform(-0.2, 0.2) * min(xmax - xmin, ymax - ymin)
        p = np.array([cx, cy]) + off * v
        lines.append(LineString([tuple(p - 2 * half * u), tuple(p + 2 * half * u)]))
    return lines


def _place_blob(
    region: Polygon, radius: float, avoid: BaseGeometry, rng: np.random.Generator
) -> Polygon:
    """A blob inside ``region`` whose centre is as far as possible from ``avoid``."""
    xmin, ymin, xmax, ymax = region.bounds
    best: tuple[float, float, float] | None = None
    for _ in range(40):
        x = (
            rng.uniform(xmin + 0.6 * radius, xmax - 0.6 * radius)
            if xmax - xmin > 1.2 * radius
            else 0.5 * (xmin + xmax)
        )
        y = (
            rng.uniform(ymin + 0.6 * radius, ymax - 0.6 * radius)
            if ymax - ymin > 1.2 * radius
            else 0.5 * (ymin + ymax)
        )
        d = avoid.distance(Point(x, y)) if not avoid.is_empty else math.inf
        if best is None or d > best[0]:
            best = (d, x, y)
        if d > 1.3 * radius + 20.0:
            break
    if best is None:  # pragma: no cover - the loop always runs
        raise RuntimeError("no blob placed")
    return _blob(best[1], best[2], radius, rng)


def _split_block(
    poly: Polygon,
    target: float,
    angle: float,
    hedge_p: float,
    rng: np.random.Generator,
    fields: list[Polygon],
    hedges: list[Polygon],
    depth: int = 0,
) -> None:
    """Split a block recursively into fields of about ``target`` m² (binary space partition)."""
    if poly.area <= target * rng.uniform(1.0, 1.9) or depth > 16:
        fields.append(poly)
        return
    min_width = max(30.0, 0.3 * math.sqrt(target))
    origin = poly.centroid
    local = affinity.rotate(poly, -angle, origin=origin)
    minx, miny, maxx, maxy = local.bounds
    for _attempt in range(5):
        across_long = rng.random() < 0.7
        vertical = ((maxx - minx) >= (maxy - miny)) == across_long
        frac = rng.uniform(0.3, 0.7)
        half = HEDGE_HALF_WIDTH_M if rng.random() < hedge_p else MARGIN_HALF_WIDTH_M
        extent = (maxx - minx) if vertical else (maxy - miny)
        if min(frac, 1 - frac) * extent < min_width:  # no long thin strips
            continue
        if vertical:
            c = minx + frac * (maxx - minx)
            sides = (
                box(minx - 1, miny - 1, c - half, maxy + 1),
                box(c + half, miny - 1, maxx + 1, maxy + 1),
            )
            strip = box(c - half, miny - 1, c + half, maxy + 1)
        else:
            c = miny + frac * (maxy - miny)
            sides = (
                box(minx - 1, miny - 1, maxx + 1, c - half),
                box(minx - 1, c + half, maxx + 1, maxy + 1),
            )
            strip = box(minx - 1, c - half, maxx + 1, c + half)
        parts = [local.intersection(s) for s in sides]
        if min(p.area for p in parts) < 0.3 * target:
            continue
        if half == HEDGE_HALF_WIDTH_M:
            hedges.extend(
                affinity.rotate(h, angle, origin=origin)
                for h in _polygons(local.intersection(strip), 1.0)
            )
        for part in parts:
            for piece in _polygons(affinity.rotate(part, angle, origin=origin), 0.12 * target):
                _split_block(piece, target, angle, hedge_p, rng, fields, hedges, depth + 1)
        return
    fields.append(poly)


def build_landscape(config: DemoConfig, world: WorldGrid) -> Landscape:
    """The region's parcels and linear features, and their rasters (deterministic in the seed)."""
    rng = stream(config.seed, "landscape")
    region = box(*world.bounds)
    angle = float(rng.uniform(-18.0, 18.0))

    # roads: a loose grid, slightly rotated like the field pattern
    lines = _axis_lines(region, angle, (900.0, 1500.0), rng) + _axis_lines(
        region, angle + 90.0, (1100.0, 1900.0), rng
    )
    road_area = shapely.union_all(
        [ln.buffer(ROAD_HALF_WIDTH_M, cap_style="flat") for ln in lines]
    ).intersection(region)
    crossings = [
        p
        for i, a in enumerate(lines)
        for b in lines[i + 1 :]
        if isinstance(p := a.intersection(b), Point) and region.contains(p)
    ]

    # lake, village (at a crossing if there is one), forest (entering from an edge)
    water = Polygon()
    if config.water_fraction > 0:
        radius = math.sqrt(config.water_fraction * region.area / math.pi)
        water = _place_blob(region, radius, road_area, rng).intersection(region)
    village = Polygon()
    if config.built_up_fraction > 0:
        radius = math.sqrt(config.built_up_fraction * region.area / math.pi)
        if crossings:
            centre = crossings[int(rng.integers(len(crossings)))]
        else:
            centre = lines[0].intersection(region).interpolate(rng.uniform(0.2, 0.8), True)
        village = _blob(centre.x, centre.y, radius, rng).intersection(region)
        village = village.difference(water).difference(road_area)
    forest = Polygon()
    if config.forest_fraction > 0:
        radius = math.sqrt(2.0 * config.forest_fraction * region.area / math.pi)
        xmin, ymin, xmax, ymax = region.bounds
        side = int(rng.integers(4))
        s = rng.uniform(0.2, 0.8)
        cx, cy = [
            (xmin + s * (xmax - xmin), ymax + 0.2 * radius),
            (xmin + s * (xmax - xmin), ymin - 0.2 * radius),
            (xmin - 0.2 * radius, ymin + s * (ymax - ymin)),
            (xmax + 0.2 * radius, ymin + s * (ymax - ymin)),
        ][side]
        forest = _blob(cx, cy, radius, rng).intersection(region)
        forest = forest.difference(water).difference(village).difference(road_area)

    # agricultural blocks, split into fields
    target = config.field_size_ha * 10_000.0
    land = region.difference(shapely.union_all([road_area, water, village, forest]))
    fields: list[Polygon] = []
    hedges: list[Polygon] = []
    for block in _polygons(land, 0.12 * target):
        block_angle = angle + float(rng.normal(0.0, 3.0))
        _split_block(block, target, block_angle, config.hedge_probability, rng, fields, hedges)
    fields = [f for f in fields if f.area >= 400.0]  # below 4 px: a margin, not a parcel

    parcels, conifer_share = _assign(fields, water, village, forest, rng)
    units = _unit_table(parcels, conifer_share, rng)
    unit_raster, class_raster, field_raster = _rasters(world, parcels, road_area, hedges)
    return Landscape(
        parcels=parcels,
        roads=_polygons(road_area),
        hedges=hedges,
        units=units,
        unit_raster=unit_raster,
        class_raster=class_raster,
        field_raster=field_raster,
    )


def _assign(
    fields: list[Polygon],
    water: BaseGeometry,
    village: BaseGeometry,
    forest: BaseGeometry,
    rng: np.random.Generator,
) -> tuple[list[Parcel], dict[int, float]]:
    """Classes and raw codes of all parcels (every class occurs); each forest's conifer share."""
    field_classes = [c for c in CLASSES if c.field_weight > 0]
    required: list[str] = [c.name for c in field_classes] + [u.cover for u in UNLISTED]
    if len(fields) < len(required):
        raise ConfigError(
            f"the region has room for only {len(fields)} fields, fewer than the "
            f"{len(required)} field classes and rare crops that must all occur",
            hint="raise tile_size or lower field_size_ha",
        )
    areas = np.array([f.area for f in fields])
    order = rng.permutation(len(fields))
    large = [int(i) for i in order if areas[i] >= np.median(areas)]
    small = [int(i) for i in order if areas[i] < np.median(areas)]
    chosen = (large + small)[: len(required)]
    covers: list[str] = [""] * len(fields)
    for i, cover in zip(chosen, required, strict=True):
        covers[i] = cover
    weights = np.array([c.field_weight for c in field_classes])
    for i in range(len(fields)):
        if not covers[i]:
            covers[i] = field_classes[
                int(rng.choice(len(field_classes), p=weights / weights.sum()))
            ].name

    parcels: list[Parcel] = []
    unlisted = {u.cover: u for u in UNLISTED}
    for poly, cover in zip(fields, covers, strict=True):
        if cover in unlisted:
            u = unlisted[cover]
            parcels.append(Parcel(len(parcels) + 1, cover, 0, u.kind, u.code, u.name, poly))
            continue
        cls = class_by_name(cover)
        w = np.array([rc.weight for rc in cls.codes])
        rc = cls.codes[int(rng.choice(len(cls.codes), p=w / w.sum()))]
        parcels.append(Parcel(len(parcels) + 1, cover, cls.id, cls.kind, rc.code, rc.name, poly))
    conifer: dict[int, float] = {}
    for cover, geom in (("forest", forest), ("water", water), ("built_up", village)):
        cls = class_by_name(cover)
        for poly in _polygons(geom, 400.0):
            rc = cls.codes[0]
            fid = len(parcels) + 1
            if cover == "forest":  # the raw code follows the conifer share
                conifer[fid] = share = float(rng.uniform(0.05, 0.95))
                code = FOREST_CODES[0 if share < 0.35 else 1 if share < 0.65 else 2]
                rc = next(r for r in cls.codes if r.code == code)
            parcels.append(Parcel(fid, cover, cls.id, cls.kind, rc.code, rc.name, poly))
    return parcels, conifer


def _unit_table(
    parcels: list[Parcel], conifer_share: dict[int, float], rng: np.random.Generator
) -> UnitTable:
    """Per-unit simulation parameters: margin (0), parcels (1..N), road (N+1), hedge (N+2)."""
    n = len(parcels) + 3
    cover = ["margin"] + [p.cover for p in parcels] + ["road", "hedge"]
    shift = np.zeros(n)
    stretch = np.ones(n)
    vigour = np.ones(n)
    catch = np.zeros(n, dtype=bool)
    conifer = np.zeros(n)
    impervious = np.zeros(n)
    mown = np.zeros(n, dtype=bool)
    brightness = np.ones(n)
    for p in parcels:
        i = p.field_id
        cal = CALENDARS.get(p.cover)
        shift[i] = rng.normal(0.0, cal.shift_sd if cal else 5.0)
        stretch[i] = float(np.clip(rng.normal(1.0, 0.04), 0.9, 1.1))
        vigour[i] = rng.uniform(0.78, 1.02)
        catch[i] = bool(cal is not None and rng.random() < cal.catch_crop_share)
        brightness[i] = rng.uniform(0.85, 1.15)
        mown[i] = p.code != PASTURE_CODE and p.cover in ("grassland", "clover_grass")
        conifer[i] = conifer_share.get(i, 0.0)
        if p.cover == "built_up":
            impervious[i] = rng.uniform(0.5, 0.75)
    return UnitTable(cover, shift, stretch, vigour, catch, conifer, impervious, mown, brightness)


def _rasters(
    world: WorldGrid, parcels: list[Parcel], roads: BaseGeometry, hedges: list[Polygon]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit, class and field-id rasters, burnt by pixel centre."""
    shape, transform = world.shape, world.transform
    field_raster = rasterize(
        [(p.geometry, p.field_id) for p in parcels],
        out_shape=shape,
        transform=transform,
        fill=0,
        dtype="uint32",
    )
    n = len(parcels)
    units = field_raster.astype(np.int32)
    for geoms, unit in ((_polygons(roads), n + 1), (hedges, n + 2)):
        if geoms:
            mask = rasterize(
                [(g, 1) for g in geoms], out_shape=shape, transform=transform, fill=0, dtype="uint8"
            ).astype(bool)
            units[mask & (units == 0)] = unit
    class_of_unit = np.zeros(n + 3, dtype=np.uint8)
    for p in parcels:
        class_of_unit[p.field_id] = p.class_id
    return units, class_of_unit[units], field_raster
