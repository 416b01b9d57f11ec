"""The published maps, read from the products' STAC catalogs (``products/<region>/``).

A map is served only from what its catalog names: the files of a request are looked up in
this listing by region and product name, never built from the request's text, so no path
from a request reaches the file system.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from cropflow.errors import ConfigError, DataError

#: A region (product folder) name: the region file's rule.
REGION_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$")
#: Product layers that are rendered as tiles, by the STAC item suffix that holds them.
LAYERS = {
    "class_map": "class-map",
    "confidence": "confidence",
    "probability": "probability",
    "truecolor": "truecolor",
}
#: Layers served as map tiles.
TILE_LAYERS = ("class_map", "confidence", "truecolor")


class MapClass(BaseModel):
    """One class of a map: its pixel value, name and colour (``#rrggbb``)."""

    value: int
    name: str
    color: str


class PublishedMap(BaseModel):
    """One region's published map products."""

    region: str
    title: str
    bbox: list[float] = Field(description="West, south, east, north (WGS84 degrees).")
    start: str | None = None
    end: str | None = None
    model: dict[str, Any] = Field(default_factory=dict, description="The model that made it.")
    prediction: str | None = None
    classes: list[MapClass]
    layers: list[str] = Field(description="Tiled layers: class_map, confidence, ...")
    tables: list[str] = Field(description="Tables: class_area, class_area_estimate ...")
    folder: Path = Field(exclude=True)
    files: dict[str, Path] = Field(default_factory=dict, exclude=True)

    def file(self, name: str) -> Path:
        """The product file ``name`` (a key of ``files``); DataError when it has none."""
        path = self.files.get(name)
        if path is None:
            raise DataError(
                f"map {self.region!r} has no product {name!r}",
                hint=f"use one of: {', '.join(sorted(self.files))}",
            )
        return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable STAC file {path}: {exc}", hint="re-run the remap") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a STAC object", hint="re-run the remap")
    return data


def _asset_file(item_path: Path, asset: dict[str, Any], folder: Path) -> Path | None:
    """The local file an asset names, only when it lies inside the product folder."""
    href = str(asset.get("href", ""))
    if "://" in href:
        return None
    path = (item_path.parent / href).resolve()
    return path if path.is_relative_to(folder) and path.is_file() else None


def read_map(folder: Path) -> PublishedMap:
    """The published map of one product folder (its ``catalog.json`` and items)."""
    folder = folder.resolve()
    catalog = _read_json(folder / "catalog.json")
    region = folder.name
    items: dict[str, tuple[Path, dict[str, Any]]] = {}
    for link in catalog.get("links", []):
        if link.get("rel") != "item":
            continue
        path = (folder / str(link.get("href", ""))).resolve()
        if not path.is_relative_to(folder):
            continue
        item = _read_json(path)
        items[str(item.get("id", ""))] = (path, item)
    class_item = items.get(f"{region}-class-map")
    if class_item is None:
        raise DataError(f"{folder} has no class map item", hint="re-run the remap")
    props = class_item[1].get("properties", {})
    data = class_item[1].get("assets", {}).get("data", {})
    classes = [
        MapClass(value=int(c["value"]), name=str(c["name"]), color=f"#{c['color_hint']}".lower())
        for c in data.get("classification:classes", [])
        if not c.get("nodata") and "color_hint" in c
    ]
    files: dict[str, Path] = {}
    layers: list[str] = []
    for layer, suffix in LAYERS.items():
        entry = items.get(f"{region}-{suffix}")
        found = entry and _asset_file(entry[0], entry[1].get("assets", {}).get("data", {}), folder)
        if found:
            files[layer] = found
            if layer in TILE_LAYERS:
                layers.append(layer)
    tables: list[str] = []
    for name in ("class_area", "class_area_estimate"):
        path = folder / f"{name}.csv"
        if path.is_file():
            files[name] = path
            tables.append(name)
    for name, file in (("quicklook", "quicklook.png"), ("fields", "fields.parquet")):
        if (folder / file).is_file():
            files[name] = folder / file
    return PublishedMap(
        region=region,
        title=str(catalog.get("title", region)),
        bbox=[float(v) for v in class_item[1].get("bbox", [])],
        start=props.get("start_datetime"),
        end=props.get("end_datetime"),
        model=dict(props.get("cropflow:model", {})),
        prediction=props.get("cropflow:prediction"),
        classes=classes,
        layers=layers,
        tables=tables,
        folder=folder,
        files=files,
    )


#: Maps already read, by folder, with the (inode, mtime) of the catalog they were read from:
#: products are published by renaming a whole folder, so a new publication is a new catalog.
_READ: dict[Path, tuple[tuple[int, int], PublishedMap]] = {}


def cached_map(folder: Path) -> PublishedMap:
    """:func:`read_map`, reused while the folder's catalog.json is the same file."""
    st = (folder / "catalog.json").stat()
    stamp = (st.st_ino, st.st_mtime_ns)
    hit = _READ.get(folder)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    found = read_map(folder)
    _READ[folder] = (stamp, found)
    return found


def list_maps(products_dir: Path) -> dict[str, PublishedMap]:
    """Every published map under ``products_dir`` by region; unreadable folders are skipped."""
    maps: dict[str, PublishedMap] = {}
    if not products_dir.is_dir():
        return maps
    for folder in sorted(products_dir.iterdir()):
        if not REGION_NAME.match(folder.name) or not (folder / "catalog.json").is_file():
            continue
        try:
            maps[folder.name] = cached_map(folder)
        except (DataError, OSError):
            continue
    return maps


def find_map(products_dir: Path, region: str) -> PublishedMap:
    """The published map of ``region``; ConfigError (unknown) naming the ones there are."""
    if not REGION_NAME.match(region):
        raise ConfigError(f"{region!r} is not a region name", hint="use a name listed by GET /maps")
    folder = products_dir / region
    try:
        return cached_map(folder)
    except (DataError, OSError):
        maps = list_maps(products_dir)
        raise ConfigError(
            f"no published map for region {region!r}",
            hint=f"published: {', '.join(sorted(maps)) or 'none (run a remap first)'}",
        ) from None


def read_table(path: Path) -> list[dict[str, str]]:
    """Rows of a product CSV table."""
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
