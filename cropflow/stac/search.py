"""STAC item search: parameters, the search itself, dedupe, and the saved result.

``search(params)`` resolves the parameters (settings fill what is unset), checks them before
any request (on a remote API: an AOI of at most ``settings.stac.max_aoi_km2``), searches any
STAC API with pystac-client (paging; each request retried at most ``max_retries`` times with
backoff on 429/5xx/timeouts; every request counted, all of them within one deadline,
``settings.stac.deadline_s``; at most ``settings.stac.max_items`` items), keeps items under the
cloud-cover limit, drops reprocessed duplicates and returns an ``ItemCollection`` sorted by
time. ``save_search`` writes it atomically under ``workdir/searches/<key>/`` and returns a
small :class:`SearchResult` to pass on by reference. No credential of the API URL reaches a
message, a log or a saved file (:mod:`cropflow.redact`).

With no API URL anywhere (parameters, settings, provider), the local demo catalog
(``settings.demo_dir / "stac"``) is served on 127.0.0.1 for the duration of the search.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date
from datetime import datetime as Datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pystac
import requests
from pydantic import BaseModel, Field
from pystac_client import Client
from pystac_client.conformance import ConformanceClasses
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter
from requests.exceptions import ChunkedEncodingError
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from cropflow.errors import (
    AOIError,
    ConfigError,
    CropflowError,
    DataError,
    EmptySearchError,
    ProviderError,
    StacError,
)
from cropflow.redact import redact, redact_data, unsigned_href
from cropflow.settings import StacSettings, get_settings
from cropflow.stac.aoi import AOI, parse_aoi
from cropflow.stac.metadata import (
    cloud_cover,
    format_baseline,
    processing_baseline,
    product_timestamp,
    tile_id,
)
from cropflow.stac.params import SearchParams
from cropflow.stac.profiles import CollectionProfile, get_profile
from cropflow.stac.server import LocalStacServer, demo_catalog_files
from cropflow.storage import atomic_write, storage_errors

log = logging.getLogger(__name__)

#: HTTP statuses answered by retrying with backoff.
RETRY_STATUSES = (429, 500, 502, 503, 504)
#: Key of the provenance block stored in a saved ItemCollection.
PROVENANCE_KEY = "cropflow:search"
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_PARTIAL_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


@dataclass(frozen=True)
class ResolvedSearch:
    """Search parameters with every default filled in and every input checked."""

    api_url: str | None
    """None: a local catalog (``catalog``, else the demo's)."""
    catalog: str | None
    profile: CollectionProfile
    collections: list[str]
    aoi: AOI | None
    datetime: str | None
    max_cloud_cover: float | None
    filter: dict[str, Any] | str | None
    max_items: int | None
    page_size: int
    dedupe: bool
    stac: StacSettings

    def describe(self) -> str:
        """The search in words, for messages."""
        parts = [f"collections {', '.join(self.collections)}"]
        parts.append(f"AOI {self.aoi.describe()}" if self.aoi else "no AOI")
        parts.append(f"datetime {self.datetime or 'any'}")
        if self.max_cloud_cover is not None:
            parts.append(f"max cloud cover {self.max_cloud_cover:g} %")
        if self.filter is not None:
            parts.append("a CQL2 filter")
        return ", ".join(parts)


# --- Checking and resolving the parameters --------------------------------------------------


def _parse_instant(text: str, whole: str) -> date:
    """The date of one end of a datetime interval (a date, year(-month), or RFC 3339 time)."""
    try:
        if _PARTIAL_DATE.match(text):
            return date.fromisoformat((text + "-01-01")[:10] if len(text) < 10 else text)
        return Datetime.fromisoformat(text.replace("z", "Z")).date()
    except ValueError:
        raise ConfigError(
            f"datetime {whole!r}: {text!r} is not a date or timestamp",
            hint="use e.g. 2021-03-01/2021-10-31 or 2021-06-01T10:00:00Z ('..' for an open end)",
        ) from None


def check_datetime(value: str | None) -> str | None:
    """Check a STAC datetime (a date, a timestamp, or an interval); returns it stripped."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    ends = text.split("/")
    if len(ends) > 2:
        raise ConfigError(f"datetime {value!r} has more than one '/'", hint="use start/end")
    parsed = [None if e.strip() in ("", "..") else _parse_instant(e.strip(), value) for e in ends]
    if all(p is None for p in parsed):
        raise ConfigError(f"datetime {value!r} is open at both ends", hint="give a date")
    start, end = parsed[0], parsed[-1]
    if len(parsed) == 2 and start is not None and end is not None and start > end:
        raise ConfigError(
            f"datetime {value!r} starts after it ends", hint="write the interval as start/end"
        )
    return text


def _check_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(
            f"STAC API URL {redact(url)!r} is not an http(s) URL",
            hint="give the API root, e.g. https://earth-search.aws.element84.com/v1",
        )
    return url.rstrip("/")


def _check_catalog(value: str) -> str:
    path = Path(url2pathname(urlparse(value).path) if value.startswith("file://") else value)
    path = path.expanduser()
    if not path.exists():
        raise ConfigError(
            f"STAC catalog {value!r} does not exist",
            hint="give a catalog.json / collection.json, an ItemCollection, an .ndjson file, or "
            "a folder holding collection.json + items.json",
        )
    return str(path.resolve())


def _is_local(url: str | None) -> bool:
    return url is None or (urlparse(url).hostname or "") in _LOCAL_HOSTS


def check_remote_aoi(aoi: AOI | None, api_url: str, stac: StacSettings) -> None:
    """A remote API is searched only within an AOI of at most ``stac.max_aoi_km2`` (geodesic
    area): ConfigError/AOIError before any request otherwise."""
    shown = redact(api_url)
    if aoi is None:
        raise ConfigError(
            f"no AOI given for the remote STAC API {shown}",
            hint="give an AOI (GeoJSON file or bbox) so the search does not cover the world",
        )
    area = aoi.area_km2()
    if area > stac.max_aoi_km2:
        swap = aoi.swap_hint()
        raise AOIError(
            f"AOI {aoi.describe()} covers {area:,.0f} km², more than the {stac.max_aoi_km2:,.0f}"
            f" km² searched on a remote STAC API ({shown}) at once",
            hint=(f"{swap}; otherwise " if swap else "")
            + "search a smaller area (split it into regions), or raise "
            "CROPFLOW_STAC__MAX_AOI_KM2 to search this one on purpose",
        )


def resolve(params: SearchParams) -> ResolvedSearch:
    """Fill unset parameters from settings and the provider profile; check every input."""
    stac = get_settings().stac
    profile = get_profile(params.provider or stac.provider)
    if params.api_url and params.catalog:
        raise ConfigError(
            "both api_url and catalog are given", hint="search either an API or a local catalog"
        )
    catalog = _check_catalog(params.catalog) if params.catalog else None
    raw_url = None if catalog else (params.api_url or stac.api_url or profile.api_url)
    api_url = _check_url(raw_url) if raw_url else None
    collections = list(params.collections or [profile.default_collection])
    if not collections or any(not c.strip() for c in collections):
        raise ConfigError(f"collections {collections!r} has an empty name", hint="name them")
    if any(ch in c for c in collections for ch in "*?["):
        raise ConfigError(
            f"collections {collections} are patterns (collection profile {profile.name!r} "
            "names no default collection)",
            hint="name the collection ids to search (collections: [...])",
        )
    unmapped = [c for c in collections if not profile.matches(c)]
    if unmapped:
        raise ProviderError(
            f"collection(s) {', '.join(unmapped)} not mapped by collection profile "
            f"{profile.name!r} (it maps {', '.join(profile.collections)})",
            hint="use the profile of that collection (`cropflow profiles` lists them; or your "
            "own YAML file, docs/DATA.md), or add the collection id to the profile",
        )
    aoi = parse_aoi(params.aoi) if params.aoi is not None else None
    if not _is_local(api_url):
        check_remote_aoi(aoi, api_url or "", stac)
    return ResolvedSearch(
        api_url=api_url,
        catalog=catalog,
        profile=profile,
        collections=collections,
        aoi=aoi,
        datetime=check_datetime(params.datetime),
        max_cloud_cover=params.max_cloud_cover,
        filter=params.filter,
        max_items=params.max_items,
        page_size=params.page_size or stac.page_size,
        dedupe=params.dedupe,
        stac=stac,
    )


# --- Talking to the API ---------------------------------------------------------------------


class SearchGaveUpError(StacError):
    """A search used up its retries or its deadline.

    Not retried again as a whole (``retryable``): the HTTP layer already retried each request
    within ``settings.stac.deadline_s``, and a task-level retry would multiply the requests and
    the time the settings allow.
    """

    retryable = False


class SearchBudget:
    """The HTTP requests and the time one search has used, against ``settings.stac``.

    Every attempt is counted (retries and pages included); the deadline covers them all.
    """

    def __init__(self, stac: StacSettings) -> None:
        self.stac = stac
        self.started = time.monotonic()
        self.requests = 0
        self.deadline_hit = False

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def remaining_s(self) -> float:
        return self.stac.deadline_s - self.elapsed_s

    def describe(self) -> str:
        """``N HTTP request(s) in S s`` for messages."""
        return f"{self.requests} HTTP request(s) in {self.elapsed_s:.1f} s"


class _DeadlineReachedError(Exception):
    """Raised in the HTTP layer when a search's deadline is reached (becomes an APIError)."""


def _retry_after_s(response: Response) -> float:
    """The server's Retry-After (seconds or an HTTP date) in seconds; 0 when absent."""
    value = response.headers.get("Retry-After")
    if not value:
        return 0.0
    try:
        return max(0.0, float(Retry().parse_retry_after(value)))
    except (ValueError, TypeError, InvalidHeader):
        return 0.0


class BudgetAdapter(HTTPAdapter):
    """Sends each request with its retries, counting every attempt against a search's budget.

    A request is tried at most ``max_retries + 1`` times: again after a connection error, a
    timeout (connecting, or reading the headers or the body) or HTTP 429/5xx, after
    ``backoff_s * 2**n`` seconds (or the server's Retry-After when longer). Each attempt's
    timeout is ``timeout_s`` cut to the time left before the search's deadline; a retry whose
    wait would pass the deadline is not made.
    """

    def __init__(self, budget: SearchBudget) -> None:
        super().__init__(max_retries=0)
        self.budget = budget

    def _deadline(self) -> _DeadlineReachedError:
        self.budget.deadline_hit = True
        deadline = self.budget.stac.deadline_s
        return _DeadlineReachedError(f"search deadline of {deadline:g} s reached")

    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: dict[str, str] | None = None,
    ) -> Response:
        stac = self.budget.stac
        attempt = 0
        while True:
            left = self.budget.remaining_s
            if left <= 0:
                raise self._deadline()
            self.budget.requests += 1
            try:
                response = super().send(
                    request,
                    stream=stream,
                    timeout=min(stac.timeout_s, left),
                    verify=verify,
                    cert=cert,
                    proxies=proxies,
                )
                if not stream:
                    _ = response.content  # the body too, within this attempt's timeout
            except (requests.ConnectionError, requests.Timeout, ChunkedEncodingError):
                if self.budget.remaining_s <= 0:
                    raise self._deadline() from None
                if attempt >= stac.max_retries:
                    raise
                wait = stac.backoff_s * 2**attempt
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= stac.max_retries:
                    return response  # a final error status is reported by the caller
                wait = max(stac.backoff_s * 2**attempt, _retry_after_s(response))
                response.close()
            if wait >= self.budget.remaining_s:
                raise self._deadline()
            time.sleep(wait)
            attempt += 1


def make_stac_io(stac: StacSettings, budget: SearchBudget) -> StacApiIO:
    """pystac-client's IO with :class:`BudgetAdapter` for http(s) (retries, count, deadline)."""
    stac_io = StacApiIO(timeout=stac.timeout_s, max_retries=None)
    adapter = BudgetAdapter(budget)
    stac_io.session.mount("http://", adapter)
    stac_io.session.mount("https://", adapter)
    return stac_io


def api_error(
    url: str, exc: APIError, stac: StacSettings, doing: str, budget: SearchBudget | None = None
) -> StacError:
    """A StacError for a failed request: which URL, what happened, how many requests and how
    long it took, what to change. URLs are redacted (no credential in any message)."""
    shown = redact(url)
    used = f"; {budget.describe()}" if budget is not None else ""
    if budget is not None and budget.deadline_hit:
        return SearchGaveUpError(
            f"STAC API {shown} did not finish within the search deadline of "
            f"{stac.deadline_s:g} s while {doing}: gave up after {budget.describe()} (up to "
            f"{stac.max_retries} retries per request, timeout {stac.timeout_s:g} s each)",
            hint="the API is hanging or very slow: try again later, or raise "
            "CROPFLOW_STAC__DEADLINE_S (and CROPFLOW_STAC__TIMEOUT_S)",
        )
    status: int | None = getattr(exc, "status_code", None)
    if status in RETRY_STATUSES:
        return SearchGaveUpError(
            f"STAC API {shown} answered HTTP {status} while {doing}, still after "
            f"{stac.max_retries} retries{used}: {_short(exc)}",
            hint="the service is failing or rate-limiting: try again later, or raise "
            "CROPFLOW_STAC__MAX_RETRIES / CROPFLOW_STAC__BACKOFF_S",
        )
    if status is not None:
        return StacError(
            f"STAC API {shown} answered HTTP {status} while {doing}: {_short(exc)}",
            hint="check the search parameters against the API's message",
        )
    return SearchGaveUpError(
        f"STAC API {shown} could not be reached while {doing} ({stac.max_retries} retries, "
        f"timeout {stac.timeout_s:g} s{used}): {_short(exc)}",
        hint="check the URL and the network, or raise CROPFLOW_STAC__TIMEOUT_S",
    )


def open_client(url: str, stac: StacSettings, budget: SearchBudget | None = None) -> Client:
    """Open a STAC API root with retries and a timeout; StacError if it is not one."""
    budget = budget or SearchBudget(stac)
    stac_io = make_stac_io(stac, budget)
    shown = redact(url)
    hint = "check the URL: it must be the root of a STAC API (the page listing conformsTo)"
    try:
        client = Client.open(url, stac_io=stac_io, timeout=stac.timeout_s)
    except APIError as exc:
        raise api_error(url, exc, stac, "reading its root", budget) from None
    except (ValueError, TypeError, KeyError, pystac.STACError, pystac.STACTypeError) as exc:
        raise StacError(
            f"{shown} is not a STAC API: its root is not a STAC catalog ({_short(exc)})",
            hint=hint,
        ) from None
    if not client.conforms_to(ConformanceClasses.ITEM_SEARCH):
        raise StacError(
            f"{shown} is not a STAC API with item search (no item-search conformance class)",
            hint=hint,
        )
    return client


def _short(exc: BaseException, limit: int = 300) -> str:
    """An exception's text on one line, redacted and cut to ``limit`` characters."""
    text = redact(" ".join(str(exc).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_collections(
    client: Client,
    url: str,
    wanted: Sequence[str],
    stac: StacSettings,
    budget: SearchBudget | None = None,
) -> None:
    """ProviderError naming the server's collections if one of ``wanted`` is not there."""
    try:
        available = sorted(c.id for c in client.get_collections())
    except APIError as exc:
        raise api_error(url, exc, stac, "listing its collections", budget) from None
    missing = [c for c in wanted if c not in available]
    if missing:
        shown = ", ".join(available[:40]) + (" ..." if len(available) > 40 else "")
        raise ProviderError(
            f"unknown collection(s) {', '.join(missing)} at {redact(url)}; it has: "
            f"{shown or 'none'}",
            hint="pick one of the server's collections",
        )


def _cloud_clause(limit: float) -> dict[str, Any]:
    return {"op": "<=", "args": [{"property": "eo:cloud_cover"}, limit]}


def build_search_kwargs(
    r: ResolvedSearch, supports_filter: bool, supports_query: bool, url: str = ""
) -> dict[str, Any]:
    """Keyword arguments for ``Client.search``: the user's filter passed through unchanged.

    The cloud-cover limit goes to the server when it can filter (CQL2, else the query
    extension); it is applied again on the client in every case.
    """
    if r.filter is not None and not supports_filter:
        raise StacError(
            f"STAC API {redact(url or r.api_url or '')} does not support CQL2 filters (no "
            "item-search#filter "
            "conformance class), so the filter was not sent",
            hint="drop the filter (use collections/datetime/AOI/max_cloud_cover) or use an API "
            "that supports the Filter extension",
        )
    kwargs: dict[str, Any] = {
        "collections": list(r.collections),
        "limit": r.page_size,
        "max_items": r.max_items,
    }
    if r.aoi is not None:
        if r.aoi.from_bbox:
            kwargs["bbox"] = list(r.aoi.bbox)
        else:
            kwargs["intersects"] = r.aoi.geojson()
    if r.datetime is not None:
        kwargs["datetime"] = r.datetime
    cql2 = r.filter
    if r.max_cloud_cover is not None:
        if supports_filter and (cql2 is None or isinstance(cql2, dict)):
            clause = _cloud_clause(r.max_cloud_cover)
            cql2 = clause if cql2 is None else {"op": "and", "args": [cql2, clause]}
        elif supports_filter and isinstance(cql2, str):
            cql2 = f"({cql2}) AND eo:cloud_cover <= {r.max_cloud_cover!r}"
        elif supports_query:
            kwargs["query"] = {"eo:cloud_cover": {"lte": r.max_cloud_cover}}
    if cql2 is not None:
        kwargs["filter"] = cql2
    return kwargs


@contextmanager
def api_root(r: ResolvedSearch) -> Iterator[str]:
    """The API URL to search; serves the local catalog (``catalog``, else the demo's) while in
    use when there is no API."""
    if r.api_url is not None:
        yield r.api_url
        return
    if r.catalog is not None:
        with LocalStacServer.from_source(r.catalog) as server:
            yield server.url
        return
    stac_dir = get_settings().demo_dir / "stac"
    collections, items, more = demo_catalog_files(stac_dir)
    if not (collections[0].is_file() and items.is_file()):
        raise ConfigError(
            f"no STAC API URL is set and there is no demo catalog in {stac_dir}",
            hint="set CROPFLOW_STAC__API_URL (or api_url), or generate the demo region first",
        )
    with LocalStacServer(collections, items, more_items=more) as server:
        yield server.url


def _too_many(r: ResolvedSearch, url: str, limit: int, budget: SearchBudget | None) -> ConfigError:
    used = f" after {budget.describe()}" if budget is not None else ""
    return ConfigError(
        f"the search at {redact(url)} matches more than {limit} items ({r.describe()}); "
        f"stopped{used}",
        hint="narrow it: a smaller AOI, a shorter datetime interval, a lower max_cloud_cover or "
        "fewer collections; or set the search's max_items to take only the first N; or raise "
        "CROPFLOW_STAC__MAX_ITEMS",
    )


def _fetch(
    client: Client,
    kwargs: dict[str, Any],
    url: str,
    stac: StacSettings,
    budget: SearchBudget | None = None,
    r: ResolvedSearch | None = None,
) -> tuple[list[pystac.Item], int]:
    """All items of all pages; the count of repeated ids (dropped) too.

    Unless the search caps its own items (``max_items``), more than ``settings.stac.max_items``
    distinct items stop it (ConfigError), before the next page is fetched.
    """
    limit = stac.max_items if r is not None and r.max_items is None else None
    seen: set[str] = set()
    items: list[pystac.Item] = []
    repeated = 0
    try:
        for item in client.search(**kwargs).items():
            if item.id in seen:
                repeated += 1
                continue
            seen.add(item.id)
            items.append(item)
            if limit is not None and r is not None and len(items) > limit:
                raise _too_many(r, url, limit, budget)
    except APIError as exc:
        raise api_error(url, exc, stac, "searching", budget) from None
    if repeated:
        log.warning("STAC API %s returned %d item(s) twice while paging", redact(url), repeated)
    return items, repeated


# --- After the search: cloud limit, dedupe, order ------------------------------------------


def within_cloud_limit(items: Sequence[pystac.Item], limit: float | None) -> list[pystac.Item]:
    """Items whose eo:cloud_cover is at most ``limit`` (items stating none are dropped)."""
    if limit is None:
        return list(items)
    return [it for it in items if (cc := cloud_cover(it)) is not None and cc <= limit]


def _acquisition(item: pystac.Item) -> tuple[str, str] | None:
    tile = tile_id(item)
    when = item.datetime
    if tile is None or when is None:
        return None
    return tile, when.replace(microsecond=0).isoformat()


def _recency(item: pystac.Item) -> tuple[tuple[int, int], str, str]:
    return (processing_baseline(item) or (-1, -1), product_timestamp(item), item.id)


def dedupe_items(items: Sequence[pystac.Item]) -> tuple[list[pystac.Item], list[pystac.Item]]:
    """Keep one item per acquisition (tile, datetime to the second): the newest baseline.

    Ties go to the later generation/update time, then the larger id (``..._1_L2A`` over
    ``..._0_L2A``). Items without a tile or datetime are all kept. Returns (kept, dropped).
    """
    best: dict[tuple[str, str], pystac.Item] = {}
    kept_order: list[pystac.Item | tuple[str, str]] = []
    dropped: list[pystac.Item] = []
    for item in items:
        key = _acquisition(item)
        if key is None:
            kept_order.append(item)
            continue
        current = best.get(key)
        if current is None:
            best[key] = item
            kept_order.append(key)
        elif _recency(item) > _recency(current):
            dropped.append(current)
            best[key] = item
        else:
            dropped.append(item)
    kept = [best[k] if isinstance(k, tuple) else k for k in kept_order]
    return kept, dropped


def _order(item: pystac.Item) -> tuple[str, str, str]:
    when = item.datetime.isoformat() if item.datetime else ""
    return (when, tile_id(item) or "", item.id)


# --- The search -----------------------------------------------------------------------------


def search(params: SearchParams) -> pystac.ItemCollection:
    """Search a STAC API; items sorted by time, provenance in ``extra_fields``.

    Raises ConfigError/AOIError/ProviderError for bad parameters (before any request),
    StacError when the API cannot be used, EmptySearchError when nothing matches.
    """
    r = resolve(params)
    with api_root(r) as url:
        budget = SearchBudget(r.stac)  # the deadline starts once a local server is up
        client = open_client(url, r.stac, budget)
        check_collections(client, url, r.collections, r.stac, budget)
        kwargs = build_search_kwargs(
            r,
            supports_filter=client.conforms_to(ConformanceClasses.FILTER),
            supports_query=client.conforms_to(ConformanceClasses.QUERY),
            url=url,
        )
        found, repeated = _fetch(client, kwargs, url, r.stac, budget, r)
    log.info("STAC search at %s: %d item(s), %s", redact(url), len(found), budget.describe())
    clear = within_cloud_limit(found, r.max_cloud_cover)
    kept, dropped = dedupe_items(clear) if r.dedupe else (clear, [])
    if not kept:
        cloudy = len(found) - len(clear)
        more = f" ({cloudy} item(s) over the cloud-cover limit)" if cloudy else ""
        where = redact(r.api_url or r.catalog or "the local demo catalog")
        swap = r.aoi.swap_hint() if r.aoi is not None and not found else None
        raise EmptySearchError(
            f"no items at {where} for {r.describe()}{more}",
            hint=(f"{swap}; otherwise " if swap else "")
            + "widen the dates or the AOI, raise max_cloud_cover, or check that the "
            "collection covers the AOI",
        )
    kept.sort(key=_order)
    provenance = {
        "api_url": redact(r.api_url)
        if r.api_url
        else (f"catalog:{r.catalog}" if r.catalog else "local-demo"),
        "http_requests": budget.requests,
        "provider": r.profile.reference,
        "collections": r.collections,
        "aoi": r.aoi.geojson() if r.aoi else None,
        "datetime": r.datetime,
        "max_cloud_cover": r.max_cloud_cover,
        "filter": r.filter,
        "max_items": r.max_items,
        "dedupe": r.dedupe,
        "n_found": len(found),
        "n_over_cloud_cover": len(found) - len(clear),
        "n_duplicates_dropped": len(dropped),
        "duplicates_dropped": sorted(it.id for it in dropped),
        "n_repeated_ids": repeated,
        "searched_at": Datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return pystac.ItemCollection(kept, extra_fields={PROVENANCE_KEY: provenance}, clone_items=False)


# --- Summary and saved result ---------------------------------------------------------------


class ItemRow(BaseModel):
    """One found item, for the summary table."""

    id: str
    datetime: str | None
    tile: str | None
    cloud_cover: float | None
    baseline: str | None
    collection: str | None


class SearchSummary(BaseModel):
    """What a search found: counts, dates, tiles, cloud cover, and one row per item."""

    provider: str
    api_url: str
    n_items: int
    collections: list[str]
    dates: list[str] = Field(description="Distinct acquisition dates (YYYY-MM-DD), sorted.")
    tiles: list[str]
    cloud_cover_min: float | None
    cloud_cover_mean: float | None
    cloud_cover_max: float | None
    n_over_cloud_cover: int = 0
    n_duplicates_dropped: int = 0
    items: list[ItemRow]

    def table(self) -> list[dict[str, Any]]:
        """The per-item rows as plain dicts (a Prefect table artifact)."""
        return [row.model_dump() for row in self.items]

    def to_markdown(self) -> str:
        """A short Markdown report (a Prefect markdown artifact, or the CLI)."""
        span = f"{self.dates[0]} … {self.dates[-1]}" if self.dates else "-"
        if self.cloud_cover_mean is None:
            clouds = "not stated"
        else:
            clouds = (
                f"min {self.cloud_cover_min:.1f} / mean {self.cloud_cover_mean:.1f} / "
                f"max {self.cloud_cover_max:.1f} %"
            )
        rows = [
            ("provider", self.provider),
            ("API", self.api_url),
            ("collections", ", ".join(self.collections)),
            ("dates", f"{len(self.dates)} ({span})"),
            ("tiles", ", ".join(self.tiles) or "-"),
            ("cloud cover", clouds),
            (
                "dropped",
                f"{self.n_duplicates_dropped} reprocessed duplicate(s), "
                f"{self.n_over_cloud_cover} over the cloud-cover limit",
            ),
        ]
        lines = [f"### STAC search: {self.n_items} items", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in rows]
        return "\n".join(lines) + "\n"


def summarize(items: pystac.ItemCollection) -> SearchSummary:
    """The summary of a search result (uses its provenance block when present)."""
    prov: dict[str, Any] = items.extra_fields.get(PROVENANCE_KEY, {})
    rows = [
        ItemRow(
            id=it.id,
            datetime=it.datetime.isoformat() if it.datetime else None,
            tile=tile_id(it),
            cloud_cover=cloud_cover(it),
            baseline=format_baseline(processing_baseline(it)),
            collection=it.collection_id,
        )
        for it in items
    ]
    clouds = [r.cloud_cover for r in rows if r.cloud_cover is not None]
    collections = prov.get("collections") or sorted({r.collection for r in rows if r.collection})
    return SearchSummary(
        provider=str(prov.get("provider", "unknown")),
        api_url=redact(str(prov.get("api_url", "unknown"))),
        n_items=len(rows),
        collections=list(collections),
        dates=sorted({r.datetime[:10] for r in rows if r.datetime}),
        tiles=sorted({r.tile for r in rows if r.tile}),
        cloud_cover_min=min(clouds) if clouds else None,
        cloud_cover_mean=statistics.fmean(clouds) if clouds else None,
        cloud_cover_max=max(clouds) if clouds else None,
        n_over_cloud_cover=int(prov.get("n_over_cloud_cover", 0)),
        n_duplicates_dropped=int(prov.get("n_duplicates_dropped", 0)),
        items=rows,
    )


class SearchResult(BaseModel):
    """A saved search, passed between tasks by reference."""

    key: str = Field(description="Directory name under workdir/searches/.")
    uri: str = Field(description="file:// URI of the ItemCollection (GeoJSON) file.")
    provider: str = Field(
        description="Collection profile (name or file path) that maps the items' bands."
    )
    n_items: int
    summary: SearchSummary

    @property
    def path(self) -> Path:
        """The ItemCollection file as a local path."""
        return _uri_to_path(self.uri)


_KEY_FIELDS = (
    "api_url",
    "catalog",
    "provider",
    "collections",
    "aoi",
    "datetime",
    "max_cloud_cover",
    "filter",
    "max_items",
    "dedupe",
)


def search_key(items: pystac.ItemCollection, params: SearchParams) -> str:
    """A stable directory name for a search: provider plus a hash of the resolved query."""
    prov = items.extra_fields.get(PROVENANCE_KEY) or {}
    query = {k: prov.get(k) for k in _KEY_FIELDS} if prov else params.model_dump(mode="json")
    digest = hashlib.sha256(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()
    provider = str(prov.get("provider") or params.provider or "search")
    return f"{provider}-{digest[:12]}"


def saved_items_dict(items: pystac.ItemCollection) -> dict[str, Any]:
    """The ItemCollection as saved: no credential in it.

    Links (``root`` is the API URL as given, with its userinfo or token) are saved unsigned
    (:func:`~cropflow.redact.unsigned_href`); so are the asset hrefs of a collection profile
    that signs hrefs (e.g. Planetary Computer), which every read signs afresh. The provenance
    block is redacted. Asset hrefs of other profiles are saved as the API gave them.
    """
    data = items.to_dict(transform_hrefs=False)
    prov = data.get(PROVENANCE_KEY)
    signs = False
    if isinstance(prov, dict):
        data[PROVENANCE_KEY] = redact_data(prov)
        try:
            signs = get_profile(str(prov.get("provider"))).sign_hrefs
        except CropflowError:
            signs = False
    for feature in data.get("features", []):
        for link in feature.get("links", []):
            if isinstance(link.get("href"), str):
                link["href"] = unsigned_href(link["href"])
        if signs:
            for asset in (feature.get("assets") or {}).values():
                if isinstance(asset.get("href"), str):
                    asset["href"] = unsigned_href(asset["href"])
    for link in data.get("links", []) or []:
        if isinstance(link.get("href"), str):
            link["href"] = unsigned_href(link["href"])
    return data


def save_search(
    items: pystac.ItemCollection, params: SearchParams, workdir: Path | None = None
) -> SearchResult:
    """Write the ItemCollection (and a ``search.json`` record) atomically; the reference.

    Layout: ``<workdir>/searches/<key>/items.json`` and ``search.json``. A repeated search
    with the same parameters replaces both files in place (each by an atomic rename).
    """
    root = Path(workdir) if workdir is not None else get_settings().workdir
    key = search_key(items, params)
    out_dir = (root / "searches" / key).resolve()
    with storage_errors(out_dir.parent, "saving the search"):
        out_dir.mkdir(parents=True, exist_ok=True)
        items_path = out_dir / "items.json"
        atomic_write(items_path, json.dumps(saved_items_dict(items)))
    prov = items.extra_fields.get(PROVENANCE_KEY) or {}
    result = SearchResult(
        key=key,
        uri=items_path.as_uri(),
        provider=str(prov.get("provider") or params.provider or get_settings().stac.provider),
        n_items=len(items),
        summary=summarize(items),
    )
    with storage_errors(out_dir.parent, "saving the search"):
        atomic_write(out_dir / "search.json", result.model_dump_json(indent=2))
    return result


def _uri_to_path(uri: str | Path) -> Path:
    if isinstance(uri, Path):
        return uri
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # a path (or a drive letter)
        return Path(uri)
    raise DataError(
        f"search result {uri!r} is not a local file", hint="give a path or a file:// URI"
    )


def load_search(uri: str | Path) -> pystac.ItemCollection:
    """The ItemCollection saved by :func:`save_search` (path or ``file://`` URI)."""
    path = _uri_to_path(uri)
    if not path.is_file():
        raise DataError(f"search result {str(uri)!r} does not exist", hint="run the search again")
    try:
        return pystac.ItemCollection.from_file(str(path))
    except (ValueError, KeyError, TypeError, pystac.STACError, pystac.STACTypeError) as exc:
        raise DataError(
            f"search result {str(uri)!r} is not a STAC ItemCollection ({_short(exc)})",
            hint="run the search again",
        ) from None


def load_search_result(uri: str | Path) -> SearchResult:
    """The :class:`SearchResult` record saved beside an ItemCollection file."""
    record = _uri_to_path(uri).with_name("search.json")
    if not record.is_file():
        raise DataError(f"no search record beside {str(uri)!r}", hint="run the search again")
    return SearchResult.model_validate_json(record.read_text(encoding="utf-8"))


def search_and_save(params: SearchParams, workdir: Path | None = None) -> SearchResult:
    """:func:`search` then :func:`save_search` (the one call the Prefect task wraps)."""
    return save_search(search(params), params, workdir)
