"""Any local item collection as the input of the local STAC API, built from REAL fixture items.

Each input form (a static catalog tree with relative links and asset hrefs, an ItemCollection,
ndjson, a Planetary Computer JSON list, one item, a folder, a file:// URI) is read and served
by a real rustac server; pystac-client searches it over HTTP.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pystac
import pystac_client
import pytest
from stac_helpers import (
    FIXTURE_STAC,
    collection_dict,
    localise_assets,
    read_items,
    write_catalog,
    write_json,
    write_static_catalog,
)

from cropflow.errors import ConfigError, CropflowError, DataError
from cropflow.stac.catalog import (
    LocalCatalog,
    absolute_href,
    read_stac_source,
    write_server_files,
)
from cropflow.stac.server import LocalStacServer

SITE2 = "site2-2020_jun_jul-35MNM.geojson"  # 13 PC sentinel-2-l2a items, a FeatureCollection
DEM = "cop-dem-glo-30-pc.json"  # 4 PC cop-dem-glo-30 items, a JSON list
LANDSAT = "landsat-c2-l2-pc.json"  # 4 PC landsat-c2-l2 items, a JSON list
S1 = "sentinel-1-rtc-pc.json"  # 4 PC sentinel-1-rtc items, a JSON list
S2_PC = "sentinel-2-l2a-pc.json"  # 4 PC sentinel-2-l2a items, a JSON list
SEARCH = "earthsearch-v1_search_sentinel-2-l2a+landsat-c2-l2_20231008.json"  # 2 collections
SINGLE = "S2A_28QCH_20200714_0_L2A.json"  # one Earth Search v0 item (STAC 1.0.0-beta.1)


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (folders created); the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _ids(name: str) -> set[str]:
    return {i["id"] for i in read_items(name)}


def _local_path(href: str) -> Path:
    return Path(url2pathname(urlsplit(href).path))


def _search_ids(url: str, **kwargs: Any) -> set[str]:
    client = pystac_client.Client.open(url)
    return {item.id for item in client.search(limit=100, **kwargs).items()}


def _served_items(url: str, **kwargs: Any) -> list[pystac.Item]:
    return list(pystac_client.Client.open(url).search(limit=100, **kwargs).items())


def _check_absolute_assets(items: Iterable[pystac.Item]) -> int:
    """Every asset href has a scheme; every file:// one exists. The number of file:// ones."""
    local = 0
    for item in items:
        for key, asset in item.assets.items():
            scheme = urlsplit(asset.href).scheme
            assert scheme in {"file", "https", "http", "s3"}, (item.id, key, asset.href)
            if scheme == "file":
                assert _local_path(asset.href).is_file(), asset.href
                assert asset.get_absolute_href() == asset.href
                local += 1
    return local


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """catalog.json -> sentinel-2-l2a (13 items, 3 without a collection field), cop-dem-glo-30
    (4 items), loose/ (4 landsat items of no described collection, 4 S1 items naming none)."""
    site2 = read_items(SITE2)
    for item in site2[:3]:
        del item["collection"]
    s1 = read_items(S1)
    for item in s1:
        del item["collection"]
    return write_static_catalog(
        tmp_path / "tree",
        {"sentinel-2-l2a": site2, "cop-dem-glo-30": read_items(DEM)},
        loose=read_items(LANDSAT) + s1,
    )


# --- reading -----------------------------------------------------------------------------


def test_static_catalog_links_resolve_against_the_file_holding_them(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative links must not depend on the working directory
    catalog = read_stac_source(tree, default_collection="misc")
    assert catalog.collection_ids == ["sentinel-2-l2a", "cop-dem-glo-30", "landsat-c2-l2", "misc"]
    assert catalog.synthesised == ["landsat-c2-l2", "misc"]
    by_collection: dict[str, set[str]] = {}
    for item in catalog.items:
        by_collection.setdefault(item["collection"], set()).add(item["id"])
    assert by_collection == {
        "sentinel-2-l2a": _ids(SITE2),  # the 3 without a field took their collection's id
        "cop-dem-glo-30": _ids(DEM),
        "landsat-c2-l2": _ids(LANDSAT),
        "misc": _ids(S1),
    }
    root = tree.parent
    first = next(i for i in catalog.items if i["id"] == read_items(SITE2)[0]["id"])
    key = next(iter(read_items(SITE2)[0]["assets"]))
    item_dir = root / "sentinel-2-l2a" / "items" / first["id"]
    assert first["assets"][key]["href"] == (item_dir / f"{key}.tif").as_uri()
    assert first["assets"]["thumbnail"]["href"] == (root / "shared" / "thumb.png").as_uri()
    assert first["links"] == []  # self/parent/collection/root: the API writes its own
    for item in catalog.items:
        for asset in item["assets"].values():
            assert urlsplit(asset["href"]).scheme in {"file", "https", "s3"}, asset["href"]
    s2 = catalog.collections[0]
    assert [link["rel"] for link in s2["links"]] == ["license"]
    assert s2["links"][0]["href"] == (root / "LICENSE.txt").as_uri()


def test_synthesised_collections_cover_their_items(tmp_path: Path) -> None:
    items = read_items(LANDSAT)
    source = write_json(tmp_path / "landsat.json", items)
    catalog = read_stac_source(source)
    (collection,) = catalog.collections
    assert catalog.synthesised == ["landsat-c2-l2"]
    assert collection["license"] == "other"
    assert collection["description"]
    (bbox,) = collection["extent"]["spatial"]["bbox"]
    assert bbox == [
        min(i["bbox"][0] for i in items),
        min(i["bbox"][1] for i in items),
        max(i["bbox"][2] for i in items),
        max(i["bbox"][3] for i in items),
    ]
    ((start, end),) = collection["extent"]["temporal"]["interval"]
    times = sorted(pystac.utils.str_to_datetime(i["properties"]["datetime"]) for i in items)
    assert pystac.utils.str_to_datetime(start) == times[0]
    assert pystac.utils.str_to_datetime(end) == times[-1]
    parsed = pystac.Collection.from_dict(collection)  # a valid pystac Collection
    assert parsed.extent.temporal.intervals[0][0] == times[0]


def test_start_and_end_datetimes_make_the_interval(tmp_path: Path) -> None:
    item = read_items(SINGLE)[0]
    item["properties"].update(
        datetime=None,
        start_datetime="2020-01-01T00:00:00Z",
        end_datetime="2020-12-31T23:59:59.123456789Z",
    )
    catalog = read_stac_source(write_json(tmp_path / "one.json", item))
    interval = catalog.collections[0]["extent"]["temporal"]["interval"]
    assert interval == [["2020-01-01T00:00:00Z", "2020-12-31T23:59:59.123456Z"]]


@pytest.mark.parametrize("suffix", [".ndjson", ".jsonl", ".geojsonl"])
def test_newline_delimited_items_with_blank_lines(tmp_path: Path, suffix: str) -> None:
    items = read_items(S1)
    del items[1]["collection"]
    text = "\n\n".join(json.dumps(i) for i in items) + "\n\n"
    catalog = read_stac_source(write_text(tmp_path / f"s1{suffix}", text), default_collection="x")
    assert [i["id"] for i in catalog.items] == [i["id"] for i in items]
    assert catalog.collection_ids == ["sentinel-1-rtc", "x"]


def test_folder_file_uri_and_single_item_sources(tmp_path: Path) -> None:
    collection, items = write_catalog(tmp_path / "pair", read_items(SITE2))
    pair = read_stac_source(tmp_path / "pair")  # the demo's layout: collection.json + items.json
    assert pair.collection_ids == ["sentinel-2-l2a"]
    assert pair.synthesised == []
    assert pair.collections[0]["description"] == json.loads(collection.read_text())["description"]
    assert {i["id"] for i in pair.items} == _ids(SITE2)
    by_uri = read_stac_source(items.as_uri())
    assert {i["id"] for i in by_uri.items} == _ids(SITE2)
    tree_dir = tmp_path / "tree"
    write_static_catalog(tree_dir, {"cop-dem-glo-30": read_items(DEM)})
    assert read_stac_source(tree_dir).collection_ids == ["cop-dem-glo-30"]  # its catalog.json
    single = write_json(tmp_path / "single.json", read_items(SINGLE)[0])
    one = read_stac_source(single)
    assert [i["id"] for i in one.items] == ["S2A_28QCH_20200714_0_L2A"]
    assert one.collection_ids == ["sentinel-s2-l2a-cogs"]


def test_absolute_hrefs() -> None:
    base = Path("/data/cat/items/a.json")
    assert absolute_href("./b04.tif", base) == "file:///data/cat/items/b04.tif"
    assert absolute_href("../x y.tif", base) == "file:///data/cat/x%20y.tif"
    assert absolute_href("/abs/c.tif", base) == "file:///abs/c.tif"
    for url in ("https://host/c.tif", "s3://bucket/c.tif", "file:///d/c.tif"):
        assert absolute_href(url, base) == url


def test_write_server_files(tmp_path: Path) -> None:
    catalog = read_stac_source(FIXTURE_STAC / SEARCH)
    collections, items = write_server_files(catalog, tmp_path / "out")
    assert [json.loads(p.read_text())["id"] for p in collections] == catalog.collection_ids
    features = json.loads(items.read_text())
    assert features["type"] == "FeatureCollection"
    assert {f["id"] for f in features["features"]} == _ids(SEARCH)


# --- bad input ---------------------------------------------------------------------------


def _raises(
    source: Path | str, match: str, named: Path | str, error: type[CropflowError] = DataError
) -> None:
    """``read_stac_source(source)`` raises ``error`` matching ``match``, naming ``named``."""
    with pytest.raises(error, match=match) as info:
        read_stac_source(source)
    assert str(named) in info.value.message, info.value.message
    assert info.value.hint, "every error says how to fix it"


def test_missing_not_json_and_not_stac(tmp_path: Path) -> None:
    _raises(tmp_path / "nope.json", "does not exist", tmp_path / "nope.json")
    _raises(write_text(tmp_path / "bad.json", "{not json"), "is not JSON", tmp_path / "bad.json")
    polygon = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}
    not_stac = write_json(tmp_path / "polygon.json", polygon)
    _raises(not_stac, "type 'Polygon', not a STAC object", not_stac)
    numbers = write_json(tmp_path / "numbers.json", [1, 2])
    _raises(numbers, "JSON int as item 0, not a STAC object", numbers)
    no_id = copy.deepcopy(read_items(SINGLE)[0])
    del no_id["id"]
    _raises(write_json(tmp_path / "noid.json", no_id), "has no id", tmp_path / "noid.json")
    no_time = read_items(SINGLE)[0]
    no_time["properties"]["datetime"] = "yesterday"
    _raises(write_json(tmp_path / "t.json", no_time), "no valid datetime", tmp_path / "t.json")
    (tmp_path / "empty-folder").mkdir()
    _raises(tmp_path / "empty-folder", "holds no catalog.json", tmp_path / "empty-folder")
    url = "https://example.com/items.json"
    _raises(url, "not a local file", url, ConfigError)


def test_bad_ndjson_lines_are_named(tmp_path: Path) -> None:
    good = [json.dumps(i) for i in read_items(S1)[:2]]
    broken = write_text(tmp_path / "broken.ndjson", "\n".join([*good, "", "{oops"]))
    _raises(broken, r"line 4 of .* is not JSON", broken)
    with pytest.raises(DataError, match=r"broken\.ndjson'"):
        read_stac_source(broken)
    wrong = write_text(tmp_path / "wrong.jsonl", "\n".join([good[0], '{"type": "Catalog"}']))
    _raises(wrong, r"wrong\.jsonl:2' holds a JSON object of type 'Catalog'", wrong)


def test_missing_link_target_names_the_link_holder(tree: Path) -> None:
    collection = tree.parent / "cop-dem-glo-30" / "collection.json"
    data = json.loads(collection.read_text())
    data["links"].append({"rel": "item", "href": "./items/gone/gone.json"})
    collection.write_text(json.dumps(data))
    gone = tree.parent / "cop-dem-glo-30" / "items" / "gone" / "gone.json"
    message = f"link in '{collection}' points to '{gone}', which does not exist"
    _raises(tree, re.escape(message), collection)


def test_wrong_link_kinds(tmp_path: Path) -> None:
    root = write_static_catalog(tmp_path / "t", {"cop-dem-glo-30": read_items(DEM)})
    data = json.loads(root.read_text())
    data["links"].append({"rel": "child", "href": "./cop-dem-glo-30/items/x/x.json"})
    item = read_items(DEM)[0]
    write_json(tmp_path / "t" / "cop-dem-glo-30" / "items" / "x" / "x.json", item)
    root.write_text(json.dumps(data))
    _raises(root, "child link .* points to a JSON object of type 'Feature'", root)


def test_empty_collection_and_empty_sources(tmp_path: Path) -> None:
    collection = write_json(
        tmp_path / "lonely" / "collection.json", collection_dict("lonely", read_items(DEM))
    )
    _raises(collection, "holds no items", collection)
    root = write_static_catalog(tmp_path / "t", {"cop-dem-glo-30": read_items(DEM)})
    data = json.loads(root.read_text())
    data["links"].append({"rel": "child", "href": "../lonely/collection.json"})
    root.write_text(json.dumps(data))
    _raises(root, "collection 'lonely' in .* has no items", collection)
    empty = write_json(tmp_path / "empty.json", {"type": "FeatureCollection", "features": []})
    _raises(empty, "holds no items", empty)
    blank = write_text(tmp_path / "empty.ndjson", "\n\n")
    _raises(blank, "holds no items", blank)


def test_duplicate_item_ids_are_named(tmp_path: Path) -> None:
    items = read_items(DEM)
    twice = write_json(tmp_path / "dem.json", [*items, items[2]])
    first_id = items[2]["id"]
    _raises(twice, f"duplicate item ids: '{first_id}' in collection 'cop-dem-glo-30'", twice)
    other = copy.deepcopy(items[2])
    other["collection"] = "another"  # the same id in another collection is fine
    ok = read_stac_source(write_json(tmp_path / "ok.json", [*items, other]))
    assert len(ok.items) == 5


# --- served over HTTP by a real rustac ---------------------------------------------------


def test_serves_a_static_catalog_tree(tree: Path) -> None:
    with LocalStacServer.from_source(tree, default_collection="misc") as server:
        assert server.catalog is not None
        assert _search_ids(server.url, collections=["sentinel-2-l2a"]) == _ids(SITE2)
        assert _search_ids(server.url, collections=["cop-dem-glo-30"]) == _ids(DEM)
        assert _search_ids(server.url, collections=["landsat-c2-l2"]) == _ids(LANDSAT)
        assert _search_ids(server.url, collections=["misc"]) == _ids(S1)
        june = {i["id"] for i in read_items(SITE2) if i["properties"]["datetime"] < "2020-06-16"}
        found = _search_ids(
            server.url, collections=["sentinel-2-l2a"], datetime="2020-06-01/2020-06-15"
        )
        assert found == june and 0 < len(june) < 13
        served = _served_items(server.url, collections=["sentinel-2-l2a", "cop-dem-glo-30"])
        # 2 relative asset files + 1 shared thumbnail per item, all now absolute file:// URIs
        assert _check_absolute_assets(served) == 3 * (13 + 4)
        work_dir = server.collection_jsons[0].parent
        assert work_dir.is_dir()
    assert not work_dir.exists(), "the prepared files are deleted on stop"


def test_serves_an_item_collection_of_two_collections(tmp_path: Path) -> None:
    source = tmp_path / "search.geojson"
    source.write_bytes((FIXTURE_STAC / SEARCH).read_bytes())
    by_collection: dict[str, set[str]] = {}
    for item in read_items(SEARCH):
        by_collection.setdefault(item["collection"], set()).add(item["id"])
    with LocalStacServer.from_source(source) as server:
        for cid, ids in by_collection.items():
            assert _search_ids(server.url, collections=[cid]) == ids
        assert _check_absolute_assets(_served_items(server.url)) == 0  # all remote


def test_serves_ndjson_with_relative_assets(tmp_path: Path) -> None:
    items = read_items(S1)
    source = tmp_path / "s1" / "items.ndjson"
    for item in items:
        localise_assets(item, source)
    write_text(source, "\n".join(json.dumps(i) for i in items) + "\n")
    with LocalStacServer.from_source(source.as_uri()) as server:
        assert _search_ids(server.url, collections=["sentinel-1-rtc"]) == _ids(S1)
        first = items[0]
        bbox_ids = _search_ids(server.url, bbox=first["bbox"])
        assert first["id"] in bbox_ids
        assert _check_absolute_assets(_served_items(server.url)) == 2 * len(items)


@pytest.mark.parametrize("name", [S2_PC, SINGLE])
def test_serves_a_pc_list_and_a_single_item(tmp_path: Path, name: str) -> None:
    source = tmp_path / name
    source.write_bytes((FIXTURE_STAC / name).read_bytes())
    (collection_id,) = {i["collection"] for i in read_items(name)}
    with LocalStacServer.from_source(source) as server:
        assert _search_ids(server.url, collections=[collection_id]) == _ids(name)
        assert _search_ids(server.url, ids=sorted(_ids(name))[:1]) == set(sorted(_ids(name))[:1])


def test_a_stopped_source_server_starts_again(tmp_path: Path) -> None:
    server = LocalStacServer.from_source(FIXTURE_STAC / DEM)
    with server:
        first_dir = server.items_json.parent
    assert not first_dir.exists()
    with server:
        assert _search_ids(server.url) == _ids(DEM)
    assert isinstance(server.catalog, LocalCatalog)
