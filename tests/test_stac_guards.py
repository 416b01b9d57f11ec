"""STAC search limits: a total deadline, retries that mean what they say, requests counted,
an AOI-size guard for remote APIs, an item-count guard and "did you swap lon/lat?" hints.

Real rustac servers serve real fixture items; the faults (503s, a stalled page, an API that
accepts connections and never answers) come from the fault proxy or a raw listening socket,
since they cannot be caused on rustac.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from stac_helpers import FaultProxy, read_items, write_catalog

from cropflow.errors import AOIError, ConfigError, EmptySearchError
from cropflow.settings import get_settings
from cropflow.stac.aoi import parse_aoi
from cropflow.stac.params import SearchParams
from cropflow.stac.search import SearchGaveUpError, resolve, search
from cropflow.stac.server import LocalStacServer

SITE2 = "site2-2020_jun_jul-35MNM.geojson"
PC = "planetary-computer"
INSIDE_35MNM = "27.3,-7.9,27.5,-7.7"  # inside the tile's footprint (bbox 27.0,-8.23,28.0,-7.24)
REMOTE = "https://stac.invalid/api"  # never contacted: the checks come before any request
EUROPE = "-10,35,40,70"


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROPFLOW_STAC__BACKOFF_S", "0.01")
    monkeypatch.setenv("CROPFLOW_STAC__TIMEOUT_S", "5")


@pytest.fixture(scope="module")
def site2_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A rustac STAC API serving the 13 real Planetary Computer items of tile 35MNM."""
    collection, items = write_catalog(tmp_path_factory.mktemp("site2"), read_items(SITE2))
    with LocalStacServer(collection, items) as server:
        yield server.url


@contextmanager
def hanging_api() -> Iterator[tuple[str, list[float]]]:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers; yields its
    URL and the times connections were accepted."""
    srv = socket.create_server(("127.0.0.1", 0))
    accepted: list[float] = []
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(time.monotonic())
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        srv.close()


# --- Retries and the deadline ---------------------------------------------------------------


@pytest.mark.faults
def test_max_retries_4_means_at_most_5_requests_and_the_message_counts_them(
    site2_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROPFLOW_STAC__MAX_RETRIES", "4")
    proxy = FaultProxy(site2_api, always=503)
    with proxy.running() as url, pytest.raises(SearchGaveUpError) as err:
        search(SearchParams(api_url=url, provider=PC, aoi=INSIDE_35MNM))
    assert len(proxy.log) == 5, "1 request + 4 retries"
    message = str(err.value)
    assert "HTTP 503" in message and "after 4 retries" in message
    assert "5 HTTP request(s)" in message, message
    assert err.value.retryable is False


@pytest.mark.faults
def test_retries_are_per_request_and_the_search_counts_every_request(
    site2_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request gets its own retries; the count in the message is the search's total."""
    monkeypatch.setenv("CROPFLOW_STAC__MAX_RETRIES", "2")
    faults: dict[str, list[int | str | None]] = {
        "GET /": [503, 503],  # the root succeeds on its last allowed attempt
        "GET /collections": [503, 503, 503],  # one more than allowed: the search fails here
    }
    proxy = FaultProxy(site2_api, faults)
    with proxy.running() as url, pytest.raises(SearchGaveUpError) as err:
        search(SearchParams(api_url=url, provider=PC, aoi=INSIDE_35MNM))
    assert [out for _, out in proxy.route("GET", "/")][:3] == [503, 503, "ok"]
    assert [out for _, out in proxy.route("GET", "/collections")] == [503, 503, 503]
    assert f"{len(proxy.log)} HTTP request(s)" in str(err.value), (str(err.value), proxy.log)


@pytest.mark.faults
def test_a_hanging_api_fails_within_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timeout 30 s and 4 retries per request, but the search has 1.5 s in all."""
    deadline = 1.5
    monkeypatch.setenv("CROPFLOW_STAC__TIMEOUT_S", "30")
    monkeypatch.setenv("CROPFLOW_STAC__MAX_RETRIES", "4")
    monkeypatch.setenv("CROPFLOW_STAC__DEADLINE_S", str(deadline))
    with hanging_api() as (url, accepted):
        start = time.monotonic()
        with pytest.raises(SearchGaveUpError) as err:
            search(SearchParams(api_url=url, provider=PC, aoi=INSIDE_35MNM))
        elapsed = time.monotonic() - start
    assert deadline <= elapsed < deadline + 1.5, elapsed
    message = str(err.value)
    assert "deadline of 1.5 s" in message and "1 HTTP request(s)" in message, message
    assert len(accepted) == 1
    assert "CROPFLOW_STAC__DEADLINE_S" in (err.value.hint or "")


def test_the_deadline_covers_every_page(site2_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages that each answer within the timeout still stop at the search's deadline."""
    monkeypatch.setenv("CROPFLOW_STAC__MAX_RETRIES", "4")
    monkeypatch.setenv("CROPFLOW_STAC__TIMEOUT_S", "2")
    monkeypatch.setenv("CROPFLOW_STAC__DEADLINE_S", "2.5")
    # the first page answers; every later page request stalls 1.5 s then drops (each attempt
    # fails within its timeout, and 4 retries would take 7.5 s)
    plan: list[str | int | None] = [None, *["timeout"] * 20]
    proxy = FaultProxy(site2_api, {"POST /search": plan}, stall_s=1.5)
    start = time.monotonic()
    with proxy.running() as url, pytest.raises(SearchGaveUpError) as err:
        search(SearchParams(api_url=url, provider=PC, page_size=2))
    elapsed = time.monotonic() - start
    assert elapsed < 2.5 + 1.5, elapsed
    assert "deadline of 2.5 s" in str(err.value)
    assert [out for _, out in proxy.route("POST", "/search")][:2] == ["ok", "timeout"]
    assert f"{len(proxy.log)} HTTP request(s)" in str(err.value), (str(err.value), proxy.log)


@pytest.mark.faults
def test_a_search_that_gave_up_is_not_retried_by_its_task(
    prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Prefect search task (3 task-level retries, 10 s apart, for transient errors) does
    not multiply a search that used up its deadline: one search, one deadline."""
    from prefect import flow

    from tasks.search import search_items

    monkeypatch.setenv("CROPFLOW_STAC__TIMEOUT_S", "30")
    monkeypatch.setenv("CROPFLOW_STAC__DEADLINE_S", "1.0")

    @flow
    def one_search(params: SearchParams) -> Any:
        return search_items(params)

    with hanging_api() as (url, accepted):
        start = time.monotonic()
        with pytest.raises(SearchGaveUpError):
            one_search(SearchParams(api_url=url, provider=PC, aoi=INSIDE_35MNM))
        elapsed = time.monotonic() - start
    assert len(accepted) == 1, "no task-level retry"
    assert elapsed < 8.0, elapsed


# --- Guards before and during the search ----------------------------------------------------


def test_a_continent_sized_aoi_is_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    area = parse_aoi(EUROPE).area_km2()
    assert 12.5e6 < area < 13.5e6, area  # 50 x 35 degrees around 52 N
    with pytest.raises(AOIError, match=r"covers 13,0[0-9]{2},[0-9]{3} km²") as err:
        search(SearchParams(api_url=REMOTE, provider=PC, aoi=EUROPE))
    assert "CROPFLOW_STAC__MAX_AOI_KM2" in (err.value.hint or "")
    polygon = {
        "type": "Polygon",
        "coordinates": [[[-10, 35], [40, 35], [40, 70], [-10, 35]]],
    }
    with pytest.raises(AOIError, match="km²"):
        resolve(SearchParams(api_url=REMOTE, provider=PC, aoi=polygon))
    # raised on purpose, it is searched; a small AOI always is; a local API has no limit
    monkeypatch.setenv("CROPFLOW_STAC__MAX_AOI_KM2", "2e7")
    assert resolve(SearchParams(api_url=REMOTE, provider=PC, aoi=EUROPE)).aoi is not None
    monkeypatch.delenv("CROPFLOW_STAC__MAX_AOI_KM2")
    assert resolve(SearchParams(api_url=REMOTE, provider=PC, aoi=INSIDE_35MNM)).aoi is not None
    local = resolve(SearchParams(api_url="http://127.0.0.1:9", provider=PC, aoi=EUROPE))
    assert local.aoi is not None
    assert get_settings().stac.max_aoi_km2 == 250_000


def test_too_many_items_stop_the_search_with_how_to_narrow_it(
    site2_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROPFLOW_STAC__MAX_ITEMS", "5")
    with pytest.raises(ConfigError, match="matches more than 5 items") as err:
        search(SearchParams(api_url=site2_api, provider=PC, page_size=2))
    message, hint = str(err.value), err.value.hint or ""
    assert "HTTP request(s)" in message
    assert "smaller AOI" in hint and "max_items" in hint and "CROPFLOW_STAC__MAX_ITEMS" in hint
    # a search that caps its own items takes the first ones
    assert len(search(SearchParams(api_url=site2_api, provider=PC, max_items=5))) == 5
    monkeypatch.setenv("CROPFLOW_STAC__MAX_ITEMS", "13")
    assert len(search(SearchParams(api_url=site2_api, provider=PC, page_size=4))) == 13


def test_lon_lat_swap_hints(site2_api: str) -> None:
    # latitudes over 90: only lat,lon order makes sense of it
    with pytest.raises(AOIError, match="did you swap lon/lat") as err:
        parse_aoi("52.1,113.6,52.2,113.8")
    assert "113.6,52.1,113.8,52.2" in (err.value.hint or "")
    with pytest.raises(AOIError, match="did you swap lon/lat") as err:
        parse_aoi(
            {"type": "Polygon", "coordinates": [[[-7, 120], [-7, 121], [-8, 121], [-7, 120]]]}
        )
    assert "[lon, lat]" in (err.value.hint or "")
    # valid either way, and nothing there: the hint offers the other order
    swapped = "-7.9,27.3,-7.7,27.5"
    with pytest.raises(EmptySearchError) as empty:
        search(SearchParams(api_url=site2_api, provider=PC, aoi=swapped))
    assert "did you swap lon/lat" in (empty.value.hint or "")
    assert INSIDE_35MNM in (empty.value.hint or "")
    assert len(search(SearchParams(api_url=site2_api, provider=PC, aoi=INSIDE_35MNM))) == 13
