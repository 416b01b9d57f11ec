"""Grid arithmetic: UTM zone choice, snapping, the target grid and its partition into blocks.

Pure functions of numbers (no I/O), so that hypothesis can check them: snapped bounds contain
the requested ones and sit on multiples of the resolution; blocks cover the grid exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from affine import Affine
from odc.geo import geom
from odc.geo.geobox import GeoBox
from pydantic import BaseModel, ConfigDict, Field
from pyproj import CRS

from cropflow.cube.params import BBox, GridParams
from cropflow.errors import AOIError, ConfigError

#: Relative tolerance when deciding that a coordinate already sits on a pixel edge.
SNAP_EPS = 1e-9
#: Chunk sides tried (largest first) when the chunk size is chosen from the memory budget.
AUTO_CHUNKS = (1024, 512, 256)
#: Largest spatial side of a stored Zarr chunk: a block is written as several chunks of at most
#: this side, so that a reader of a window (prediction tiles, 256 px by default; label
#: samples) decodes about what it reads rather than the whole block (a 256 px tile of a cube
#: stored in 1024 px chunks decoded 16 times its pixels: prediction 2.6x slower).
STORE_CHUNK = 256
#: A block side with no divisor in [STORE_CHUNK_MIN, STORE_CHUNK] is stored as one chunk.
STORE_CHUNK_MIN = 64


def utm_zone(lon: float, lat: float) -> int:
    """UTM zone number (1..60) of a point, with the Norway and Svalbard exceptions."""
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise AOIError(f"point ({lon}, {lat}) is not a longitude/latitude", hint="use degrees")
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        return 32
    if 72.0 <= lat <= 84.0 and 0.0 <= lon < 42.0:
        if lon < 9.0:
            return 31
        if lon < 21.0:
            return 33
        if lon < 33.0:
            return 35
        return 37
    return min(int((lon + 180.0) // 6.0) + 1, 60)


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone of a point: 326zz north, 327zz south."""
    return (32600 if lat >= 0 else 32700) + utm_zone(lon, lat)


def snap_bounds(bounds: BBox, resolution: float) -> BBox:
    """Bounds grown outward to the nearest multiples of ``resolution``."""
    x0, y0, x1, y1 = bounds
    r = resolution
    return (
        math.floor(x0 / r + SNAP_EPS) * r,
        math.floor(y0 / r + SNAP_EPS) * r,
        math.ceil(x1 / r - SNAP_EPS) * r,
        math.ceil(y1 / r - SNAP_EPS) * r,
    )


def crs_string(crs: CRS) -> str:
    """'EPSG:nnnn' when the CRS has an EPSG code, else its WKT2."""
    code = crs.to_epsg()
    return f"EPSG:{code}" if code is not None else crs.to_wkt()


class GridSpec(BaseModel):
    """A north-up pixel grid: CRS, pixel size and bounds on its lattice (shape follows).

    Pixels are square unless ``resolution_y`` is set (a grid kept from the items may have
    pixels of e.g. 9.99 x 10.01 m); bounds are multiples of the resolution for grids cropflow
    derives, and on the items' own lattice for grids kept from them.
    """

    model_config = ConfigDict(frozen=True)

    crs: str = Field(description="'EPSG:nnnn' or WKT2.")
    resolution: float = Field(gt=0, description="Pixel width (CRS units).")
    resolution_y: float | None = Field(
        None, gt=0, description="Pixel height (CRS units); unset: square pixels."
    )
    bounds: BBox = Field(description="(min_x, min_y, max_x, max_y): the grid's outer edges.")

    @property
    def res_y(self) -> float:
        """Pixel height."""
        return self.resolution_y if self.resolution_y is not None else self.resolution

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        x0, y0, x1, y1 = self.bounds
        return (round((y1 - y0) / self.res_y), round((x1 - x0) / self.resolution))

    @property
    def transform(self) -> Affine:
        """Pixel -> CRS transform (north up)."""
        x0, _, _, y1 = self.bounds
        return Affine(self.resolution, 0.0, x0, 0.0, -self.res_y, y1)

    def geobox(self) -> GeoBox:
        """The grid as an odc-geo GeoBox."""
        return GeoBox(self.shape, self.transform, self.crs)

    def describe(self) -> str:
        """One line for logs and summaries."""
        h, w = self.shape
        crs = self.crs if self.crs.startswith("EPSG:") else CRS.from_user_input(self.crs).name
        size = f"{self.resolution:g}" + (
            f" x {self.resolution_y:g}" if self.resolution_y is not None else ""
        )
        return f"{crs}, {size} units/px, {w} x {h} px, bounds {list(self.bounds)}"


def make_grid(crs: str | CRS, resolution: float, bounds: BBox) -> GridSpec:
    """The grid of ``bounds`` (in ``crs``) snapped outward to ``resolution``."""
    c = parse_crs(crs)
    snapped = snap_bounds(bounds, resolution)
    spec = GridSpec(crs=crs_string(c), resolution=resolution, bounds=snapped)
    if min(spec.shape) < 1:
        raise ConfigError(f"grid bounds {list(bounds)} are empty", hint="give a larger area")
    return spec


def parse_crs(crs: str | CRS) -> CRS:
    """A pyproj CRS; ConfigError naming the bad value otherwise."""
    try:
        return crs if isinstance(crs, CRS) else CRS.from_user_input(crs)
    except Exception:
        raise ConfigError(f"grid crs {crs!r} is not a CRS", hint="use e.g. 'EPSG:32633'") from None


@dataclass(frozen=True)
class Lattice:
    """A pixel lattice: CRS, pixel width and height, and one pixel corner (its phase)."""

    crs: str
    res_x: float
    res_y: float
    x0: float
    y0: float


def snap_to_lattice(bounds: BBox, lattice: Lattice) -> BBox:
    """``bounds`` grown outward onto the lattice's pixel edges."""
    x0, y0, x1, y1 = bounds
    rx, ry = lattice.res_x, lattice.res_y
    return (
        lattice.x0 + math.floor((x0 - lattice.x0) / rx + SNAP_EPS) * rx,
        lattice.y0 + math.floor((y0 - lattice.y0) / ry + SNAP_EPS) * ry,
        lattice.x0 + math.ceil((x1 - lattice.x0) / rx - SNAP_EPS) * rx,
        lattice.y0 + math.ceil((y1 - lattice.y0) / ry - SNAP_EPS) * ry,
    )


def lattice_grid(lattice: Lattice, bounds: BBox) -> GridSpec:
    """The grid on ``lattice`` that covers ``bounds`` (in the lattice's CRS)."""
    snapped = snap_to_lattice(bounds, lattice)
    square = abs(lattice.res_x - lattice.res_y) <= SNAP_EPS * lattice.res_x
    spec = GridSpec(
        crs=lattice.crs,
        resolution=lattice.res_x,
        resolution_y=None if square else lattice.res_y,
        bounds=snapped,
    )
    if min(spec.shape) < 1:
        raise ConfigError(f"grid bounds {list(bounds)} are empty", hint="give a larger area")
    return spec


def projected_bounds(aoi: geom.Geometry, crs: CRS) -> BBox:
    """Bounds of a geometry once projected to ``crs`` (edges densified first)."""
    w, s, e, n = aoi.boundingbox
    step = max(e - w, n - s) / 64 or 1e-4
    x0, y0, x1, y1 = aoi.to_crs(crs, resolution=step).boundingbox
    return (x0, y0, x1, y1)


def aoi_geometry(params: GridParams, items_lonlat: BBox) -> geom.Geometry:
    """The area the grid covers, in EPSG:4326: ``aoi``, else ``bbox``, else the items' union."""
    if params.aoi is not None:
        try:
            return geom.Geometry(params.aoi, "EPSG:4326")
        except Exception as exc:
            raise AOIError(
                f"grid aoi is not a GeoJSON geometry: {exc}",
                hint="give a Polygon/MultiPolygon geometry in degrees",
            ) from None
    west, south, east, north = params.bbox or items_lonlat
    return geom.box(west, south, east, north, "EPSG:4326")


def derive_grid(params: GridParams, aoi_lonlat: BBox, native_resolution: float | None) -> GridSpec:
    """The target grid: the user's CRS/resolution/bounds where given, else the UTM zone of the
    AOI centroid, the bands' finest native resolution, and the AOI's bounds.

    ``aoi_lonlat`` (west, south, east, north) is the area used where ``params.aoi``,
    ``params.bbox`` and ``params.bounds`` are unset (typically the union of the items'
    footprints).
    """
    resolution = params.resolution or native_resolution
    if resolution is None:
        raise ConfigError(
            "the grid resolution is not set and the bands' native resolution is not known in "
            "the grid's units",
            hint="set the cube's grid.resolution (pixel size in grid CRS units)",
        )
    if params.crs is not None and params.bounds is not None:
        return make_grid(params.crs, resolution, params.bounds)
    area = aoi_geometry(params, aoi_lonlat)
    if params.crs is not None:
        crs = parse_crs(params.crs)
    else:
        lon, lat = area.centroid.coords[0]
        crs = CRS.from_epsg(utm_epsg(lon, lat))
    return make_grid(crs, resolution, projected_bounds(area, crs))


@dataclass(frozen=True, order=True)
class Block:
    """One write block: a block of the grid, aligned to the Zarr chunks."""

    iy: int
    ix: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def key(self) -> str:
        """Stable name, e.g. '3-7'."""
        return f"{self.iy}-{self.ix}"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y1 - self.y0, self.x1 - self.x0)

    @property
    def slices(self) -> tuple[slice, slice]:
        return (slice(self.y0, self.y1), slice(self.x0, self.x1))


def iter_blocks(shape: tuple[int, int], chunk: int) -> Iterator[Block]:
    """Row-major blocks of ``chunk`` x ``chunk`` pixels (smaller at the right/bottom edges)."""
    if chunk < 1:
        raise ConfigError(f"chunk size {chunk} must be positive", hint="use e.g. 512")
    h, w = shape
    for iy, y0 in enumerate(range(0, h, chunk)):
        for ix, x0 in enumerate(range(0, w, chunk)):
            yield Block(iy, ix, y0, min(y0 + chunk, h), x0, min(x0 + chunk, w))


def store_chunk(block: int) -> int:
    """Spatial side of the Zarr chunks of a cube written in blocks of ``block`` px: the
    largest divisor of ``block`` no larger than :data:`STORE_CHUNK` (so that no chunk is
    shared by two blocks), or ``block`` itself when it is small or has no divisor of at least
    :data:`STORE_CHUNK_MIN`."""
    if block <= STORE_CHUNK:
        return block
    for side in range(STORE_CHUNK, STORE_CHUNK_MIN - 1, -1):
        if block % side == 0:
            return side
    return block


def store_layout(block: int) -> tuple[int, int | None]:
    """(stored chunk side, shard side or None) of a cube written in blocks of ``block`` px:
    a block is one shard of :func:`store_chunk` chunks, or one plain chunk when that is the
    block itself."""
    side = store_chunk(block)
    return side, (block if side != block else None)


def blocks(shape: tuple[int, int], chunk: int) -> list[Block]:
    """All blocks of a grid (see :func:`iter_blocks`)."""
    return list(iter_blocks(shape, chunk))


def block_memory_bytes(
    chunk: int, n_out_times: int, n_vars: int, n_in_per_period: int, n_in_bands: int
) -> int:
    """Rough peak bytes of one block task: float32 outputs + one period's uint16 inputs."""
    px = chunk * chunk
    return px * (4 * n_out_times * n_vars + 2 * n_in_per_period * n_in_bands + 16)


def choose_chunk(
    budget_bytes: int, n_out_times: int, n_vars: int, n_in_per_period: int, n_in_bands: int
) -> int:
    """The largest of :data:`AUTO_CHUNKS` whose block fits the budget (else the smallest)."""
    for c in AUTO_CHUNKS:
        if block_memory_bytes(c, n_out_times, n_vars, n_in_per_period, n_in_bands) <= budget_bytes:
            return c
    return AUTO_CHUNKS[-1]
