"""Polygon labels onto the cube grid: a class raster and a field-id raster.

- ``label`` (uint8): class id per pixel, IGNORE_INDEX (255) where unlabelled;
- ``field`` (int32): field number per pixel (1..n, 0 = no field), from the *unbuffered*
  polygons, so that a field's edge pixels stay with their field when splitting.

Pixels covered by two different fields are mixed: they get no label and no field. The inward
buffer shrinks polygons before labelling, so mixed edge pixels stay unlabelled; the boundary
class (Crop2Seg) labels the outer ring of each field, ``boundary_width_px`` wide.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
from odc.geo.geobox import GeoBox
from pydantic import BaseModel, Field
from rasterio.enums import MergeAlg
from rasterio.features import rasterize
from scipy import ndimage

from cropflow.classes import IGNORE_INDEX
from cropflow.errors import LabelError
from cropflow.labels.options import (
    RasterizeOptions,
)

FIELD_ID_NAMES = ("field_id", "fid", "parcel_id", "field", "id")


class RasterReport(BaseModel):
    """What rasterising polygons produced."""

    n_fields: int = Field(description="Distinct fields with at least one pixel on the grid.")
    n_fields_outside: int = Field(0, description="Fields with no pixel on the grid.")
    n_fields_unlabelled: int = Field(
        0, description="Fields left without labelled pixels (inward buffer, overlaps)."
    )
    n_overlap_pixels: int = Field(0, description="Pixels covered by two fields (unlabelled).")
    n_boundary_pixels: int = Field(0, description="Pixels given the boundary class.")
    n_labelled_pixels: int = Field(0, description="Pixels with a class.")


def find_field_column(columns: list[str]) -> str | None:
    """A column holding field ids, by common names (case-insensitive)."""
    lower = {c.lower(): c for c in columns}
    return next((lower[n] for n in FIELD_ID_NAMES if n in lower), None)


def boundary_mask(field: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels of a field within ``width`` pixels (8-neighbourhood) of another field or none.

    The image edge is not a boundary (a field cut by the grid edge goes on outside it).
    """
    size = 2 * width + 1
    high = ndimage.maximum_filter(field, size=size, mode="nearest")
    low = ndimage.minimum_filter(field, size=size, mode="nearest")
    ring: np.ndarray = (field > 0) & ((high != field) | (low != field))
    return ring


def rasterize_fields(
    polygons: gpd.GeoDataFrame,
    gbox: GeoBox,
    options: RasterizeOptions,
    *,
    field_column: str | None = None,
    boundary_id: int | None = None,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, RasterReport]:
    """Rasterise mapped polygons (cube CRS, ``class_id`` column) onto the cube grid.

    Rows sharing a ``field_column`` value are one field. Returns ``(label, field, fields,
    report)``; ``fields`` has ``field``, ``source_id``, ``class_id``, ``n_pixels``,
    ``n_labelled``.
    """
    if options.boundary_class is not None and boundary_id is None:
        raise LabelError(
            f"boundary class {options.boundary_class!r} has no id",
            hint="list the boundary class in the mapping file (it may have no codes)",
        )
    ny, nx = gbox.shape
    shape = (ny, nx)
    transform = gbox.affine
    if field_column is not None:
        source_ids = polygons[field_column].astype(str).to_numpy()
    else:
        source_ids = np.arange(len(polygons)).astype(str)
    codes, uniques = pd.factorize(source_ids)
    field_no = codes.astype(np.int64) + 1
    frame = gpd.GeoDataFrame(
        {"_field": field_no, "class_id": polygons["class_id"].to_numpy()},
        geometry=polygons.geometry.to_numpy(),
        crs=polygons.crs,
    )
    if len(uniques) < len(frame):  # several rows per field: one geometry per field
        geoms = frame.groupby("_field").geometry.apply(lambda g: g.union_all())
        classes = frame.groupby("_field")["class_id"].agg(
            lambda c: int(c.iloc[0]) if c.nunique() == 1 else IGNORE_INDEX
        )
        frame = gpd.GeoDataFrame(
            {"_field": geoms.index.to_numpy(), "class_id": classes.loc[geoms.index].to_numpy()},
            geometry=geoms.to_numpy(),
            crs=polygons.crs,
        )

    pairs = list(zip(frame.geometry, frame["_field"].astype(np.int64), strict=True))
    field = rasterize(
        pairs,
        out_shape=shape,
        transform=transform,
        fill=0,
        all_touched=options.all_touched,
        dtype=np.int32,
    )
    count = rasterize(
        ((g, 1) for g in frame.geometry),
        out_shape=shape,
        transform=transform,
        fill=0,
        all_touched=options.all_touched,
        merge_alg=MergeAlg.add,
        dtype=np.int32,
    )
    overlap = count > 1
    field[overlap] = 0

    label_geoms = frame.geometry
    if options.inward_buffer_px > 0:
        distance = options.inward_buffer_px * abs(gbox.resolution.x)
        label_geoms = frame.geometry.buffer(-distance)
    label_pairs = [
        (g, int(c))
        for g, c in zip(label_geoms, frame["class_id"], strict=True)
        if g is not None and not g.is_empty and int(c) != IGNORE_INDEX
    ]
    label = np.full(shape, IGNORE_INDEX, dtype=np.uint8)
    if label_pairs:
        label = rasterize(
            label_pairs,
            out_shape=shape,
            transform=transform,
            fill=IGNORE_INDEX,
            all_touched=options.all_touched,
            dtype=np.uint8,
        )
    label[overlap] = IGNORE_INDEX
    label[field == 0] = IGNORE_INDEX  # a label only inside its (unbuffered) field

    n_boundary = 0
    if boundary_id is not None and options.boundary_class is not None:
        ring = boundary_mask(field, options.boundary_width_px)
        label[ring] = np.uint8(boundary_id)
        n_boundary = int(ring.sum())

    n_total = int(field_no.max()) if len(field_no) else 0
    n_pixels = np.bincount(field.ravel(), minlength=n_total + 1)
    labelled = label != IGNORE_INDEX
    n_labelled = np.bincount(field[labelled], minlength=n_total + 1)
    table = pd.DataFrame(
        {
            "field": frame["_field"].to_numpy(dtype=np.int32),
            "source_id": [str(uniques[i - 1]) for i in frame["_field"]],
            "class_id": frame["class_id"].to_numpy(dtype=np.uint8),
        }
    )
    table["n_pixels"] = n_pixels[table["field"].to_numpy()]
    table["n_labelled"] = n_labelled[table["field"].to_numpy()]
    on_grid = table["n_pixels"] > 0
    report = RasterReport(
        n_fields=int(on_grid.sum()),
        n_fields_outside=int((~on_grid).sum()),
        n_fields_unlabelled=int((on_grid & (table["n_labelled"] == 0)).sum()),
        n_overlap_pixels=int(overlap.sum()),
        n_boundary_pixels=n_boundary,
        n_labelled_pixels=int(labelled.sum()),
    )
    if report.n_fields == 0:
        raise LabelError(
            f"none of the {len(table)} label polygons covers a pixel centre of the cube grid",
            hint="use polygons of the cube's area (or all_touched for polygons smaller than a "
            "pixel)",
        )
    return label, field, table[on_grid].reset_index(drop=True), report
