"""STAC search over HTTP against real rustac servers that serve real fixture items.

Expected results are computed from the fixture JSON itself (datetimes, eo:cloud_cover), never
from the code under test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pystac
import pytest
from stac_helpers import (
    FaultProxy,
    plain_http_server,
    read_items,
    reprocessed_copy,
    write_catalog,
)

from cropflow.errors import (
    AOIError,
    ConfigError,
    DataError,
    EmptySearchError,
    ProviderError,
    StacError,
)
from cropflow.settings import get_settings
from cropflow.stac.aoi import parse_aoi
from cropflow.stac.params import SearchParams
from cropflow.stac.profiles import get_profile
from cropflow.stac.search import (
    PROVENANCE_KEY,
    ResolvedSearch,
    build_search_kwargs,
    dedupe_items,
    load_search,
    load_search_result,
    save_search,
    search,
    search_and_save,
)
from cropflow.stac.server import LocalStacServer, free_port

SITE2 = "site2-2020_jun_jul-35MNM.geojson"
ES1_L2A = "earthsearch-v1_sentinel-2-l2a_S2B_24MVV_20250731_0_L2A.json"
ES1_C1 = "earthsearch-v1_sentinel-2-c1-l2a_S2B_T24MWV_20250731T130245_L2A.json"
ES1_PAGE = "earthsearch-v1_search_sentinel-2-l2a+landsat-c2-l2_20231008.json"
PC = "planetary-computer"
INSIDE_35MNM = "27.3,-7.9,27.5,-7.7"  # inside the tile's footprint (bbox 27.0,-8.23,28.0,-7.24)
FAR_AWAY = "10.0,50.0,10.1,50.1"


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short retry settings, so that failing cases fail within seconds."""
    monkeypatch.setenv("CROPFLOW_STAC__MAX_RETRIES", "1")
    monkeypatch.setenv("CROPFLOW_STAC__BACKOFF_S", "0.05")
    monkeypatch.setenv("CROPFLOW_STAC__TIMEOUT_S", "5")


@pytest.fixture(scope="module")
def site2() -> list[dict[str, Any]]:
    return read_items(SITE2)


@pytest.fixture(scope="module")
def site2_api(
    tmp_path_factory: pytest.TempPathFactory, site2: list[dict[str, Any]]
) -> Iterator[str]:
    """A rustac STAC API serving the 13 real Planetary Computer items of tile 35MNM."""
    collection, items = write_catalog(tmp_path_factory.mktemp("site2"), site2)
    with LocalStacServer(collection, items) as server:
        yield server.url


def _ids(items: pystac.ItemCollection) -> list[str]:
    return [it.id for it in items]


# --- The search parameters, one by one ------------------------------------------------------


def test_bbox_and_far_bbox(site2_api: str, site2: list[dict[str, Any]]) -> None:
    found = search(SearchParams(api_url=site2_api, provider=PC, aoi=INSIDE_35MNM))
    assert sorted(_ids(found)) == sorted(d["id"] for d in site2)
    times = [it.datetime for it in found]
    assert times == sorted(times), "sorted by time"
    with pytest.raises(EmptySearchError, match=r"no items at .*bbox\(10\.00000, 50\.00000") as err:
        search(SearchParams(api_url=site2_api, provider=PC, aoi=FAR_AWAY))
    assert err.value.hint


def test_geojson_aoi(site2_api: str, site2: list[dict[str, Any]], tmp_path: Path) -> None:
    # a field polygon overlapping the tile's east edge (the tile ends near 28.0 E)
    field = {
        "type": "Feature",
        "properties": {"name": "edge field"},
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[27.9, -7.6], [28.3, -7.6], [28.3, -7.4], [27.9, -7.5], [27.9, -7.6]]],
        },
    }
    path = tmp_path / "field.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [field]}))
    found = search(SearchParams(api_url=site2_api, provider=PC, aoi=str(path)))
    assert len(found) == len(site2)
    prov = found.extra_fields[PROVENANCE_KEY]
    assert parse_aoi(prov["aoi"]).geometry.equals(parse_aoi(field).geometry)
    # the same shape moved 1 degree east no longer touches the tile
    moved = json.loads(json.dumps(field))
    moved["geometry"]["coordinates"] = [
        [[x + 1.0, y] for x, y in moved["geometry"]["coordinates"][0]]
    ]
    with pytest.raises(EmptySearchError):
        search(SearchParams(api_url=site2_api, provider=PC, aoi=moved))


def test_datetime_interval(site2_api: str, site2: list[dict[str, Any]]) -> None:
    expected = {
        d["id"] for d in site2 if "2020-06-15" <= d["properties"]["datetime"][:10] <= "2020-07-05"
    }
    assert 0 < len(expected) < len(site2)
    found = search(SearchParams(api_url=site2_api, provider=PC, datetime="2020-06-15/2020-07-05"))
    assert set(_ids(found)) == expected
    open_end = search(SearchParams(api_url=site2_api, provider=PC, datetime="2020-07-20/.."))
    assert {it.datetime.date().isoformat() for it in open_end} == {
        d["properties"]["datetime"][:10]
        for d in site2
        if d["properties"]["datetime"] >= "2020-07-20"
    }


def test_cloud_cover_limit(site2_api: str, site2: list[dict[str, Any]]) -> None:
    expected = {d["id"] for d in site2 if d["properties"]["eo:cloud_cover"] <= 1.0}
    assert 0 < len(expected) < len(site2)
    found = search(SearchParams(api_url=site2_api, provider=PC, max_cloud_cover=1.0))
    assert set(_ids(found)) == expected
    assert found.extra_fields[PROVENANCE_KEY]["n_over_cloud_cover"] == len(site2) - len(expected)
    with pytest.raises(EmptySearchError, match=r"\(13 item\(s\) over the cloud-cover limit\)"):
        search(SearchParams(api_url=site2_api, provider=PC, max_cloud_cover=0.0))


def test_paging_small_pages_returns_everything_once(
    site2_api: str, site2: list[dict[str, Any]]
) -> None:
    found = search(SearchParams(api_url=site2_api, provider=PC, page_size=2))
    ids = _ids(found)
    assert len(ids) == len(set(ids)) == len(site2)
    assert set(ids) == {d["id"] for d in site2}
    assert found.extra_fields[PROVENANCE_KEY]["n_repeated_ids"] == 0
    capped = search(SearchParams(api_url=site2_api, provider=PC, page_size=2, max_items=5))
    assert len(capped) == 5


@pytest.fixture(scope="module")
def es1_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Two Earth Search v1 collections (sentinel-2-l2a, sentinel-2-c1-l2a) on one server."""
    out = tmp_path_factory.mktemp("es1")
    l2a = read_items(ES1_L2A) + [
        d for d in read_items(ES1_PAGE) if d["collection"] == "sentinel-2-l2a"
    ]
    c1 = read_items(ES1_C1)
    coll_l2a, items_l2a = write_catalog(out / "l2a", l2a)
    coll_c1, items_c1 = write_catalog(out / "c1", c1)
    merged = out / "items.json"
    features = (
        json.loads(items_l2a.read_text())["features"] + json.loads(items_c1.read_text())["features"]
    )
    merged.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    with LocalStacServer([coll_l2a, coll_c1], merged) as server:
        yield server.url


def test_collections(es1_api: str) -> None:
    only_c1 = search(
        SearchParams(api_url=es1_api, provider="earth-search-v1", collections=["sentinel-2-c1-l2a"])
    )
    assert _ids(only_c1) == [read_items(ES1_C1)[0]["id"]]
    both = search(
        SearchParams(
            api_url=es1_api,
            provider="earth-search-v1",
            collections=["sentinel-2-l2a", "sentinel-2-c1-l2a"],
        )
    )
    assert {it.collection_id for it in both} == {"sentinel-2-l2a", "sentinel-2-c1-l2a"}
    assert len(both) == 3
    default = search(SearchParams(api_url=es1_api, provider="earth-search-v1"))
    assert {it.collection_id for it in default} == {"sentinel-2-l2a"}


def test_unknown_collection_lists_the_servers(es1_api: str) -> None:
    # a collection the provider maps but this server lacks
    with pytest.raises(ProviderError) as err:
        search(SearchParams(api_url=es1_api, provider="earth-search-v0"))
    message = str(err.value)
    assert "sentinel-s2-l2a-cogs" in message
    assert "sentinel-2-l2a" in message and "sentinel-2-c1-l2a" in message, "lists what it has"
    # a collection the provider does not map: refused before any request
    with pytest.raises(ProviderError, match="not mapped by collection profile 'earth-search-v1'"):
        search(
            SearchParams(
                api_url=f"http://127.0.0.1:{free_port()}",
                provider="earth-search-v1",
                collections=["sentinel-1-grd"],
            )
        )


# --- Dedupe of reprocessed acquisitions -----------------------------------------------------


@pytest.fixture(scope="module")
def dup_catalog(
    tmp_path_factory: pytest.TempPathFactory, site2: list[dict[str, Any]]
) -> tuple[Path, Path, dict[str, str]]:
    """The 13 items plus a reprocessing (newer baseline) of one and an older one of another."""
    newer = reprocessed_copy(site2[3], "04.00", site2[3]["id"] + "_REPROCESSED")
    older = reprocessed_copy(site2[7], "02.11", site2[7]["id"] + "_OLDER")
    names = {
        "replaced": site2[3]["id"],
        "newer": newer["id"],
        "kept": site2[7]["id"],
        "older": older["id"],
    }
    collection, items = write_catalog(tmp_path_factory.mktemp("dups"), [*site2, newer, older])
    return collection, items, names


def test_dedupe_keeps_the_newest_baseline(
    dup_catalog: tuple[Path, Path, dict[str, str]], site2: list[dict[str, Any]]
) -> None:
    collection, items, names = dup_catalog
    with LocalStacServer(collection, items) as server:
        found = search(SearchParams(api_url=server.url, provider=PC, page_size=4))
        raw = search(SearchParams(api_url=server.url, provider=PC, dedupe=False))
    ids = set(_ids(found))
    assert len(found) == len(site2)
    assert names["newer"] in ids and names["replaced"] not in ids
    assert names["kept"] in ids and names["older"] not in ids
    prov = found.extra_fields[PROVENANCE_KEY]
    assert prov["duplicates_dropped"] == sorted([names["replaced"], names["older"]])
    assert len(raw) == len(site2) + 2


def test_dedupe_tie_breaks_and_keeps_untiled_items() -> None:
    base = read_items(ES1_L2A)[0]
    first = pystac.Item.from_dict(base)
    second = pystac.Item.from_dict(dict(base, id=base["id"].replace("_0_L2A", "_1_L2A")))
    other_time = pystac.Item.from_dict(
        dict(base, id="later", properties=dict(base["properties"], datetime="2025-08-05T13:03:24Z"))
    )
    props = {k: v for k, v in base["properties"].items() if not k.startswith(("mgrs:", "grid:"))}
    untiled = [pystac.Item.from_dict(dict(base, id=f"x{i}", properties=props)) for i in range(2)]
    kept, dropped = dedupe_items([first, second, other_time, *untiled])
    assert [it.id for it in kept] == [second.id, "later", "x0", "x1"]
    assert [it.id for it in dropped] == [first.id]


# --- CQL2 filter pass-through ---------------------------------------------------------------


def test_filter_against_rustac_is_a_clear_error(site2_api: str) -> None:
    """rustac 0.9.18 advertises no filter conformance (and ignores or empties filtered searches)."""
    cql2 = {"op": "=", "args": [{"property": "platform"}, "Sentinel-2A"]}
    with pytest.raises(StacError, match="does not support CQL2 filters") as err:
        search(SearchParams(api_url=site2_api, provider=PC, filter=cql2))
    assert site2_api in str(err.value)
    assert "filter" in (err.value.hint or "")


def _resolved(**overrides: Any) -> ResolvedSearch:
    base: dict[str, Any] = {
        "api_url": "https://example.org/stac",
        "catalog": None,
        "profile": get_profile(PC),
        "collections": ["sentinel-2-l2a"],
        "aoi": parse_aoi(INSIDE_35MNM),
        "datetime": "2020-06-01/2020-07-31",
        "max_cloud_cover": None,
        "filter": None,
        "max_items": None,
        "page_size": 50,
        "dedupe": True,
        "stac": get_settings().stac,
    }
    base.update(overrides)
    return ResolvedSearch(**base)


def test_filter_is_passed_through_unchanged() -> None:
    cql2 = {"op": "=", "args": [{"property": "s2:mgrs_tile"}, "35MNM"]}
    kw = build_search_kwargs(_resolved(filter=cql2), supports_filter=True, supports_query=False)
    assert kw["filter"] == cql2
    assert kw["bbox"] == [27.3, -7.9, 27.5, -7.7]
    assert kw["collections"] == ["sentinel-2-l2a"] and kw["limit"] == 50
    text = "s2:mgrs_tile = '35MNM'"
    kw = build_search_kwargs(_resolved(filter=text), supports_filter=True, supports_query=False)
    assert kw["filter"] == text


def test_cloud_limit_goes_to_the_server_when_it_can_filter() -> None:
    cql2 = {"op": "=", "args": [{"property": "s2:mgrs_tile"}, "35MNM"]}
    cloud = {"op": "<=", "args": [{"property": "eo:cloud_cover"}, 20.0]}
    kw = build_search_kwargs(
        _resolved(filter=cql2, max_cloud_cover=20.0), supports_filter=True, supports_query=True
    )
    assert kw["filter"] == {"op": "and", "args": [cql2, cloud]}
    assert "query" not in kw
    kw = build_search_kwargs(
        _resolved(max_cloud_cover=20.0), supports_filter=True, supports_query=False
    )
    assert kw["filter"] == cloud
    kw = build_search_kwargs(
        _resolved(max_cloud_cover=20.0), supports_filter=False, supports_query=True
    )
    assert kw["query"] == {"eo:cloud_cover": {"lte": 20.0}} and "filter" not in kw
    kw = build_search_kwargs(
        _resolved(max_cloud_cover=20.0), supports_filter=False, supports_query=False
    )
    assert "query" not in kw and "filter" not in kw, "then the client applies it alone"
    polygon = parse_aoi(
        {"type": "Polygon", "coordinates": [[[27, -8], [28, -8], [27.5, -7], [27, -8]]]}
    )
    kw = build_search_kwargs(_resolved(aoi=polygon), supports_filter=False, supports_query=False)
    assert kw["intersects"] == polygon.geojson() and "bbox" not in kw


# --- Retries --------------------------------------------------------------------------------


@pytest.mark.faults
def test_retries_with_backoff_then_success(
    site2_api: str, site2: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    backoff, timeout = 0.2, 1.0
    monkeypatch.setenv("CROPFLOW_STAC__MAX_RETRIES", "3")
    monkeypatch.setenv("CROPFLOW_STAC__BACKOFF_S", str(backoff))
    monkeypatch.setenv("CROPFLOW_STAC__TIMEOUT_S", str(timeout))
    faults: dict[str, list[int | str | None]] = {
        "GET /": [429],
        "GET /collections": [503],
        "POST /search": [None, "timeout"],  # the second page stalls once
    }
    proxy = FaultProxy(site2_api, faults, stall_s=timeout + 1.0)
    with proxy.running() as url:
        found = search(SearchParams(api_url=url, provider=PC, page_size=5))
    assert sorted(_ids(found)) == sorted(d["id"] for d in site2), "nothing lost, nothing twice"
    root, collections, pages = (
        proxy.route("GET", "/"),
        proxy.route("GET", "/collections"),
        proxy.route("POST", "/search"),
    )
    # every fault was answered by a retry that went through, after its backoff
    # (the first retry already waits backoff_s; the stalled one also waited the timeout)
    assert [out for _, out in root[:2]] == [429, "ok"]
    assert root[1][0] - root[0][0] >= backoff
    assert [out for _, out in collections[:2]] == [503, "ok"]
    assert collections[1][0] - collections[0][0] >= backoff
    assert [out for _, out in pages[:3]] == ["ok", "timeout", "ok"]
    assert pages[2][0] - pages[1][0] >= timeout + backoff
    assert len(pages) >= 4, "13 items in pages of 5, one page retried"


@pytest.mark.faults
def test_gives_up_after_max_retries(site2_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROPFLOW_STAC__MAX_RETRIES", "3")
    monkeypatch.setenv("CROPFLOW_STAC__BACKOFF_S", "0.02")
    proxy = FaultProxy(site2_api, always=503)
    with proxy.running() as url, pytest.raises(StacError) as err:
        search(SearchParams(api_url=url, provider=PC))
    message = str(err.value)
    assert url in message and "HTTP 503" in message and "3 retries" in message
    assert "MAX_RETRIES" in (err.value.hint or "")
    assert len(proxy.log) == 1 + 3
    gaps = [b[0] - a[0] for a, b in zip(proxy.log, proxy.log[1:], strict=False)]
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04 and gaps[2] >= 0.08, "backoff doubles"


# --- Unusable APIs and bad parameters -------------------------------------------------------


def test_plain_http_server_is_not_a_stac_api(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hi")
    with (
        plain_http_server(tmp_path) as url,
        pytest.raises(StacError, match="is not a STAC API") as err,
    ):
        search(SearchParams(api_url=url, provider=PC, aoi=INSIDE_35MNM))
    assert url in str(err.value)


def test_unreachable_api() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StacError, match="could not be reached") as err:
        search(SearchParams(api_url=url, provider=PC, aoi=INSIDE_35MNM))
    assert url in str(err.value)


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"provider": "sentinelhub"}, ProviderError, "unknown provider 'sentinelhub'"),
        ({"api_url": "ftp://example.org/stac"}, ConfigError, "is not an http"),
        ({"datetime": "2020-13-45"}, ConfigError, "is not a date"),
        ({"datetime": "2020-07-01/2020-06-01"}, ConfigError, "starts after it ends"),
        ({"datetime": "../.."}, ConfigError, "open at both ends"),
        ({"aoi": "10,50,9,51"}, AOIError, "min >= max"),
        ({"api_url": "https://example.org/stac", "aoi": None}, ConfigError, "no AOI given"),
    ],
)
def test_bad_parameters_fail_before_any_request(
    params: dict[str, Any], error: type[Exception], message: str
) -> None:
    full: dict[str, Any] = {
        "api_url": f"http://127.0.0.1:{free_port()}",
        "provider": PC,
        "aoi": INSIDE_35MNM,
    }
    full.update(params)
    with pytest.raises(error, match=message):
        search(SearchParams(**full))


# --- Saving, loading, the demo default ------------------------------------------------------


def test_save_and_load(site2_api: str, site2: list[dict[str, Any]], tmp_path: Path) -> None:
    params = SearchParams(api_url=site2_api, provider=PC, max_cloud_cover=5.0)
    result = search_and_save(params, tmp_path)
    expected = [d for d in site2 if d["properties"]["eo:cloud_cover"] <= 5.0]
    assert result.n_items == len(expected) and result.provider == PC
    assert result.uri.startswith("file://") and result.path.is_file()
    assert result.path.parent == tmp_path / "searches" / result.key
    loaded = load_search(result.uri)
    assert sorted(_ids(loaded)) == sorted(d["id"] for d in expected)
    assert (
        load_search(result.path)[0].assets["B04"].href
        == next(d for d in site2 if d["id"] == loaded[0].id)["assets"]["B04"]["href"]
    )
    assert load_search_result(result.uri) == result
    summary = result.summary
    clouds = [d["properties"]["eo:cloud_cover"] for d in expected]
    assert summary.tiles == ["35MNM"]
    assert summary.dates == sorted({d["properties"]["datetime"][:10] for d in expected})
    assert summary.cloud_cover_max == max(clouds) and summary.cloud_cover_min == min(clouds)
    assert summary.n_over_cloud_cover == len(site2) - len(expected)
    assert f"{len(expected)} items" in summary.to_markdown()
    assert [row["id"] for row in summary.table()] == _ids(loaded)
    # the same search again replaces the files in place, leaving no temporary files
    again = save_search(search(params), params, tmp_path)
    assert again.key == result.key
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["items.json", "search.json"]


def test_failed_search_writes_nothing(site2_api: str, tmp_path: Path) -> None:
    with pytest.raises(EmptySearchError):
        search_and_save(SearchParams(api_url=site2_api, provider=PC, aoi=FAR_AWAY), tmp_path)
    assert not (tmp_path / "searches").exists()


def test_load_bad_references(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_search(tmp_path / "nope.json")
    bad = tmp_path / "items.json"
    bad.write_text('{"type": "Feature"}')
    with pytest.raises(DataError, match="is not a STAC ItemCollection"):
        load_search(bad.as_uri())
    with pytest.raises(DataError, match="not a local file"):
        load_search("https://example.org/items.json")


def test_default_search_serves_the_demo_catalog(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CROPFLOW_WORKDIR", str(tmp_path))
    monkeypatch.delenv("CROPFLOW_STAC__API_URL", raising=False)
    monkeypatch.delenv("CROPFLOW_STAC__PROVIDER", raising=False)
    with pytest.raises(ConfigError, match="no demo catalog") as err:
        search(SearchParams())
    assert "CROPFLOW_STAC__API_URL" in (err.value.hint or "")
    demo_items = read_items(ES1_L2A) + [
        d for d in read_items(ES1_PAGE) if d["collection"] == "sentinel-2-l2a"
    ]
    write_catalog(get_settings().demo_dir / "stac", demo_items)
    found = search(SearchParams())
    assert sorted(_ids(found)) == sorted(d["id"] for d in demo_items)
    prov = found.extra_fields[PROVENANCE_KEY]
    assert prov["provider"] == "local-demo" and prov["api_url"] == "local-demo"
