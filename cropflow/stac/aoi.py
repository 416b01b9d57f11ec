"""Areas of interest: a GeoJSON file or object, or a lon/lat bbox, checked and normalised.

Every AOI becomes a valid, non-empty (Multi)Polygon in EPSG:4326 (lon/lat, WGS84). A bbox is
``min_lon, min_lat, max_lon, max_lat``; one crossing the antimeridian must be split in two.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shapely
from pyproj import Geod
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from cropflow.errors import AOIError

BBox = tuple[float, float, float, float]

#: ``crs`` member values (GeoJSON 2008) that mean lon/lat WGS84.
_WGS84_NAMES = frozenset(
    {
        "urn:ogc:def:crs:ogc:1.3:crs84",
        "urn:ogc:def:crs:ogc::crs84",
        "crs84",
        "ogc:crs84",
        "epsg:4326",
        "urn:ogc:def:crs:epsg::4326",
        "urn:ogc:def:crs:epsg:6.6:4326",
        "http://www.opengis.net/def/crs/ogc/1.3/crs84",
        "http://www.opengis.net/def/crs/epsg/0/4326",
    }
)
_NUMBER_LIST = re.compile(r"^\s*\[?\s*([^\[\]]*?)\s*\]?\s*$")
_GEOD = Geod(ellps="WGS84")
_REPROJECT_HINT = "reproject it to WGS84 lon/lat, e.g. `ogr2ogr -t_srs EPSG:4326 out.geojson in`"


@dataclass(frozen=True)
class AOI:
    """A valid, non-empty polygonal area in EPSG:4326 (lon/lat)."""

    geometry: BaseGeometry
    from_bbox: bool = False

    @property
    def bbox(self) -> BBox:
        """``(min_lon, min_lat, max_lon, max_lat)``."""
        minx, miny, maxx, maxy = self.geometry.bounds
        return (float(minx), float(miny), float(maxx), float(maxy))

    def geojson(self) -> dict[str, Any]:
        """The geometry as a GeoJSON geometry object (plain lists, JSON-serialisable)."""
        result: dict[str, Any] = json.loads(shapely.to_geojson(self.geometry))
        return result

    def describe(self) -> str:
        """A short human description: the bbox, rounded."""
        return "bbox(" + ", ".join(f"{v:.5f}" for v in self.bbox) + ")"

    def area_km2(self) -> float:
        """The area on the WGS84 ellipsoid, in km²: exact for a lon/lat rectangle (a bbox,
        whose edges are meridians and parallels), geodesic for other polygons (edges
        densified to 0.25°)."""
        if self.geometry.equals(box(*self.bbox)):
            return _quadrangle_km2(*self.bbox)
        dense = shapely.segmentize(self.geometry, max_segment_length=0.25)
        area, _ = _GEOD.geometry_area_perimeter(dense)
        return abs(float(area)) / 1e6

    def swap_hint(self) -> str | None:
        """For an AOI given as a bbox: "did you swap lon/lat?" with the swapped bbox, when
        that is a valid bbox too (then either order could be meant); else None."""
        if not self.from_bbox:
            return None
        return swapped_bbox_hint(self.bbox)


def _quadrangle_km2(minx: float, miny: float, maxx: float, maxy: float) -> float:
    """Area of the lon/lat rectangle on the WGS84 ellipsoid (through the authalic latitude)."""
    a, f = 6378.137, 1 / 298.257223563
    e2 = f * (2 - f)
    e = math.sqrt(e2)

    def q(lat: float) -> float:
        s = math.sin(math.radians(lat))
        return (1 - e2) * (s / (1 - e2 * s * s) - math.log((1 - e * s) / (1 + e * s)) / (2 * e))

    return abs(a * a / 2 * math.radians(maxx - minx) * (q(maxy) - q(miny)))


def _valid_lonlat(minx: float, miny: float, maxx: float, maxy: float) -> bool:
    return (
        -180.0 <= minx < maxx <= 180.0
        and -90.0 <= miny < maxy <= 90.0
        and all(math.isfinite(v) for v in (minx, miny, maxx, maxy))
    )


def swapped_bbox_hint(bbox: Sequence[float]) -> str | None:
    """ "did you swap lon/lat? ..." when ``bbox`` read as lat,lon (swapped to lon,lat) is a
    valid bbox; None otherwise."""
    if len(bbox) != 4:
        return None
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    swapped = (miny, minx, maxy, maxx)
    if swapped == (minx, miny, maxx, maxy) or not _valid_lonlat(*swapped):
        return None
    text = ",".join(f"{v:g}" for v in swapped)
    return (
        f"did you swap lon/lat? a bbox is min_lon,min_lat,max_lon,max_lat; read as lat/lon, "
        f"yours is {text}"
    )


def _check_bbox(values: Sequence[float], source: str) -> BBox:
    if len(values) != 4:
        raise AOIError(
            f"bbox {source!r} has {len(values)} numbers, not 4",
            hint="give min_lon,min_lat,max_lon,max_lat",
        )
    minx, miny, maxx, maxy = (float(v) for v in values)
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise AOIError(f"bbox {source!r} has a non-finite number", hint="use finite degrees")
    if not (-180.0 <= minx <= 180.0 and -180.0 <= maxx <= 180.0):
        raise AOIError(
            f"bbox {source!r}: longitudes must lie in [-180, 180]",
            hint="give lon/lat degrees in the order min_lon,min_lat,max_lon,max_lat "
            "(projected coordinates are not accepted)",
        )
    if not (-90.0 <= miny <= 90.0 and -90.0 <= maxy <= 90.0):
        swap = swapped_bbox_hint((minx, miny, maxx, maxy))
        raise AOIError(
            f"bbox {source!r}: latitudes must lie in [-90, 90]"
            + (" (did you swap lon/lat?)" if swap else ""),
            hint=swap or "give min_lon,min_lat,max_lon,max_lat (lon first, then lat)",
        )
    if minx >= maxx or miny >= maxy:
        raise AOIError(
            f"bbox {source!r} has min >= max",
            hint="order it min_lon,min_lat,max_lon,max_lat; split an AOI that crosses the "
            "antimeridian into two",
        )
    return (minx, miny, maxx, maxy)


def parse_bbox(value: str | Sequence[float]) -> BBox:
    """Parse ``"min_lon,min_lat,max_lon,max_lat"`` (commas and/or spaces, optional [ ])."""
    if isinstance(value, str):
        m = _NUMBER_LIST.match(value)
        parts = [p for p in re.split(r"[,\s]+", m.group(1) if m else value) if p]
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise AOIError(
                f"bbox {value!r} is not four numbers",
                hint="give min_lon,min_lat,max_lon,max_lat, e.g. 11.0,47.9,11.2,48.1",
            ) from None
        return _check_bbox(numbers, value)
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        raise AOIError(
            f"bbox {value!r} is not four numbers", hint="give min_lon,min_lat,max_lon,max_lat"
        ) from None
    return _check_bbox(numbers, str(list(value)))


def _looks_like_bbox(text: str) -> bool:
    """Numbers only (any count: a wrong count is then reported as a bad bbox)."""
    return bool(re.fullmatch(r"\s*\[?\s*[-+0-9.eE]+([\s,]+[-+0-9.eE]+)*\s*\]?\s*", text))


def _check_crs(obj: dict[str, Any], source: str) -> None:
    crs = obj.get("crs")
    if crs is None:
        return
    name = None
    if isinstance(crs, dict):
        props = crs.get("properties")
        if isinstance(props, dict):
            name = props.get("name") or props.get("href")
    elif isinstance(crs, str):
        name = crs
    if not isinstance(name, str) or name.strip().lower() not in _WGS84_NAMES:
        raise AOIError(
            f"AOI {source} declares crs {name or crs!r}, not WGS84 lon/lat", hint=_REPROJECT_HINT
        )


def _geometries(obj: dict[str, Any], source: str) -> list[dict[str, Any]]:
    kind = obj.get("type")
    if kind == "FeatureCollection":
        features = obj.get("features")
        if not isinstance(features, list):
            raise AOIError(f"AOI {source}: 'features' is not a list", hint="fix the GeoJSON")
        out: list[dict[str, Any]] = []
        for feature in features:
            if isinstance(feature, dict):
                out.extend(_geometries(feature, source))
        return out
    if kind == "Feature":
        geom = obj.get("geometry")
        return [geom] if isinstance(geom, dict) else []
    if isinstance(kind, str) and ("coordinates" in obj or kind == "GeometryCollection"):
        return [obj]
    raise AOIError(
        f"AOI {source} is not GeoJSON (type {kind!r})",
        hint="give a GeoJSON Polygon/MultiPolygon, Feature or FeatureCollection, or a bbox",
    )


def _from_geojson(obj: dict[str, Any], source: str) -> AOI:
    _check_crs(obj, source)
    parts = _geometries(obj, source)
    geoms: list[BaseGeometry] = []
    for part in parts:
        try:
            geom = shape(part)
        except Exception as exc:  # shapely raises several types for malformed coordinates
            raise AOIError(
                f"AOI {source} has a malformed {part.get('type')!r} geometry: {exc}",
                hint="fix the coordinates (GeoJSON rings are closed lists of [lon, lat])",
            ) from None
        geoms.extend(_polygonal_parts(geom, source))
    if not geoms:
        raise AOIError(f"AOI {source} has an empty geometry", hint="give a non-empty polygon")
    for geom in geoms:
        if not geom.is_valid:
            raise AOIError(
                f"AOI {source} is not a valid polygon: {explain_validity(geom)}",
                hint="repair it (e.g. shapely.make_valid, or QGIS 'Fix geometries')",
            )
    merged = geoms[0] if len(geoms) == 1 else shapely.union_all(geoms)
    minx, miny, maxx, maxy = merged.bounds
    if not (minx >= -180.0 and maxx <= 180.0 and miny >= -90.0 and maxy <= 90.0):
        swapped = miny >= -180.0 and maxy <= 180.0 and minx >= -90.0 and maxx <= 90.0
        raise AOIError(
            f"AOI {source} has coordinates outside lon/lat range "
            f"(bounds {minx:.6g}, {miny:.6g}, {maxx:.6g}, {maxy:.6g})"
            + (" (did you swap lon/lat?)" if swapped else ""),
            hint="GeoJSON positions are [lon, lat]: swap each position's two numbers"
            if swapped
            else _REPROJECT_HINT,
        )
    if merged.is_empty or merged.area <= 0:
        raise AOIError(f"AOI {source} has zero area", hint="give a polygon with an area")
    return AOI(merged)


def _polygonal_parts(geom: BaseGeometry, source: str) -> list[BaseGeometry]:
    if geom.is_empty:
        return []
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return [geom]
    if geom.geom_type == "GeometryCollection":
        return [p for g in getattr(geom, "geoms", []) for p in _polygonal_parts(g, source)]
    raise AOIError(
        f"AOI {source} is a {geom.geom_type}, not an area",
        hint="give a Polygon or MultiPolygon (buffer points or lines first)",
    )


def _read_json_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise AOIError(
            f"AOI file {str(path)!r} does not exist",
            hint="give an existing GeoJSON file, a GeoJSON object or a bbox",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AOIError(
            f"AOI file {str(path)!r} is not GeoJSON ({exc})",
            hint="give a GeoJSON file (convert others with `ogr2ogr -f GeoJSON`)",
        ) from None
    if not isinstance(data, dict):
        raise AOIError(f"AOI file {str(path)!r} is not a GeoJSON object", hint="fix the file")
    return data


def parse_aoi(aoi: str | Path | dict[str, Any] | Sequence[float] | AOI) -> AOI:
    """Check and normalise an AOI given as a GeoJSON path, GeoJSON text/object, or a bbox.

    Strings are tried in turn as a bbox (``"11.0,47.9,11.2,48.1"``), JSON text, then a path.
    """
    if isinstance(aoi, AOI):
        return aoi
    if isinstance(aoi, dict):
        return _from_geojson(aoi, "object")
    if isinstance(aoi, Path):
        return _from_geojson(_read_json_file(aoi), f"file {str(aoi)!r}")
    if isinstance(aoi, str):
        text = aoi.strip()
        if not text:
            raise AOIError("AOI is an empty string", hint="give a GeoJSON file or a bbox")
        if _looks_like_bbox(text):
            return AOI(box(*parse_bbox(text)), from_bbox=True)
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise AOIError(
                    f"AOI text is not valid JSON ({exc})", hint="give valid GeoJSON"
                ) from None
            if not isinstance(data, dict):
                raise AOIError("AOI text is not a GeoJSON object", hint="give valid GeoJSON")
            return _from_geojson(data, "text")
        if "," in text and not Path(text).exists():
            return AOI(box(*parse_bbox(text)), from_bbox=True)  # reports why it is no bbox
        return _from_geojson(_read_json_file(Path(text)), f"file {text!r}")
    if isinstance(aoi, Sequence):
        return AOI(box(*parse_bbox(aoi)), from_bbox=True)
    raise AOIError(
        f"AOI of type {type(aoi).__name__} is not understood",
        hint="give a GeoJSON path, a GeoJSON object or a bbox",
    )
