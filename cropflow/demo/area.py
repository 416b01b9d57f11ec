"""Generating a demo region on disk, and reading its manifest back.

Layout of a region (others code against it)::

    <out>/region.json          the manifest (:class:`DemoManifest`)
    <out>/cogs/<item_id>/<band>.tif
    <out>/stac/collection.json
    <out>/stac/items.json      a FeatureCollection of all items
    <out>/labels/parcels.gpkg  <out>/labels/points.csv  <out>/labels/mapping.yaml
    <out>/truth/classes.tif    <out>/truth/field_id.tif

A region is generated into ``<out>.tmp-<pid>`` and renamed into place, so a killed generation
never leaves a region that looks complete; ``region.json`` is written last.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import rasterio
from pydantic import BaseModel, Field, ValidationError
from rasterio.crs import CRS

from cropflow.bands import S2_SPECTRAL, S2_TEN_BANDS, SCL
from cropflow.classes import ClassMap
from cropflow.demo.cog import write_cog
from cropflow.demo.config import GENERATOR_VERSION, DemoConfig
from cropflow.demo.grid import RES_10, RES_20, TileGeometry
from cropflow.demo.labels import (
    label_points,
    mapping_yaml,
    parcels_frame,
    write_parcels,
    write_points,
)
from cropflow.demo.legend import CLASSES, UNLISTED, demo_class_map
from cropflow.demo.noise import stream
from cropflow.demo.sensors import (
    DEM_COLLECTION,
    S1_COLLECTION,
    collection_of,
    write_dem,
    write_radar,
)
from cropflow.demo.sky import Acquisition
from cropflow.demo.stac import (
    BASELINE,
    REPROCESSED_BASELINE,
    collection,
    item_id,
    s2_item,
    scl_statistics,
)
from cropflow.demo.world import DemoWorld, native_resolution
from cropflow.errors import ConfigError, DataError
from cropflow.processes import pid_alive

MANIFEST = "region.json"


class RegionFiles(BaseModel):
    """Paths of a region's files, relative to its folder."""

    collection: str = "stac/collection.json"
    items: str = "stac/items.json"
    parcels: str = "labels/parcels.gpkg"
    points: str = "labels/points.csv"
    mapping: str = "labels/mapping.yaml"
    truth_classes: str = "truth/classes.tif"
    truth_field_id: str = "truth/field_id.tif"
    cogs: str = "cogs"


FileKey = Literal[
    "collection", "items", "parcels", "points", "mapping", "truth_classes", "truth_field_id", "cogs"
]


class GridInfo(BaseModel):
    """The 10 m world grid (every tile is a window of it)."""

    crs: str
    transform: list[float] = Field(description="Affine a, b, c, d, e, f.")
    shape: tuple[int, int] = Field(description="(rows, cols) at 10 m.")
    resolution: float = RES_10


class TileInfo(BaseModel):
    """One tile: an MGRS tile window."""

    id: str = Field(description="MGRS tile, e.g. 33UUT.")
    crs: str
    bounds: tuple[float, float, float, float]
    shape_10m: tuple[int, int]
    shape_20m: tuple[int, int]
    transform_10m: list[float]
    transform_20m: list[float]
    window: tuple[int, int, int, int] = Field(
        description="(row_off, col_off, rows, cols) of the tile in the world grid at 10 m."
    )


class ItemInfo(BaseModel):
    """One STAC item of the region."""

    id: str
    tile: str
    datetime: datetime
    platform: str
    processing_baseline: str
    cloud_cover: float
    sky: Literal["clear", "partial", "overcast"]
    reprocessed_from: str | None = Field(
        None, description="For a reprocessed duplicate: the id of the item it replaces."
    )


class ClassInfo(BaseModel):
    """One class of the legend."""

    name: str
    id: int
    color: str
    kind: Literal["crop", "non-crop"]
    codes: list[int]


class DemoManifest(BaseModel):
    """What a generated region holds; written as ``region.json``."""

    generator: str = "cropflow.demo"
    generator_version: str = GENERATOR_VERSION
    config: DemoConfig
    config_hash: str
    grid: GridInfo
    tiles: list[TileInfo]
    dates: list[date]
    items: list[ItemInfo]
    classes: list[ClassInfo]
    unlisted_codes: list[int] = Field(description="Raw codes in the parcels, not in mapping.yaml.")
    bbox_wgs84: tuple[float, float, float, float]
    files: RegionFiles = RegionFiles()
    root: Path | None = Field(None, exclude=True, description="Folder it was read from.")

    def path(self, name: FileKey) -> Path:
        """Absolute path of one of the :class:`RegionFiles` (e.g. ``"items"``)."""
        if self.root is None:
            raise DataError("this manifest was not read from a folder", hint="use load_demo")
        result: Path = self.root / getattr(self.files, name)
        return result

    def class_map(self) -> ClassMap:
        """The legend as a :class:`~cropflow.classes.ClassMap`."""
        return demo_class_map()


def load_demo(out_dir: Path) -> DemoManifest:
    """Read a generated region's manifest; :class:`DataError` if there is none."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"no demo region at {out_dir} ({MANIFEST} missing)",
            hint="generate it first: cropflow.demo.generate_demo(out_dir, DemoConfig())",
        )
    try:
        manifest = DemoManifest.model_validate_json(path.read_text())
    except (ValidationError, ValueError) as exc:
        raise DataError(
            f"unreadable demo manifest {path}: {exc}",
            hint="delete the folder and generate the region again",
        ) from exc
    manifest.root = Path(out_dir).absolute()
    return manifest


def generate_demo(out_dir: Path, config: DemoConfig | None = None) -> DemoManifest:
    """Generate the demo region of ``config`` (default: ``DemoConfig()``) into ``out_dir``.

    A no-op when ``out_dir`` already holds the region of the same config hash; a region of
    another config is replaced. A non-empty folder that is not a region is refused.
    """
    config = config if config is not None else DemoConfig()
    out_dir = Path(out_dir).absolute()
    existing = _existing(out_dir)
    if existing is not None and existing.config_hash == config.config_hash():
        return existing
    if existing is None and out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(
            f"{out_dir} is not empty and holds no demo region",
            hint="choose an empty or new folder for the demo region",
        )
    _remove_stale_tmp(out_dir)
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with rasterio.Env():
            manifest = _write_region(tmp, out_dir, config)
        _move_into_place(tmp, out_dir, config)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest.root = out_dir
    return manifest


def _existing(out_dir: Path) -> DemoManifest | None:
    if not (out_dir / MANIFEST).is_file():
        return None
    try:
        return load_demo(out_dir)
    except DataError:
        return None


def _remove_stale_tmp(out_dir: Path) -> None:
    """Remove ``<out>.tmp-<pid>`` / ``<out>.old-<pid>`` folders of killed generations."""
    for kind in ("tmp", "old"):
        for tmp in out_dir.parent.glob(f"{out_dir.name}.{kind}-*"):
            pid = tmp.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, out_dir: Path, config: DemoConfig) -> None:
    current = _existing(out_dir)
    if current is not None and current.config_hash == config.config_hash():
        return  # a concurrent generation of the same region finished first
    old = out_dir.with_name(f"{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except OSError:
        # another process put a region there meanwhile: keep it if it is the same one
        other = _existing(out_dir)
        if other is None or other.config_hash != config.config_hash():
            raise
    shutil.rmtree(old, ignore_errors=True)


def _tile_info(tile: TileGeometry, crs: str) -> TileInfo:
    w = tile.window
    return TileInfo(
        id=tile.mgrs,
        crs=crs,
        bounds=tile.bounds,
        shape_10m=tile.shape(RES_10),
        shape_20m=tile.shape(RES_20),
        transform_10m=list(tile.transform(RES_10)[:6]),
        transform_20m=list(tile.transform(RES_20)[:6]),
        window=(w.row_off, w.col_off, w.height, w.width),
    )


def _reprocessed(
    config: DemoConfig, acquisitions: list[Acquisition], n_tiles: int
) -> dict[tuple[int, int], int]:
    """(date index, tile index) -> rank of the acquisitions published a second time."""
    rng = stream(config.seed, "reprocessed")
    n = min(config.n_reprocessed, len(acquisitions))
    picks = sorted(int(i) for i in rng.choice(len(acquisitions), n, replace=False))
    return {(i, k % n_tiles): k for k, i in enumerate(picks)}


def _write_region(root: Path, final_root: Path, config: DemoConfig) -> DemoManifest:
    """Write every file of the region under ``root``; hrefs point into ``final_root``."""
    files = RegionFiles()
    world = DemoWorld(config)
    crs, epsg = world.grid.crs, world.grid.epsg
    crs_obj = CRS.from_epsg(epsg)  # parsed once, not per file
    reprocessed = _reprocessed(config, world.acquisitions, len(world.tiles))
    features: list[dict[str, Any]] = []
    items: list[ItemInfo] = []
    for d_index, acq in enumerate(world.acquisitions):
        obs = world.observe(acq.date)
        sun = (obs.sky.sun_azimuth, obs.sky.sun_elevation)
        for t_index, tile in enumerate(world.tiles):
            iid = item_id(acq, tile, 0)
            folder = root / files.cogs / iid
            for band in S2_TEN_BANDS:
                factor = native_resolution(band) // 10
                res = float(S2_SPECTRAL[band][0])
                write_cog(
                    folder / f"{band}.tif",
                    obs.dn[band][tile.window.slices(factor)],
                    tile.transform(res),
                    crs_obj,
                )
            scl = obs.scl[tile.window.slices(2)]
            write_cog(folder / f"{SCL}.tif", scl, tile.transform(RES_20), crs_obj, categorical=True)
            stats = scl_statistics(scl)
            published = acq.datetime + timedelta(hours=3, minutes=9, seconds=13)
            versions: list[tuple[int, str, datetime, str | None]] = [(0, BASELINE, published, None)]
            if (d_index, t_index) in reprocessed:
                later = published + timedelta(days=40 + 7 * reprocessed[(d_index, t_index)])
                versions.append((1, REPROCESSED_BASELINE, later, iid))
            for sequence, baseline, when, source in versions:
                vid = item_id(acq, tile, sequence)
                if source is not None:  # the same data, published again under a new id
                    shutil.copytree(folder, root / files.cogs / vid)
                hrefs = {
                    key: (final_root / files.cogs / vid / f"{key}.tif").as_uri()
                    for key in (*S2_TEN_BANDS, SCL)
                }
                features.append(
                    s2_item(
                        acq=acq,
                        tile=tile,
                        epsg=epsg,
                        sequence=sequence,
                        baseline=baseline,
                        published=when,
                        sun=sun,
                        scl_stats=stats,
                        hrefs=hrefs,
                        collection_id=config.collection_id,
                    )
                )
                items.append(
                    ItemInfo(
                        id=vid,
                        tile=tile.mgrs,
                        datetime=acq.datetime,
                        platform=acq.platform,
                        processing_baseline=baseline,
                        cloud_cover=stats["eo:cloud_cover"],
                        sky=acq.regime,
                        reprocessed_from=source,
                    )
                )

    # STAC
    lons = [f["bbox"][0] for f in features] + [f["bbox"][2] for f in features]
    lats = [f["bbox"][1] for f in features] + [f["bbox"][3] for f in features]
    bbox = [min(lons), min(lats), max(lons), max(lats)]
    stac_dir = root / "stac"
    stac_dir.mkdir()
    coll = collection(
        config.collection_id, bbox, world.acquisitions[0].datetime, world.acquisitions[-1].datetime
    )
    _write_json(root / files.collection, coll)
    _write_json(root / files.items, {"type": "FeatureCollection", "features": features})

    if config.radar:
        s1 = write_radar(root, final_root, world)
        s1_collection = collection_of(
            S1_COLLECTION,
            s1,
            "Sentinel-1 RTC (cropflow demo region, synthetic)",
            "Synthetic gamma0 (linear power) VV/VH over the demo region, both orbit directions "
            "every 6 days. Shaped like Planetary Computer sentinel-1-rtc.",
        )
        _write_json(stac_dir / f"collection-{S1_COLLECTION}.json", s1_collection)
        _write_json(
            stac_dir / f"items-{S1_COLLECTION}.json", {"type": "FeatureCollection", "features": s1}
        )
    if config.terrain:
        dem = [write_dem(root, final_root, world)]
        dem_collection = collection_of(
            DEM_COLLECTION,
            dem,
            "Copernicus DEM GLO-30 (cropflow demo region, synthetic)",
            "Synthetic elevation of the demo region. Shaped like Planetary Computer "
            "cop-dem-glo-30.",
        )
        _write_json(stac_dir / f"collection-{DEM_COLLECTION}.json", dem_collection)
        _write_json(
            stac_dir / f"items-{DEM_COLLECTION}.json",
            {"type": "FeatureCollection", "features": dem},
        )

    # labels
    (root / "labels").mkdir()
    write_parcels(root / files.parcels, parcels_frame(world.landscape.parcels, crs))
    write_points(root / files.points, label_points(config, world.landscape, world.grid))
    (root / files.mapping).write_text(mapping_yaml(), encoding="utf-8")

    # truth
    colormap = {0: (0, 0, 0, 0)}
    for cls in CLASSES:
        rgb = tuple(int(cls.color[i : i + 2], 16) for i in (1, 3, 5))
        colormap[cls.id] = (rgb[0], rgb[1], rgb[2], 255)
    write_cog(
        root / files.truth_classes,
        world.classes(),
        world.grid.transform,
        crs,
        categorical=True,
        colormap=colormap,
        description="class id",
    )
    write_cog(
        root / files.truth_field_id,
        world.field_ids(),
        world.grid.transform,
        crs,
        categorical=True,
        description="field id",
    )

    manifest = DemoManifest(
        config=config,
        config_hash=config.config_hash(),
        grid=GridInfo(crs=crs, transform=list(world.grid.transform[:6]), shape=world.grid.shape),
        tiles=[_tile_info(t, crs) for t in world.tiles],
        dates=world.dates,
        items=items,
        classes=[
            ClassInfo(
                name=c.name, id=c.id, color=c.color, kind=c.kind, codes=[rc.code for rc in c.codes]
            )
            for c in CLASSES
        ],
        unlisted_codes=[u.code for u in UNLISTED],
        bbox_wgs84=(bbox[0], bbox[1], bbox[2], bbox[3]),
        files=files,
    )
    (root / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return manifest


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
