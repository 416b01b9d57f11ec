"""Cloud-optimised GeoTIFFs of a prediction, written window by window (memory stays flat).

* ``class_map.tif``: uint8 class ids, nodata 255, an embedded GDAL colour table (class
  colours), band description ``class``, class names as tags (dataset tag ``CLASSES`` as JSON,
  band tags ``CLASS_<id>=<name>``) and GDAL category names in the ``.aux.xml`` sidecar
  (GDAL keeps category names only there for GeoTIFF); overviews by mode.
* ``probability.tif``: one uint8 band per class, described by class name, scale 1/255, an
  internal mask of the predicted pixels; overviews by average.
* ``confidence.tif``: the largest probability, uint8 (scale 1/255), nodata 0.

Each is written as a tiled GeoTIFF first, then converted by GDAL's COG driver.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.enums
import rasterio.shutil
from rasterio.windows import Window as RioWindow

from cropflow.classes import ClassMap
from cropflow.predict.store import NODATA
from cropflow.predict.tiling import Window, tile_grid

#: Side of the COG's internal tiles, and of the windows products are read in.
BLOCK = 512


def hex_to_rgba(color: str) -> tuple[int, int, int, int]:
    """``#rrggbb`` to an opaque RGBA tuple."""
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), 255


def windows(height: int, width: int, block: int = BLOCK) -> Iterator[Window]:
    """Windows of ``block`` pixels covering the grid once."""
    return (t.core for t in tile_grid(height, width, block))


def _rio(w: Window) -> RioWindow:
    return RioWindow(w.col0, w.row0, w.width, w.height)


def _profile(
    shape: tuple[int, int], count: int, crs_wkt: str, transform: Any, nodata: float | None
) -> dict[str, Any]:
    return {
        "driver": "GTiff",
        "height": shape[0],
        "width": shape[1],
        "count": count,
        "dtype": "uint8",
        "crs": rasterio.crs.CRS.from_wkt(crs_wkt),
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "interleave": "band",
        "BIGTIFF": "IF_SAFER",
    }


def _to_cog(tmp: Path, dest: Path, resampling: str) -> Path:
    rasterio.shutil.copy(
        str(tmp),
        str(dest),
        driver="COG",
        COMPRESS="DEFLATE",
        BLOCKSIZE=BLOCK,
        OVERVIEW_RESAMPLING=resampling,
        BIGTIFF="IF_SAFER",
    )
    tmp.unlink()
    return dest


def _write(
    dest: Path,
    profile: dict[str, Any],
    fill: Callable[[Any, Window], None],
    setup: Callable[[Any], None],
    resampling: str,
) -> Path:
    tmp = dest.with_name(f".{dest.name}.tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        setup(dst)
        for w in windows(profile["height"], profile["width"]):
            fill(dst, w)
    return _to_cog(tmp, dest, resampling)


def write_category_names(tif: Path, class_map: ClassMap) -> Path:
    """GDAL category names of band 1 (index = pixel value) in ``<tif>.aux.xml``."""
    names = [""] * (max(class_map.ids) + 1)
    for c in class_map.classes:
        names[c.id] = c.name
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    ET.SubElement(band, "Description").text = "class"
    cats = ET.SubElement(band, "CategoryNames")
    for name in names:
        ET.SubElement(cats, "Category").text = name
    ET.indent(root)
    aux = tif.with_name(tif.name + ".aux.xml")
    aux.write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=False) + b"\n")
    return aux


def write_class_cog(
    class_id: Any,
    class_map: ClassMap,
    crs_wkt: str,
    transform: Any,
    dest: Path,
    tags: dict[str, str] | None = None,
) -> Path:
    """The class map COG from a ``(y, x)`` uint8 array-like (read window by window)."""
    shape = (int(class_id.shape[0]), int(class_id.shape[1]))

    def setup(dst: Any) -> None:
        cmap = dict.fromkeys(range(256), (0, 0, 0, 0))
        cmap.update({c.id: hex_to_rgba(c.color) for c in class_map.classes})
        dst.write_colormap(1, cmap)
        dst.set_band_description(1, "class")
        dst.update_tags(
            CLASSES=json.dumps(
                [{"id": c.id, "name": c.name, "color": c.color} for c in class_map.classes]
            ),
            **(tags or {}),
        )
        dst.update_tags(1, **{f"CLASS_{c.id}": c.name for c in class_map.classes})

    def fill(dst: Any, w: Window) -> None:
        dst.write(np.asarray(class_id[w.rows, w.cols], np.uint8), 1, window=_rio(w))

    out = _write(dest, _profile(shape, 1, crs_wkt, transform, NODATA), fill, setup, "MODE")
    write_category_names(out, class_map)
    return out


def write_probability_cog(
    probability: Any,
    class_id: Any,
    class_map: ClassMap,
    crs_wkt: str,
    transform: Any,
    dest: Path,
) -> Path:
    """One band per class (uint8, scale 1/255), masked where nothing was predicted."""
    k = len(class_map.classes)
    shape = (int(probability.shape[1]), int(probability.shape[2]))
    profile = _profile(shape, k, crs_wkt, transform, None)

    def setup(dst: Any) -> None:
        for i, c in enumerate(class_map.classes, start=1):
            dst.set_band_description(i, c.name)
            dst.update_tags(i, CLASS_ID=str(c.id), CLASS_NAME=c.name)
        dst.scales = (1 / 255,) * k
        dst.offsets = (0.0,) * k
        dst.update_tags(SCALE_NOTE="value / 255 = probability")

    def fill(dst: Any, w: Window) -> None:
        p: npt.NDArray[np.uint8] = np.asarray(probability[:, w.rows, w.cols], np.uint8)
        dst.write(p, window=_rio(w))
        valid = np.asarray(class_id[w.rows, w.cols]) != NODATA
        dst.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=_rio(w))

    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        return _write(dest, profile, fill, setup, "AVERAGE")


def write_confidence_cog(confidence: Any, crs_wkt: str, transform: Any, dest: Path) -> Path:
    """The largest class probability (uint8, scale 1/255), nodata 0."""
    shape = (int(confidence.shape[0]), int(confidence.shape[1]))

    def setup(dst: Any) -> None:
        dst.set_band_description(1, "confidence")
        dst.scales = (1 / 255,)
        dst.offsets = (0.0,)

    def fill(dst: Any, w: Window) -> None:
        dst.write(np.asarray(confidence[w.rows, w.cols], np.uint8), 1, window=_rio(w))

    return _write(dest, _profile(shape, 1, crs_wkt, transform, 0), fill, setup, "AVERAGE")


#: Bands of the true-colour composite, and the reflectance shown as full brightness.
TRUE_COLOR_BANDS = ("red", "green", "blue")
TRUE_COLOR_MAX = 0.3


def write_truecolor_cog(
    cube_uri: str, crs_wkt: str, transform: Any, shape: tuple[int, int], dest: Path
) -> Path | None:
    """The season's true-colour composite of the cube (median over its dates of red, green
    and blue, reflectance 0-0.3 stretched to 1-255) as an RGBA COG; None when the cube has no
    red, green and blue bands (another sensor, radar, one band)."""
    from cropflow.cube.store import open_cube

    ds = open_cube(cube_uri)
    if not all(b in ds.data_vars for b in TRUE_COLOR_BANDS):
        return None
    if (ds.sizes["y"], ds.sizes["x"]) != shape:
        return None  # not the prediction's grid: nothing to lay under the map

    def setup(dst: Any) -> None:
        for i, name in enumerate(TRUE_COLOR_BANDS, start=1):
            dst.set_band_description(i, name)
        dst.set_band_description(4, "alpha")
        dst.colorinterp = [
            rasterio.enums.ColorInterp.red,
            rasterio.enums.ColorInterp.green,
            rasterio.enums.ColorInterp.blue,
            rasterio.enums.ColorInterp.alpha,
        ]

    def fill(dst: Any, w: Window) -> None:
        valid = np.ones((w.height, w.width), bool)
        for i, band in enumerate(TRUE_COLOR_BANDS, start=1):
            stack = np.asarray(ds[band][:, w.rows, w.cols].values, np.float32)
            with np.errstate(all="ignore"):
                seen: npt.NDArray[np.bool_] = np.asarray(np.isfinite(stack).any(axis=0))
                median = np.nanmedian(np.where(seen[np.newaxis], stack, 0.0), axis=0)
            valid &= seen
            scaled = np.clip(median / TRUE_COLOR_MAX * 254.0 + 1.0, 1, 255)
            dst.write(np.where(seen, scaled, 0).astype(np.uint8), i, window=_rio(w))
        dst.write((valid * 255).astype(np.uint8), 4, window=_rio(w))

    return _write(dest, _profile(shape, 4, crs_wkt, transform, None), fill, setup, "AVERAGE")
