"""The search flow: STAC search -> saved ItemCollection + summary artifacts."""

from __future__ import annotations

from prefect import flow

from cropflow.stac.params import SearchParams
from cropflow.stac.search import SearchResult
from tasks.search import publish_search_summary, search_items


@flow(name="search", log_prints=True)
def search_flow(params: SearchParams | None = None) -> SearchResult:
    """Search a STAC API for Sentinel-2 L2A items; save them and publish a summary.

    ``params=None`` searches with every default (the local demo catalog unless configured).
    """
    result = search_items(params or SearchParams())
    publish_search_summary(result)
    return result
