"""Point labels: duplicates removed, labellers' votes combined, points turned into pixels.

The vote follows nasaharvest/crop-mask: several labellers of one location are averaged; for a
0/1 crop label that average is the crop probability, and a tie (0.5) is dropped. With more than
two classes the same rule is a majority vote whose ties are dropped. ``agreement`` is the share
of votes of the winning class.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
from odc.geo.geobox import GeoBox
from pydantic import BaseModel, Field
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cropflow.classes import IGNORE_INDEX
from cropflow.errors import LabelError
from cropflow.labels.grid import pixel_index

LABELLER_NAMES = ("labeller", "labeler", "labeller_id", "labeler_id", "annotator", "email", "user")


class PointReport(BaseModel):
    """What happened to point labels on their way to pixels."""

    n_rows: int = Field(description="Point rows read (after class mapping).")
    n_duplicates: int = Field(0, description="Exact duplicate rows removed.")
    n_locations: int = Field(0, description="Distinct labelled locations.")
    n_ties_dropped: int = Field(0, description="Locations whose labellers tied (dropped).")
    n_outside: int = Field(0, description="Locations outside the cube grid (dropped).")
    n_conflict_pixels: int = Field(
        0, description="Pixels claimed by points of different classes (left unlabelled)."
    )
    n_labelled_pixels: int = Field(0, description="Labelled pixels written.")


def find_labeller_column(columns: list[str]) -> str | None:
    """A column naming the labeller, by common names (case-insensitive)."""
    lower = {c.lower(): c for c in columns}
    return next((lower[n] for n in LABELLER_NAMES if n in lower), None)


def aggregate_points(
    points: gpd.GeoDataFrame,
    *,
    labeller_column: str | None = None,
    decimals: int = 7,
    id_column: str | None = None,
) -> tuple[gpd.GeoDataFrame, PointReport]:
    """One row per location: the voted ``class_id``/``class_name``, ``n_votes``, ``agreement``.

    ``points`` carries mapped classes (``class_id``, ``class_name``). Rows equal in location
    (rounded to ``decimals`` in the file's CRS), labeller and class are duplicates. Without a
    labeller column every remaining row is one vote.
    """
    report = PointReport(n_rows=len(points))
    if len(points) == 0:
        return points.iloc[:0], report
    xs = np.round(points.geometry.x.to_numpy(), decimals)
    ys = np.round(points.geometry.y.to_numpy(), decimals)
    frame = pd.DataFrame(
        {
            "_x": xs,
            "_y": ys,
            "_who": points[labeller_column].astype(str).to_numpy()
            if labeller_column
            else np.arange(len(points)).astype(str),
            "class_id": points["class_id"].to_numpy(),
            "class_name": points["class_name"].to_numpy(),
            "_src": points[id_column].astype(str).to_numpy() if id_column else "",
        }
    )
    if labeller_column:
        deduped = frame.drop_duplicates(subset=["_x", "_y", "_who", "class_id"])
    else:
        deduped = frame.drop_duplicates(subset=["_x", "_y", "class_id", "_src"])
    report.n_duplicates = len(frame) - len(deduped)

    votes = (
        deduped.groupby(["_x", "_y", "class_id"], sort=True).size().rename("votes").reset_index()
    )
    totals = votes.groupby(["_x", "_y"])["votes"].transform("sum")
    top = votes.groupby(["_x", "_y"])["votes"].transform("max")
    n_top = (
        votes.assign(is_top=votes["votes"] == top).groupby(["_x", "_y"])["is_top"].transform("sum")
    )
    report.n_locations = int(votes.groupby(["_x", "_y"]).ngroups)
    winners = votes[(votes["votes"] == top) & (n_top == 1)].copy()
    winners["n_votes"] = totals[winners.index].to_numpy()
    winners["agreement"] = winners["votes"] / winners["n_votes"]
    report.n_ties_dropped = report.n_locations - len(winners)
    names = dict(zip(frame["class_id"], frame["class_name"], strict=False))
    src = deduped.groupby(["_x", "_y"])["_src"].first()
    keys = list(zip(winners["_x"], winners["_y"], strict=True))
    out = gpd.GeoDataFrame(
        {
            "class_id": winners["class_id"].to_numpy(dtype=np.uint8),
            "class_name": [names[c] for c in winners["class_id"]],
            "n_votes": winners["n_votes"].to_numpy(dtype=np.int64),
            "agreement": winners["agreement"].to_numpy(dtype=float),
            "source_id": [src[k] if id_column else f"{k[0]},{k[1]}" for k in keys],
        },
        geometry=gpd.points_from_xy(winners["_x"], winners["_y"]),
        crs=points.crs,
    )
    return out, report


def points_to_rasters(
    points: gpd.GeoDataFrame,
    gbox: GeoBox,
    *,
    window: int = 1,
    report: PointReport | None = None,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, PointReport]:
    """Label and field rasters from voted points in the cube CRS.

    Each point labels the pixel it falls in, or the ``window`` x ``window`` pixels around it
    (odd sizes). Points whose windows share pixels form one "field" (one split unit). Pixels
    claimed by points of different classes stay unlabelled. Returns ``(label, field, fields,
    report)``: ``label`` uint8 with IGNORE_INDEX where unlabelled, ``field`` int32 (0 = none)
    and the table of fields (``field``, ``source_id``, ``class_id``, ``n_pixels``).
    """
    if window < 1 or window % 2 == 0:
        raise LabelError(
            f"point window must be an odd number of pixels, got {window}", hint="use 1, 3, 5 ..."
        )
    report = report.model_copy() if report else PointReport(n_rows=len(points))
    ny, nx = gbox.shape
    rows, cols = pixel_index(gbox, points.geometry.x.to_numpy(), points.geometry.y.to_numpy())
    inside = rows >= 0
    report.n_outside = int((~inside).sum())
    if not inside.any():
        raise LabelError(
            f"none of the {len(points)} labelled points falls inside the cube grid",
            hint="use points of the cube's area, or build the cube over the points",
        )
    pts = points.loc[inside].reset_index(drop=True)
    rows, cols = rows[inside], cols[inside]
    half = window // 2
    dr, dc = np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1), indexing="ij")
    pr = (rows[:, None] + dr.ravel()[None, :]).ravel()
    pc = (cols[:, None] + dc.ravel()[None, :]).ravel()
    owner = np.repeat(np.arange(len(pts)), dr.size)
    ok = (pr >= 0) & (pr < ny) & (pc >= 0) & (pc < nx)
    pr, pc, owner = pr[ok], pc[ok], owner[ok]
    flat = pr * nx + pc

    # points that share a pixel are one unit: connected components over (point, pixel) pairs
    uniq, pix = np.unique(flat, return_inverse=True)
    n_pts = len(pts)
    graph = coo_matrix((np.ones(len(owner)), (owner, n_pts + pix)), shape=(n_pts + len(uniq),) * 2)
    _, comp = connected_components(graph, directed=False)
    point_comp = comp[:n_pts]
    _, unit = np.unique(point_comp, return_inverse=True)
    field_of_point = (unit + 1).astype(np.int32)

    classes = pts["class_id"].to_numpy(dtype=np.int64)
    cls_min = np.full(len(uniq), 10_000, dtype=np.int64)
    cls_max = np.full(len(uniq), -1, dtype=np.int64)
    np.minimum.at(cls_min, pix, classes[owner])
    np.maximum.at(cls_max, pix, classes[owner])
    agree = cls_min == cls_max
    report.n_conflict_pixels = int((~agree).sum())

    label = np.full((ny, nx), IGNORE_INDEX, dtype=np.uint8)
    field = np.zeros((ny, nx), dtype=np.int32)
    any_owner = np.zeros(len(uniq), dtype=np.int64)
    any_owner[pix] = owner  # all owners of a pixel are in one component
    good = uniq[agree]
    label.flat[good] = cls_min[agree].astype(np.uint8)
    field.flat[uniq] = field_of_point[any_owner]
    field.flat[uniq[~agree]] = 0
    report.n_labelled_pixels = int(agree.sum())

    counts = np.bincount(field.ravel(), minlength=int(field_of_point.max()) + 1)
    table = (
        pd.DataFrame(
            {
                "field": field_of_point,
                "source_id": pts["source_id"].astype(str).to_numpy()
                if "source_id" in pts
                else np.arange(n_pts).astype(str),
                "class_id": classes.astype(np.uint8),
            }
        )
        .groupby("field", as_index=False)
        .agg(
            source_id=("source_id", lambda s: ";".join(s)),
            class_id=("class_id", lambda s: int(s.iloc[0]) if s.nunique() == 1 else IGNORE_INDEX),
        )
    )
    table["n_pixels"] = counts[table["field"].to_numpy()]
    table = table[table["n_pixels"] > 0].reset_index(drop=True)
    return label, field, table, report
