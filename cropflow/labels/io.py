"""Reading and validating label files: GeoPackage, GeoParquet, Shapefile, GeoJSON, CSV points.

Every reader returns a GeoDataFrame with a CRS (a file without one is refused, never guessed),
only points or only polygons, and valid geometries (repaired with ``shapely.make_valid`` unless
repair is switched off, in which case invalid features are reported by id and refused).

CSV files hold points. Columns named ``lon``/``lat`` (or ``longitude``/``latitude``, ``lng``)
are WGS84 by definition; columns named ``x``/``y`` are in a CRS that must be given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pydantic import BaseModel, Field
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from cropflow.errors import LabelError

GeometryKind = Literal["point", "polygon"]

_VECTOR_SUFFIXES = {".gpkg", ".shp", ".geojson", ".json", ".fgb", ".zip"}
_PARQUET_SUFFIXES = {".parquet", ".geoparquet"}
_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}

LON_NAMES = ("lon", "longitude", "lng", "long")
LAT_NAMES = ("lat", "latitude")
X_NAMES = ("x", "easting")
Y_NAMES = ("y", "northing")


class ReadReport(BaseModel):
    """What reading a label file found and fixed."""

    path: str
    n_features: int = Field(description="Features read from the file.")
    kind: GeometryKind
    crs: str = Field(description="CRS of the file (as read, before reprojection).")
    n_repaired: int = Field(0, description="Invalid geometries repaired with make_valid.")
    n_empty_dropped: int = Field(0, description="Features without usable geometry, dropped.")


def _find_column(columns: list[str], names: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in columns}
    for name in names:
        if name in lower:
            return lower[name]
    return None


def _read_csv_points(path: Path, crs: str | None, sep: str | None) -> gpd.GeoDataFrame:
    try:
        frame = pd.read_csv(path, sep=sep or ("\t" if path.suffix == ".tsv" else ","))
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LabelError(f"labels file {path} is not a readable CSV: {exc}") from exc
    columns = [str(c) for c in frame.columns]
    lon, lat = _find_column(columns, LON_NAMES), _find_column(columns, LAT_NAMES)
    if lon and lat:
        xs = pd.to_numeric(frame[lon], errors="coerce").to_numpy(dtype=float)
        ys = pd.to_numeric(frame[lat], errors="coerce").to_numpy(dtype=float)
        finite = np.isfinite(xs) & np.isfinite(ys)
        if (np.abs(xs[finite]) > 180).any() or (np.abs(ys[finite]) > 90).any():
            raise LabelError(
                f"labels file {path}: columns {lon!r}/{lat!r} hold values outside "
                "longitude/latitude ranges",
                hint="if these are projected coordinates, name the columns x and y and give "
                "their CRS",
            )
        point_crs = crs or "EPSG:4326"
    else:
        xcol, ycol = _find_column(columns, X_NAMES), _find_column(columns, Y_NAMES)
        if not (xcol and ycol):
            raise LabelError(
                f"labels file {path} has no coordinate columns (found {columns})",
                hint="name them lon/lat (WGS84) or x/y (and give their CRS)",
            )
        if crs is None:
            raise LabelError(
                f"labels file {path} has x/y columns but no CRS",
                hint="give the CRS of the x/y columns (e.g. crs='EPSG:32633'), or use lon/lat",
            )
        xs = pd.to_numeric(frame[xcol], errors="coerce").to_numpy(dtype=float)
        ys = pd.to_numeric(frame[ycol], errors="coerce").to_numpy(dtype=float)
        point_crs = crs
    geometry = gpd.points_from_xy(xs, ys)
    geometry[~(np.isfinite(xs) & np.isfinite(ys))] = None
    return gpd.GeoDataFrame(frame, geometry=geometry, crs=point_crs)


def _read_file(path: Path, layer: str | None) -> gpd.GeoDataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in _PARQUET_SUFFIXES:
            return gpd.read_parquet(path)
        return gpd.read_file(path, layer=layer, engine="pyogrio")
    except LabelError:
        raise
    except Exception as exc:  # pyogrio/pyarrow raise many types for unreadable files
        raise LabelError(
            f"labels file {path} could not be read: {exc}",
            hint="check the file is a valid GeoPackage, GeoParquet, Shapefile or GeoJSON",
        ) from exc


def _polygonal(geom: BaseGeometry) -> BaseGeometry | None:
    """The polygonal part of a repaired geometry (make_valid may add lines or points)."""
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    if not parts:
        return None
    return shapely.union_all(parts)


def geometry_kind(gdf: gpd.GeoDataFrame, source: str) -> GeometryKind:
    """``point`` or ``polygon``; mixed or line geometries are refused."""
    types = set(gdf.geometry.dropna().geom_type.unique())
    if types and types <= {"Point"}:
        return "point"
    if types and types <= {"Polygon", "MultiPolygon"}:
        return "polygon"
    if types and types <= {"Point", "MultiPoint"}:
        raise LabelError(
            f"{source}: multi-point features are not supported",
            hint="explode them into single points (one label per point)",
        )
    raise LabelError(
        f"{source}: label geometries must be all points or all polygons, found {sorted(types)}",
        hint="split the file by geometry type, or buffer lines into polygons",
    )


def read_labels(
    path: str | Path,
    *,
    layer: str | None = None,
    crs: str | None = None,
    repair_invalid: bool = True,
    csv_sep: str | None = None,
) -> tuple[gpd.GeoDataFrame, ReadReport]:
    """Read a label file into a GeoDataFrame with a CRS and valid point or polygon geometries.

    ``crs`` is the CRS of x/y CSV columns, or the CRS to *assign* to a vector file that has
    none (never a reprojection). Without it, a file with no CRS is refused.
    """
    path = Path(path)
    if not path.exists():
        raise LabelError(f"labels file not found: {path}", hint="check the path")
    suffix = path.suffix.lower()
    if suffix in _CSV_SUFFIXES:
        gdf = _read_csv_points(path, crs, csv_sep)
    elif suffix in _VECTOR_SUFFIXES | _PARQUET_SUFFIXES:
        gdf = _read_file(path, layer)
        if gdf.crs is None:
            if crs is None:
                raise LabelError(
                    f"labels file {path} has no CRS",
                    hint="write the file with its CRS (e.g. ogr2ogr -a_srs EPSG:4326), "
                    "or give the CRS to assign",
                )
            gdf = gdf.set_crs(crs)
    else:
        raise LabelError(
            f"labels file {path}: unsupported format {suffix!r}",
            hint="use GeoPackage, GeoParquet, Shapefile, GeoJSON or a CSV of points",
        )
    source = f"labels file {path}"
    if len(gdf) == 0:
        raise LabelError(f"{source} holds no features", hint="check the file and layer")

    kind = geometry_kind(gdf, source)
    geoms = gdf.geometry.to_numpy()
    usable = np.array([g is not None and not g.is_empty for g in geoms], dtype=bool)
    n_repaired = 0
    if kind == "polygon":
        invalid = usable & ~shapely.is_valid(geoms)
        if invalid.any():
            if not repair_invalid:
                reasons = shapely.is_valid_reason(geoms[invalid])
                shown = [
                    f"row {int(i)}: {r}"
                    for i, r in zip(np.flatnonzero(invalid), reasons, strict=True)
                ][:10]
                raise LabelError(
                    f"{source}: {int(invalid.sum())} invalid polygons ({'; '.join(shown)})",
                    hint="repair them (e.g. shapely.make_valid), or read with repair switched on",
                )
            repaired = [_polygonal(g) for g in shapely.make_valid(geoms[invalid])]
            geoms = geoms.copy()
            geoms[invalid] = np.array(repaired, dtype=object)
            n_repaired = int(invalid.sum())
            usable = np.array([g is not None and not g.is_empty for g in geoms], dtype=bool)
    gdf = gdf.set_geometry(gpd.GeoSeries(geoms, index=gdf.index, crs=gdf.crs))
    gdf = gdf.loc[usable].reset_index(drop=True)
    if len(gdf) == 0:
        raise LabelError(f"{source} has no feature with a usable geometry")
    report = ReadReport(
        path=str(path),
        n_features=len(usable),
        kind=kind,
        crs=CRS.from_user_input(gdf.crs).to_string(),
        n_repaired=n_repaired,
        n_empty_dropped=int((~usable).sum()),
    )
    return gdf, report
