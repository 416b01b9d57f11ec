"""Any local STAC item collection, read into what a local STAC API serves.

:func:`read_stac_source` reads one local source, given as a path or a ``file://`` URI:

* a static catalog: ``catalog.json`` / ``collection.json`` whose ``child`` and ``item`` links
  are followed recursively, each relative to the file that holds the link;
* an ItemCollection / GeoJSON FeatureCollection file;
* newline-delimited items (``.ndjson``, ``.jsonl``, ``.geojsonl``; blank lines allowed);
* a plain JSON list of items (as Planetary Computer answers), or a single item file;
* a folder: its ``catalog.json``, else its ``collection.json`` (with the ``items.json`` beside
  it, the demo region's layout), else its ``items.json``; plus each ``collection-<x>.json``
  with its ``items-<x>.json`` (the demo's Sentinel-1 and DEM collections).

Every asset href and link comes back absolute: relative hrefs are resolved against the file
they were read from and written as ``file://`` URIs (a bare path would be resolved against the
API's URL by clients). Links that describe where an object sat in the source (``self``,
``root``, ``parent``, ``collection``, ``child``, ``item``) are dropped: the API writes its own.
Items of a collection the source does not describe get a synthesised Collection whose extent
covers them. :func:`write_server_files` writes the collections and items as ``rustac serve``
reads them.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from cropflow.errors import ConfigError, DataError

NDJSON_SUFFIXES = frozenset({".ndjson", ".jsonl", ".geojsonl"})
"""File suffixes read as one item per line."""

STRUCTURAL_RELS = frozenset({"self", "root", "parent", "collection", "child", "item", "items"})
"""Link relations that say where an object sat in its source; the API writes its own."""

_SOURCE_FORMS = (
    "a catalog.json/collection.json, an ItemCollection (FeatureCollection), an .ndjson file, "
    "a JSON list of items or one item"
)
_FOLLOWED = ("child", "item")
_MAX_NAMED = 5
_FRACTION = re.compile(r"(\.\d{6})\d+")


@dataclass
class LocalCatalog:
    """Collections and items read from one local source, every href absolute.

    Every item has a ``collection`` field naming one of ``collections``; ``synthesised``
    lists the ids of the collections made up for items whose collection the source lacks.
    """

    source: Path
    collections: list[dict[str, Any]]
    items: list[dict[str, Any]]
    synthesised: list[str] = field(default_factory=list)

    @property
    def collection_ids(self) -> list[str]:
        """The collection ids, in the order they were found (synthesised ones last)."""
        return [str(c["id"]) for c in self.collections]


@dataclass
class _Found:
    """One item and where it was read (``file`` and, for ndjson, ``line``)."""

    item: dict[str, Any]
    file: Path
    line: int | None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else str(self.file)


def source_path(source: Path | str) -> Path:
    """The local path of ``source`` (a path or a ``file://`` URI); ConfigError for other URLs."""
    text = str(source)
    scheme = urlsplit(text).scheme
    if scheme == "file":
        return Path(url2pathname(urlsplit(text).path))
    if len(scheme) > 1:
        raise ConfigError(
            f"STAC source {text!r} is not a local file",
            hint="give a local path or a file:// URI; search a remote API with its URL instead",
        )
    return Path(text).expanduser()


def _is_url(href: str) -> bool:
    """Whether ``href`` has a URL scheme (one letter is a Windows drive, not a scheme)."""
    return len(urlsplit(href).scheme) > 1


def absolute_href(href: str, base_file: Path) -> str:
    """``href`` made absolute: URLs as they are, paths resolved against ``base_file``'s folder
    and written as ``file://`` URIs."""
    if _is_url(href):
        return href
    return (base_file.parent / href).resolve().as_uri()


def _link_target(href: str, holder: Path) -> Path | None:
    """The local file a link points to (relative to ``holder``); None for a remote URL."""
    if urlsplit(href).scheme == "file":
        return Path(url2pathname(urlsplit(href).path)).resolve()
    if _is_url(href):
        return None
    return (holder.parent / href).resolve()


def _load_json(path: Path, linked_from: Path | None = None) -> Any:
    """The JSON in ``path``; DataError naming it (and the file linking to it) otherwise."""
    if not path.is_file():
        if linked_from is not None:
            raise DataError(
                f"STAC link in {str(linked_from)!r} points to {str(path)!r}, which does not exist",
                hint=f"fix the link's href (relative hrefs resolve against {linked_from.parent})",
            )
        raise DataError(
            f"STAC source {str(path)!r} does not exist",
            hint=f"give an existing file or folder: {_SOURCE_FORMS}",
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        hint = "fix the file; one item per line needs the suffix .ndjson, .jsonl or .geojsonl"
        raise DataError(f"STAC file {str(path)!r} is not JSON ({exc})", hint=hint) from None


def _kind(obj: Any) -> str:
    """``Feature``, ``FeatureCollection``, ``Catalog``, ``Collection``, ``list`` or ``other``."""
    if isinstance(obj, list):
        return "list"
    if isinstance(obj, dict):
        kind = obj.get("type")
        if kind in ("Feature", "FeatureCollection", "Catalog", "Collection"):
            return str(kind)
    return "other"


def _not_stac(path: Path, what: str, line: int | None = None) -> DataError:
    where = f"{path}:{line}" if line is not None else str(path)
    return DataError(
        f"{where!r} holds {what}, not a STAC object",
        hint=f"give {_SOURCE_FORMS}",
    )


def _describe(obj: Any) -> str:
    """A few words on what a JSON value is, for error messages."""
    if isinstance(obj, dict):
        kind = obj.get("type")
        return f"a JSON object of type {kind!r}" if kind else "a JSON object with no 'type'"
    return f"a JSON {type(obj).__name__}"


def _absolute_links(obj: dict[str, Any], file: Path, what: str) -> None:
    """Drop structural links; make the other links' hrefs absolute."""
    links = obj.get("links", [])
    if not isinstance(links, list):
        raise DataError(f"{what} in {str(file)!r} has 'links' that is not a list", hint="fix it")
    kept = []
    for link in links:
        if not isinstance(link, dict) or not isinstance(link.get("href"), str):
            raise DataError(
                f"{what} in {str(file)!r} has a link without an href: {link!r}",
                hint="give every link an 'href' and a 'rel', or remove it",
            )
        if link.get("rel") in STRUCTURAL_RELS:
            continue
        kept.append({**link, "href": absolute_href(link["href"], file)})
    obj["links"] = kept


def _absolute_assets(obj: dict[str, Any], file: Path, what: str) -> None:
    """Make every asset href absolute (``file://`` for local files)."""
    assets = obj.get("assets", {})
    if not isinstance(assets, dict):
        raise DataError(f"{what} in {str(file)!r} has 'assets' that is not an object", hint="fix")
    for key, asset in assets.items():
        if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
            raise DataError(
                f"asset {key!r} of {what} in {str(file)!r} has no href",
                hint="give every asset an 'href' (a URL or a path relative to the file)",
            )
        asset["href"] = absolute_href(asset["href"], file)


def parse_datetime(value: Any) -> datetime:
    """An RFC 3339 string as an aware datetime (UTC when it names no offset); ValueError else."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", value.strip()))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def item_interval(item: dict[str, Any]) -> tuple[datetime, datetime]:
    """(start, end) of an item: its ``start_/end_datetime``, else ``datetime`` twice."""
    props = item["properties"]
    start = props.get("start_datetime") or props.get("datetime")
    end = props.get("end_datetime") or props.get("datetime")
    if start is None or end is None:
        raise ValueError("it has neither a datetime nor start_datetime and end_datetime")
    return parse_datetime(start), parse_datetime(end)


def _coordinates(geometry: Any) -> Iterator[tuple[float, float]]:
    """Every (x, y) of a GeoJSON geometry."""
    if not isinstance(geometry, dict):
        return
    if geometry.get("type") == "GeometryCollection":
        for part in geometry.get("geometries", []):
            yield from _coordinates(part)
        return
    stack: list[Any] = [geometry.get("coordinates")]
    while stack:
        value = stack.pop()
        if isinstance(value, list) and value and isinstance(value[0], int | float):
            yield float(value[0]), float(value[1])
        elif isinstance(value, list):
            stack.extend(value)


def item_bbox(item: dict[str, Any]) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) of an item: its ``bbox``, else its geometry's; None if none."""
    bbox = item.get("bbox")
    if isinstance(bbox, list) and len(bbox) in (4, 6):
        half = len(bbox) // 2
        return float(bbox[0]), float(bbox[1]), float(bbox[half]), float(bbox[half + 1])
    points = list(_coordinates(item.get("geometry")))
    if not points:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def synthesise_collection(collection_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A minimal valid STAC Collection whose extent covers ``items``."""
    boxes = [b for b in (item_bbox(i) for i in items) if b is not None]
    bbox = [-180.0, -90.0, 180.0, 90.0]
    if boxes:
        bbox = [min(b[0] for b in boxes), min(b[1] for b in boxes)]
        bbox += [max(b[2] for b in boxes), max(b[3] for b in boxes)]
    intervals = [item_interval(i) for i in items]
    start = min(i[0] for i in intervals)
    end = max(i[1] for i in intervals)
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": collection_id,
        "description": f"Collection synthesised by cropflow for {len(items)} items",
        "license": "other",
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {"interval": [[_rfc3339(start), _rfc3339(end)]]},
        },
        "links": [],
    }


class _Reader:
    """Reads files into collections and items; follows static-catalog links once each."""

    def __init__(self, default_collection: str) -> None:
        self.default_collection = default_collection
        self.collections: dict[str, tuple[dict[str, Any], Path]] = {}
        self.found: list[_Found] = []
        self.visited: set[Path] = set()

    def read_source(self, path: Path) -> None:
        """Read a file or folder given by the user."""
        if path.is_dir():
            self._read_folder(path)
        else:
            self.read_file(path.resolve(), parent_collection=None)

    def _read_folder(self, folder: Path) -> None:
        catalog, collection, items = (
            folder / "catalog.json",
            folder / "collection.json",
            folder / "items.json",
        )
        if catalog.is_file():
            self.read_file(catalog.resolve(), parent_collection=None)
            return
        if not (collection.is_file() or items.is_file()):
            raise DataError(
                f"STAC folder {str(folder)!r} holds no catalog.json, collection.json or items.json",
                hint=f"give the catalog's file itself ({_SOURCE_FORMS}), or generate the "
                "demo region first (`cropflow demo`)",
            )
        parent = None
        if collection.is_file():
            parent = self.read_file(collection.resolve(), parent_collection=None)
        if items.is_file():
            self.read_file(items.resolve(), parent_collection=parent)
        # more collections beside it (the demo's Sentinel-1 and DEM): collection-<x>.json
        # with its items-<x>.json
        for more in sorted(folder.glob("collection-*.json")):
            parent = self.read_file(more.resolve(), parent_collection=None)
            more_items = folder / f"items-{more.name.removeprefix('collection-')}"
            if more_items.is_file():
                self.read_file(more_items.resolve(), parent_collection=parent)

    def read_file(
        self, path: Path, parent_collection: str | None, linked_from: Path | None = None
    ) -> str | None:
        """Read one file of any form; the collection id if it is a Collection.

        A file reached by an ``item`` link (``linked_from``) must hold items.
        """
        if path in self.visited:
            return None
        self.visited.add(path)
        if path.suffix.lower() in NDJSON_SUFFIXES:
            self._read_ndjson(path, parent_collection, linked_from)
            return None
        data = _load_json(path, linked_from)
        kind = _kind(data)
        if kind in ("Catalog", "Collection") and linked_from is not None:
            raise DataError(
                f"item link in {str(linked_from)!r} points to a {kind} in {str(path)!r}",
                hint="link catalogs and collections with rel 'child', items with rel 'item'",
            )
        if kind in ("Catalog", "Collection"):
            return self._read_container(data, path, parent_collection)
        if kind == "FeatureCollection":
            features = data.get("features")
            if not isinstance(features, list):
                raise _not_stac(path, "a FeatureCollection without a 'features' list")
            self._add_items(features, path, parent_collection)
        elif kind == "list":
            self._add_items(data, path, parent_collection)
        elif kind == "Feature":
            self._add_item(data, path, None, parent_collection)
        else:
            raise _not_stac(path, _describe(data))
        return None

    def _read_ndjson(self, path: Path, parent: str | None, linked_from: Path | None) -> None:
        if not path.is_file():
            _load_json(path, linked_from)  # raises the missing-file error
        try:
            lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): U+2028
        except UnicodeDecodeError as exc:
            raise DataError(
                f"STAC file {str(path)!r} is not UTF-8 text ({exc})",
                hint="give one JSON item per line, UTF-8 encoded",
            ) from None
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"line {number} of {str(path)!r} is not JSON ({exc})",
                    hint="give one complete item per line (a JSON object on one line)",
                ) from None
            if _kind(obj) != "Feature":
                raise _not_stac(path, _describe(obj), line=number)
            self._add_item(obj, path, number, parent)

    def _add_items(self, values: list[Any], path: Path, parent: str | None) -> None:
        for index, value in enumerate(values):
            if _kind(value) != "Feature":
                raise _not_stac(path, f"{_describe(value)} as item {index}")
            self._add_item(value, path, None, parent)

    def _add_item(
        self, item: dict[str, Any], path: Path, line: int | None, parent: str | None
    ) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        item_id = item.get("id")
        if not isinstance(item_id, str) or not item_id:
            raise DataError(
                f"a Feature in {where!r} has no id, so it is no STAC item",
                hint="give every item a string 'id'",
            )
        what = f"item {item_id!r}"
        if not isinstance(item.get("properties"), dict):
            raise DataError(
                f"{what} in {where!r} has no 'properties' object", hint="give it properties"
            )
        try:
            item_interval(item)
        except ValueError as exc:
            raise DataError(
                f"{what} in {where!r} has no valid datetime: {exc}",
                hint="set properties.datetime (RFC 3339), or start_datetime and end_datetime",
            ) from None
        if not item.get("collection"):
            item["collection"] = parent or self.default_collection
        _absolute_assets(item, path, what)
        _absolute_links(item, path, what)
        self.found.append(_Found(item, path, line))

    def _read_container(self, obj: dict[str, Any], path: Path, parent: str | None) -> str | None:
        """A Catalog or Collection: keep it if a Collection, then follow its child/item links."""
        if not isinstance(obj.get("id"), str) or not obj["id"]:
            raise _not_stac(path, f"a {obj['type']} without an id")
        collection_id = parent
        if obj["type"] == "Collection":
            collection_id = obj["id"]
            if collection_id in self.collections:
                other = self.collections[collection_id][1]
                raise DataError(
                    f"collection {collection_id!r} is described twice: in {str(other)!r} and "
                    f"in {str(path)!r}",
                    hint="give each collection a unique id, or link it once",
                )
        links = obj.get("links", [])
        follow = [link for link in links if isinstance(link, dict) and link.get("rel") in _FOLLOWED]
        if obj["type"] == "Collection":
            kept = dict(obj)
            _absolute_assets(kept, path, f"collection {collection_id!r}")
            _absolute_links(kept, path, f"collection {collection_id!r}")
            self.collections[str(collection_id)] = (kept, path)
        for link in follow:
            self._follow(link, path, collection_id)
        return collection_id if obj["type"] == "Collection" else None

    def _follow(self, link: dict[str, Any], holder: Path, parent: str | None) -> None:
        href = link.get("href")
        if not isinstance(href, str):
            raise DataError(f"a {link['rel']} link in {str(holder)!r} has no href", hint="fix it")
        target = _link_target(href, holder)
        if target is None:
            raise DataError(
                f"{link['rel']} link {href!r} in {str(holder)!r} is remote; only local "
                "catalogs are read",
                hint="download the linked objects and link them with relative hrefs",
            )
        if link["rel"] == "item":
            self.read_file(target, parent, linked_from=holder)
            return
        if target in self.visited:
            return
        data = _load_json(target, linked_from=holder)
        if _kind(data) not in ("Catalog", "Collection"):
            raise DataError(
                f"child link {href!r} in {str(holder)!r} points to {_describe(data)} in "
                f"{str(target)!r}, not to a Catalog or Collection",
                hint="link items with rel 'item', catalogs and collections with rel 'child'",
            )
        self.visited.add(target)
        self._read_container(data, target, parent)

    def result(self, source: Path) -> LocalCatalog:
        """The collections (synthesised ones added) and items; errors for empty or duplicates."""
        if not self.found:
            raise DataError(
                f"STAC source {str(source)!r} holds no items",
                hint="add items to it (a local STAC API serves items), or give another source",
            )
        by_collection: dict[str, list[_Found]] = defaultdict(list)
        for found in self.found:
            by_collection[str(found.item["collection"])].append(found)
        for cid, (_, path) in self.collections.items():
            if cid not in by_collection:
                raise DataError(
                    f"collection {cid!r} in {str(path)!r} has no items",
                    hint="add 'item' links to it (or items naming it in their 'collection'), "
                    "or remove it from the catalog",
                )
        _check_duplicates(by_collection)
        collections = [c for c, _ in self.collections.values()]
        synthesised = [cid for cid in by_collection if cid not in self.collections]
        for cid in synthesised:
            collections.append(synthesise_collection(cid, [f.item for f in by_collection[cid]]))
        items = [f.item for f in self.found]
        return LocalCatalog(source, collections, items, synthesised)


def _check_duplicates(by_collection: dict[str, list[_Found]]) -> None:
    """DataError naming every item id that occurs twice in one collection, and where."""
    problems = []
    for cid, founds in by_collection.items():
        counts = Counter(str(f.item["id"]) for f in founds)
        for item_id in sorted(i for i, n in counts.items() if n > 1):
            places = ", ".join(f.where for f in founds if f.item["id"] == item_id)
            problems.append(f"{item_id!r} in collection {cid!r} ({places})")
    if problems:
        more = f" and {len(problems) - _MAX_NAMED} more" if len(problems) > _MAX_NAMED else ""
        raise DataError(
            "duplicate item ids: " + "; ".join(problems[:_MAX_NAMED]) + more,
            hint="give each item an id unique within its collection, or remove the duplicates",
        )


def read_stac_source(source: Path | str, *, default_collection: str = "items") -> LocalCatalog:
    """Read a local STAC source of any form (see the module docstring) into collections and
    items with absolute hrefs.

    Items without a ``collection`` take that of the Collection linking to them, else
    ``default_collection``. DataError (ConfigError for a remote URL) names the bad file, and
    the line for ndjson.
    """
    if not default_collection:
        raise ConfigError("default_collection is empty", hint="give a collection id")
    path = source_path(source)
    if not path.exists():
        raise DataError(
            f"STAC source {str(source)!r} does not exist",
            hint=f"give an existing file or folder: {_SOURCE_FORMS}",
        )
    reader = _Reader(default_collection)
    reader.read_source(path)
    return reader.result(path)


def write_server_files(catalog: LocalCatalog, out_dir: Path) -> tuple[list[Path], Path]:
    """Write one JSON file per collection and one FeatureCollection of all items into
    ``out_dir``, as ``rustac serve`` reads them; (collection files, items file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    collection_files = []
    for index, collection in enumerate(catalog.collections):
        path = out_dir / f"collection-{index}.json"
        path.write_text(json.dumps(collection), encoding="utf-8")
        collection_files.append(path)
    items_file = out_dir / "items.json"
    features = {"type": "FeatureCollection", "features": catalog.items}
    items_file.write_text(json.dumps(features), encoding="utf-8")
    return collection_files, items_file
