"""Helpers for the STAC tests: catalogs built from the real fixture items, and tiny HTTP servers.

The fault-injecting proxy is used only by the retry tests (a 429/503/timeout cannot be caused
on rustac otherwise); everything else runs against real rustac servers.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

FIXTURE_STAC = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "stac"


def read_items(name: str) -> list[dict[str, Any]]:
    """The item dicts of one fixture file (Feature, FeatureCollection or JSON list)."""
    data = json.loads((FIXTURE_STAC / name).read_text())
    if isinstance(data, list):
        return data
    if data.get("type") == "FeatureCollection":
        return list(data["features"])
    return [data]


def write_catalog(
    out_dir: Path, items: list[dict[str, Any]], collection_id: str | None = None
) -> tuple[Path, Path]:
    """Write ``collection.json`` + ``items.json`` (a FeatureCollection) for ``rustac serve``.

    Item links to their original catalogs are dropped; the collection's extent is computed
    from the items.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    features = []
    for item in items:
        feature = copy.deepcopy(item)
        feature["links"] = []
        if collection_id is not None:
            feature["collection"] = collection_id
        features.append(feature)
    cid = collection_id or features[0]["collection"]
    bboxes = [f["bbox"] for f in features]
    times = sorted(f["properties"]["datetime"] for f in features)
    collection: dict[str, Any] = {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": cid,
        "description": f"test collection built from {len(features)} real fixture items",
        "license": "proprietary",
        "links": [],
        "extent": {
            "spatial": {
                "bbox": [
                    [
                        min(b[0] for b in bboxes),
                        min(b[1] for b in bboxes),
                        max(b[2] for b in bboxes),
                        max(b[3] for b in bboxes),
                    ]
                ]
            },
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
    }
    collection_path = out_dir / "collection.json"
    items_path = out_dir / "items.json"
    collection_path.write_text(json.dumps(collection))
    items_path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return collection_path, items_path


def collection_dict(collection_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A STAC Collection (no links) whose extent covers ``items`` (their bbox and datetime)."""
    bboxes = [i["bbox"] for i in items]
    times = sorted(i["properties"]["datetime"] for i in items)
    west, south = min(b[0] for b in bboxes), min(b[1] for b in bboxes)
    east, north = max(b[2] for b in bboxes), max(b[3] for b in bboxes)
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": collection_id,
        "description": f"test collection of {len(items)} real fixture items",
        "license": "proprietary",
        "links": [],
        "extent": {
            "spatial": {"bbox": [[west, south, east, north]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
    }


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as JSON to ``path`` (folders created); the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def localise_assets(item: dict[str, Any], item_file: Path, keys: int = 2) -> list[str]:
    """Point the first ``keys`` assets of ``item`` at small local files beside ``item_file``
    through RELATIVE hrefs (``./<key>.tif``), creating the files; the keys changed."""
    changed = list(item["assets"])[:keys]
    for key in changed:
        item_file.parent.mkdir(parents=True, exist_ok=True)
        (item_file.parent / f"{key}.tif").write_bytes(b"II*\x00 not a real tiff")
        item["assets"][key]["href"] = f"./{key}.tif"
    return changed


def write_static_catalog(
    root: Path,
    collections: dict[str, list[dict[str, Any]]],
    loose: list[dict[str, Any]] | None = None,
) -> Path:
    """A static catalog tree with RELATIVE links, as pystac's ``save()`` lays one out::

        root/catalog.json                       child -> <cid>/collection.json, loose/catalog.json
        root/<cid>/collection.json              item -> items/<id>/<id>.json
        root/<cid>/items/<id>/<id>.json         assets: ./<key>.tif (local files) + remote ones
        root/shared/thumb.png                   every item's "thumbnail": ../../../shared/...
        root/loose/catalog.json                 a plain Catalog linking ``loose`` items

    Item ``collection`` fields are kept as given; the root ``catalog.json`` is returned.
    """
    thumb = root / "shared" / "thumb.png"
    thumb.parent.mkdir(parents=True, exist_ok=True)
    thumb.write_bytes(b"\x89PNG not a real png")
    catalog_links = [{"rel": "self", "href": "./catalog.json"}]
    for cid, items in collections.items():
        folder = root / cid
        links: list[dict[str, Any]] = [
            {"rel": "root", "href": "../catalog.json"},
            {"rel": "parent", "href": "../catalog.json"},
            {"rel": "license", "href": "../LICENSE.txt"},
        ]
        for item in items:
            item = copy.deepcopy(item)
            item_file = folder / "items" / item["id"] / f"{item['id']}.json"
            localise_assets(item, item_file)
            item["assets"]["thumbnail"] = {"href": "../../../shared/thumb.png", "roles": ["x"]}
            item["links"] = [
                {"rel": "self", "href": f"./{item['id']}.json"},
                {"rel": "parent", "href": "../../collection.json"},
                {"rel": "collection", "href": "../../collection.json"},
                {"rel": "root", "href": "../../../catalog.json"},
            ]
            write_json(item_file, item)
            links.append({"rel": "item", "href": f"./items/{item['id']}/{item['id']}.json"})
        collection = collection_dict(cid, items)
        collection["links"] = links
        write_json(folder / "collection.json", collection)
        catalog_links.append({"rel": "child", "href": f"./{cid}/collection.json"})
    if loose:
        loose_links = [{"rel": "parent", "href": "../catalog.json"}]
        for item in loose:
            item = copy.deepcopy(item)
            item["links"] = []
            item_file = root / "loose" / f"{item['id']}.json"
            localise_assets(item, item_file, keys=1)
            write_json(item_file, item)
            loose_links.append({"rel": "item", "href": f"./{item['id']}.json"})
        loose_catalog = {"type": "Catalog", "stac_version": "1.0.0", "id": "loose"}
        write_json(
            root / "loose" / "catalog.json",
            {**loose_catalog, "description": "items of several collections", "links": loose_links},
        )
        catalog_links.append({"rel": "child", "href": "./loose/catalog.json"})
    root_catalog = {"type": "Catalog", "stac_version": "1.0.0", "id": "root"}
    return write_json(
        root / "catalog.json",
        {**root_catalog, "description": "a test tree of real items", "links": catalog_links},
    )


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` until it holds; AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.05)


def reprocessed_copy(item: dict[str, Any], baseline: str, new_id: str) -> dict[str, Any]:
    """The same acquisition (tile, datetime) again, as a newer processing baseline would give."""
    dup = copy.deepcopy(item)
    dup["id"] = new_id
    dup["properties"]["s2:processing_baseline"] = baseline
    return dup


@contextmanager
def serve_thread(server: ThreadingHTTPServer) -> Iterator[str]:
    """Run an http.server in a daemon thread; yields its root URL."""
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def plain_http_server(directory: Path) -> Iterator[str]:
    """What ``python -m http.server`` runs: a directory listing at the root, not a STAC API."""

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serve_thread(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
        yield url


class FaultProxy:
    """A reverse proxy in front of a real STAC API that answers some requests with faults.

    ``faults`` maps ``"METHOD /path"`` to the faults for that route's next requests, one per
    request: ``429`` / ``503`` (that status), ``"timeout"`` (stall ``stall_s``, then drop),
    ``None`` (pass through). Used up, the route passes through, unless ``always`` is set,
    which then answers every request. ``log`` holds (time, method, path, outcome).
    """

    def __init__(
        self,
        upstream: str,
        faults: dict[str, list[int | str | None]] | None = None,
        always: int | None = None,
        stall_s: float = 1.0,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.always = always
        self.stall_s = stall_s
        self.log: list[tuple[float, str, str, int | str]] = []
        self._lock = threading.Lock()
        self.url = ""

    def _next_fault(self, method: str, path: str) -> int | str | None:
        with self._lock:
            queue = self.faults.get(f"{method} {path.split('?')[0]}")
            if queue:
                return queue.pop(0)
            return self.always

    def route(self, method: str, path: str) -> list[tuple[float, int | str]]:
        """(time, outcome) of every request to one route, in order."""
        return [(t, out) for t, m, p, out in self.log if m == method and p.split("?")[0] == path]

    @contextmanager
    def running(self) -> Iterator[str]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._next_fault(self.command, self.path)
                proxy.log.append((time.monotonic(), self.command, self.path, fault or "ok"))
                if fault == "timeout":
                    time.sleep(proxy.stall_s)
                    self.close_connection = True
                    return
                if isinstance(fault, int):
                    payload = b'{"code": "fault", "description": "injected"}'
                    self.send_response(fault)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = httpx.request(
                    self.command,
                    proxy.upstream + self.path,
                    content=body or None,
                    headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
                    timeout=10,
                )
                payload = upstream.content.replace(proxy.upstream.encode(), proxy.url.encode())
                self.send_response(upstream.status_code)
                self.send_header(
                    "Content-Type", upstream.headers.get("content-type", "application/json")
                )
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _handle  # noqa: N815 - http.server's naming
            do_POST = _handle  # noqa: N815

        with serve_thread(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
            self.url = url
            yield url
