"""Search parameters: the one typed home of the search's defaults, light to import (the CLI
and the Prefect forms read them without loading pystac-client)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SearchParams(BaseModel):
    """What to search for. Unset fields come from ``settings.stac`` or the provider profile."""

    model_config = ConfigDict(extra="forbid")

    api_url: str | None = Field(
        None,
        description="STAC API root URL. Unset: `catalog`, else settings.stac.api_url, else the "
        "profile's public API, else the local demo catalog served on 127.0.0.1.",
    )
    catalog: str | None = Field(
        None,
        description="A local STAC source searched instead of an API: a static catalog (links "
        "followed relative to it), an ItemCollection, newline-delimited items or a folder "
        "holding collection.json + items.json; served on 127.0.0.1 for the search.",
    )
    provider: str | None = Field(
        None,
        description="Collection profile: a built-in name (local-demo, earth-search-v1, "
        "planetary-computer, planetary-computer-landsat, ...) or the path of your own profile "
        "YAML (docs/DATA.md). Unset: settings.stac.provider.",
    )
    collections: list[str] | None = Field(
        None, description="Collections to search. Unset: the profile's first collection."
    )
    aoi: str | dict[str, Any] | list[float] | None = Field(
        None,
        description="Area of interest: a GeoJSON file path, a GeoJSON object, or a bbox "
        "'min_lon,min_lat,max_lon,max_lat'. Unset: no spatial filter (local APIs only).",
    )
    datetime: str | None = Field(
        None,
        description="Date or interval, e.g. '2021-03-01/2021-10-31' ('..' for an open end). "
        "Unset: any time.",
    )
    max_cloud_cover: float | None = Field(
        None, ge=0, le=100, description="Keep items whose eo:cloud_cover (%) is at most this."
    )
    filter: dict[str, Any] | str | None = Field(
        None,
        description="CQL2 filter (JSON object or text) sent to the API as it is; the API must "
        "support the STAC Filter extension.",
    )
    max_items: int | None = Field(
        None, gt=0, description="Stop after this many items from the API (before dedupe)."
    )
    page_size: int | None = Field(
        None, gt=0, le=1000, description="Items per page. Unset: settings.stac.page_size."
    )
    dedupe: bool = Field(
        True,
        description="Drop reprocessed duplicates (same tile and datetime), keeping the newest "
        "processing baseline.",
    )
