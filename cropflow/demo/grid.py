"""Grid arithmetic of the demo region: the 10 m world grid and the tiles that are windows of it.

The region sits in Brandenburg (UTM zone 33N), across the boundary of the real MGRS tiles
33UUT and 33UVT. Each demo tile is a small window of its MGRS tile, on the same 10 m / 20 m
pixel grid as the real tile, so neighbouring demo tiles overlap exactly like neighbouring
MGRS tiles of one UTM zone do (same CRS, pixel-aligned, identical data in the overlap).
Everything is simulated once on the *world grid* (the union of the tiles at 10 m) and each tile
is cut out of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine

#: EPSG code of the demo region (WGS 84 / UTM zone 33N).
EPSG = 32633
UTM_ZONE = 33
LATITUDE_BAND = "U"
#: MGRS 100 km grid squares of the tiles, west to east (zone 33 columns S..Z; row T).
GRID_SQUARES = ("UT", "VT")
#: East edge of the real MGRS tile 33UUT (its ULX 300000 m + 109800 m).
EAST_EDGE_33UUT = 409_800.0
#: West edge of the real MGRS tile 33UVT; demo tiles never start west of it.
WEST_EDGE_33UVT = 399_960.0
#: North edge of the demo region (60 m-aligned with the MGRS tile origin).
NORTH_EDGE = 5_772_000.0
#: Pixel size of the world grid.
RES_10 = 10.0
RES_20 = 20.0


@dataclass(frozen=True)
class Window:
    """A window of the world grid in 10 m pixels (``row_off, col_off, height, width``)."""

    row_off: int
    col_off: int
    height: int
    width: int

    def slices(self, factor: int = 1) -> tuple[slice, slice]:
        """Array slices of this window on a grid ``factor`` times coarser than 10 m."""
        r0, c0 = self.row_off // factor, self.col_off // factor
        return slice(r0, r0 + self.height // factor), slice(c0, c0 + self.width // factor)


@dataclass(frozen=True)
class TileGeometry:
    """One demo tile: its MGRS name and its window of the world grid."""

    mgrs: str  # e.g. "33UUT"
    grid_square: str  # e.g. "UT"
    window: Window
    bounds: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax (UTM metres)

    def transform(self, res: float) -> Affine:
        """Affine transform of this tile at ``res`` metres."""
        return Affine(res, 0.0, self.bounds[0], 0.0, -res, self.bounds[3])

    def shape(self, res: float) -> tuple[int, int]:
        """``(rows, cols)`` of this tile at ``res`` metres."""
        return (
            round((self.bounds[3] - self.bounds[1]) / res),
            round((self.bounds[2] - self.bounds[0]) / res),
        )


@dataclass(frozen=True)
class WorldGrid:
    """The 10 m grid covering all tiles."""

    xmin: float
    ymax: float
    height: int
    width: int
    epsg: int = EPSG

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    @property
    def transform(self) -> Affine:
        return Affine(RES_10, 0.0, self.xmin, 0.0, -RES_10, self.ymax)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (
            self.xmin,
            self.ymax - self.height * RES_10,
            self.xmin + self.width * RES_10,
            self.ymax,
        )

    def x_centres(self, factor: int = 1) -> np.ndarray:
        """Easting of pixel centres along a row (grid ``factor`` times coarser than 10 m)."""
        res = RES_10 * factor
        return self.xmin + res * (np.arange(self.width // factor) + 0.5)

    def y_centres(self, factor: int = 1) -> np.ndarray:
        """Northing of pixel centres down a column."""
        res = RES_10 * factor
        return self.ymax - res * (np.arange(self.height // factor) + 0.5)


def tile_col_offsets(tile_size: int, overlap: int, n_tiles: int) -> list[int]:
    """Column offsets (10 m px) of ``n_tiles`` tiles of ``tile_size`` overlapping by ``overlap``."""
    step = tile_size - overlap
    return [i * step for i in range(n_tiles)]


def world_width(tile_size: int, overlap: int, n_tiles: int) -> int:
    """Width (10 m px) of the union of the tiles."""
    return tile_col_offsets(tile_size, overlap, n_tiles)[-1] + tile_size


def layout(tile_size: int, overlap: int) -> tuple[WorldGrid, list[TileGeometry]]:
    """The world grid and the two tiles (33UUT to the west, 33UVT to the east)."""
    n_tiles = len(GRID_SQUARES)
    xmin = EAST_EDGE_33UUT - tile_size * RES_10
    world = WorldGrid(
        xmin=xmin,
        ymax=NORTH_EDGE,
        height=tile_size,
        width=world_width(tile_size, overlap, n_tiles),
    )
    tiles = []
    for square, col in zip(
        GRID_SQUARES, tile_col_offsets(tile_size, overlap, n_tiles), strict=True
    ):
        x0 = xmin + col * RES_10
        bounds = (x0, NORTH_EDGE - tile_size * RES_10, x0 + tile_size * RES_10, NORTH_EDGE)
        tiles.append(
            TileGeometry(
                mgrs=f"{UTM_ZONE}{LATITUDE_BAND}{square}",
                grid_square=square,
                window=Window(0, col, tile_size, tile_size),
                bounds=bounds,
            )
        )
    return world, tiles


def block_mean(array: np.ndarray) -> np.ndarray:
    """Mean over 2 x 2 blocks of the last two axes (10 m -> 20 m), in the input's dtype."""
    a = array
    total = a[..., 0::2, 0::2] + a[..., 1::2, 0::2] + a[..., 0::2, 1::2] + a[..., 1::2, 1::2]
    result: np.ndarray = total * np.asarray(0.25, dtype=a.dtype)
    return result


def upsample(array: np.ndarray) -> np.ndarray:
    """Repeat every pixel over 2 x 2 pixels (20 m -> 10 m, nearest)."""
    return np.repeat(np.repeat(array, 2, axis=-2), 2, axis=-1)
