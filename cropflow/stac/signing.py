"""Provider profiles: each provider's asset keys and radiometry, mapped to one band vocabulary.

A profile turns (item, band name) into a :class:`~cropflow.bands.BandRule`: which asset, which
href (signed where the provider needs it), and how stored numbers become reflectance
(``value = stored * scale + offset``). Downstream code never sees a provider's asset keys.

The Sentinel-2 L2A offset, decided from the evidence of the real items in
``../shared/fixtures/stac`` and the providers' own statements:

* ESA processing baseline >= 04.00 (from 2022-01-25, and every Collection-1 reprocessing)
  stores ``DN = reflectance * 10000 + 1000`` (``BOA_ADD_OFFSET = -1000``), so the offset in
  reflectance is ``-1000 / 10000 = -0.1``; earlier baselines store ``reflectance * 10000``.
* Planetary Computer republishes ESA's DN unchanged and states no scale/offset in its items,
  so the baseline alone decides (microsoft/PlanetaryComputer#134).
* Earth Search (v0 ``sentinel-s2-l2a-cogs`` and v1 ``sentinel-2-l2a``) subtracted the offset
  from the pixels of most baseline >= 04.00 scenes when converting them to COGs ("harmonised")
  and marks those items ``sentinel:boa_offset_applied`` / ``earthsearch:boa_offset_applied``
  = true (cirrus-geo/cirrus-earth-search#21, Element84/earth-search#23). Their v1 items still
  carry ``raster:bands`` offset -0.1 even then, while the collection's ``item_assets`` say 0;
  Element84 calls the flag the truth (Element84/earth-search#9). Rule: flag true -> offset 0;
  flag false or absent -> the baseline rule. The v1 ``sentinel-2-c1-l2a`` items (ESA
  Collection 1, DN unchanged, no flag, baseline >= 05.00) get -0.1 from the same rule, which is
  what their ``raster:bands`` state. Known catalogue errors remain: some v1 items flagged false
  already have harmonised pixels (Element84/earth-search#66, #71); metadata cannot reveal them.
* The local demo catalog is written by cropflow itself, so its ``raster:bands`` are taken as
  they are (the baseline rule only when they are missing).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, urlparse

import pystac

from cropflow.bands import S2_SPECTRAL, SCL, BandRule
from cropflow.errors import ProviderError
from cropflow.settings import get_settings
from cropflow.stac.metadata import processing_baseline

log = logging.getLogger(__name__)

#: ESA's L2A quantification: stored DN per unit of reflectance.
BOA_QUANTIFICATION = 10000.0
#: ESA's BOA_ADD_OFFSET (in DN) from processing baseline 04.00 on.
BOA_ADD_OFFSET_DN = -1000.0
#: The first processing baseline that stores the +1000 DN offset.
OFFSET_BASELINE = (4, 0)
#: Sentinel-2 L2A nodata (DN 0 is "no data" in every band, SCL included).
S2_NODATA = 0.0

#: Every band of the vocabulary that a Sentinel-2 L2A profile can map, in vocabulary order.
VOCABULARY: tuple[str, ...] = (*S2_SPECTRAL, SCL)

#: Earth Search v1 and the local demo: asset key == band name.
_LOWERCASE_KEYS: Mapping[str, str] = MappingProxyType({b: b for b in VOCABULARY})
#: Earth Search v0 and Planetary Computer: ESA band ids.
_ESA_KEYS: Mapping[str, str] = MappingProxyType(
    {**{name: esa for name, (_, esa) in S2_SPECTRAL.items()}, SCL: "SCL"}
)
_NATIVE_RESOLUTION: Mapping[str, float] = MappingProxyType(
    {**{name: float(res) for name, (res, _) in S2_SPECTRAL.items()}, SCL: 20.0}
)


class OffsetSource(StrEnum):
    """Where a profile takes the reflectance offset from."""

    BASELINE = "baseline"
    """ESA's rule: -0.1 from processing baseline 04.00, else 0 (the provider's flag first)."""
    RASTER_BANDS = "raster-bands"
    """The item's ``raster:bands`` offset (the baseline rule when absent)."""


@dataclass(frozen=True)
class ProviderProfile:
    """How one provider publishes Sentinel-2 L2A: collections, asset keys, radiometry, signing."""

    name: str
    description: str
    collections: tuple[str, ...]
    """Sentinel-2 L2A collections this profile maps; the first is the default."""
    api_url: str | None
    """Public STAC API root; None for the local demo (served on 127.0.0.1)."""
    asset_keys: Mapping[str, str] = field(repr=False)
    """Band name -> asset key."""
    offset_source: OffsetSource = OffsetSource.BASELINE
    harmonised_flag: str | None = None
    """Item property that, when true, says the pixels already have the offset removed."""
    sign_hrefs: bool = False

    @property
    def default_collection(self) -> str:
        """The collection searched when none is given."""
        return self.collections[0]

    def check_item(self, item: pystac.Item) -> None:
        """Raise ProviderError unless the item is from a collection this profile maps."""
        if item.collection_id is not None and item.collection_id not in self.collections:
            raise ProviderError(
                f"item {item.id!r} is from collection {item.collection_id!r}, which provider "
                f"profile {self.name!r} does not map (it maps {', '.join(self.collections)})",
                hint="search a Sentinel-2 L2A collection, or use the profile of the provider "
                "that served the item",
            )

    def bands_available(self, item: pystac.Item) -> list[str]:
        """Band names (vocabulary order) whose asset this item has."""
        return [b for b in VOCABULARY if self.asset_keys[b] in item.assets]

    def band_rule(self, item: pystac.Item, band: str) -> BandRule:
        """How to read ``band`` of ``item``: asset, href, scale, offset, nodata, resolution."""
        self.check_item(item)
        if band not in self.asset_keys:
            raise ProviderError(
                f"unknown band {band!r} asked of item {item.id!r}",
                hint=f"use a band name of the vocabulary: {', '.join(VOCABULARY)}",
            )
        key = self.asset_keys[band]
        asset = item.assets.get(key)
        if asset is None:
            raise ProviderError(
                f"item {item.id!r} has no asset {key!r} for band {band!r}; it has bands "
                f"{', '.join(self.bands_available(item)) or 'none'}",
                hint="ask only for bands the items have, or check the provider profile",
            )
        raster = _raster_band(asset)
        nodata = _as_float(raster.get("nodata"), S2_NODATA)
        if band == SCL:
            scale, offset = 1.0, 0.0
        else:
            scale = _as_float(raster.get("scale"), 1.0 / BOA_QUANTIFICATION)
            offset = self._reflectance_offset(item, band, raster)
        href = asset.get_absolute_href() or asset.href
        if self.sign_hrefs:
            href = sign_href(href)
        return BandRule(
            band=band,
            asset_key=key,
            href=href,
            scale=scale,
            offset=offset,
            nodata=nodata,
            resolution=_resolution(asset, raster, band),
        )

    def _reflectance_offset(self, item: pystac.Item, band: str, raster: Mapping[str, Any]) -> float:
        if self.harmonised_flag and item.properties.get(self.harmonised_flag) is True:
            return 0.0
        if self.offset_source is OffsetSource.RASTER_BANDS and "offset" in raster:
            return _as_float(raster.get("offset"), 0.0)
        baseline = processing_baseline(item)
        if baseline is None:
            raise ProviderError(
                f"item {item.id!r} states no processing baseline, so the reflectance offset of "
                f"band {band!r} is unknown",
                hint="use items that carry s2:processing_baseline (or an ESA product name)",
            )
        return BOA_ADD_OFFSET_DN / BOA_QUANTIFICATION if baseline >= OFFSET_BASELINE else 0.0


def _raster_band(asset: pystac.Asset) -> Mapping[str, Any]:
    bands = asset.extra_fields.get("raster:bands")
    if isinstance(bands, list) and bands and isinstance(bands[0], dict):
        return bands[0]
    return {}


def _as_float(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return float(value)


def _resolution(asset: pystac.Asset, raster: Mapping[str, Any], band: str) -> float:
    transform = asset.extra_fields.get("proj:transform")
    if isinstance(transform, list) and len(transform) >= 6 and transform[0]:
        return abs(float(transform[0]))
    res = raster.get("spatial_resolution")
    if isinstance(res, int | float) and not isinstance(res, bool) and res > 0:
        return float(res)
    return _NATIVE_RESOLUTION[band]


# --- Planetary Computer signing -------------------------------------------------------------

_BLOB_DOMAIN = ".blob.core.windows.net"
_warned_unsigned = False


def sign_href(href: str) -> str:
    """Sign an Azure Blob href with a Planetary Computer SAS token (other hrefs unchanged).

    Uses the ``planetary-computer`` package when it is installed (``pip install
    'cropflow[pc]'``); without it the href is returned unsigned with a one-time warning.
    Token requests retry like STAC requests (``settings.stac.max_retries`` / ``backoff_s``).
    """
    parsed = urlparse(href)
    if not parsed.netloc.endswith(_BLOB_DOMAIN) or {"st", "se", "sp"} & set(parse_qs(parsed.query)):
        return href
    try:
        from planetary_computer.sas import get_token
    except ImportError:
        global _warned_unsigned
        if not _warned_unsigned:
            log.warning(
                "planetary-computer is not installed: Planetary Computer hrefs stay unsigned "
                "and reading them will fail (pip install 'cropflow[pc]')"
            )
            _warned_unsigned = True
        return href
    account = parsed.netloc[: -len(_BLOB_DOMAIN)]
    container = parsed.path.lstrip("/").split("/", 1)[0]
    stac = get_settings().stac
    try:
        token = get_token(
            account, container, retry_total=stac.max_retries, retry_backoff_factor=stac.backoff_s
        )
    except Exception as exc:  # requests/pydantic errors from the token service
        raise ProviderError(
            f"could not get a Planetary Computer SAS token for {href!r}: {exc}",
            hint="check the network, or set PC_SDK_SUBSCRIPTION_KEY / PC_SDK_SAS_URL",
        ) from None
    signed: str = token.sign(href).href
    return signed


# --- The profiles ---------------------------------------------------------------------------

_PROFILES: Mapping[str, ProviderProfile] = MappingProxyType(
    {
        p.name: p
        for p in (
            ProviderProfile(
                name="local-demo",
                description="The bundled demo catalog (Earth Search v1-shaped items).",
                collections=("sentinel-2-l2a",),
                api_url=None,
                asset_keys=_LOWERCASE_KEYS,
                offset_source=OffsetSource.RASTER_BANDS,
            ),
            ProviderProfile(
                name="earth-search-v1",
                description="Element84 Earth Search v1 (AWS open data COGs).",
                collections=("sentinel-2-l2a", "sentinel-2-c1-l2a"),
                api_url="https://earth-search.aws.element84.com/v1",
                asset_keys=_LOWERCASE_KEYS,
                harmonised_flag="earthsearch:boa_offset_applied",
            ),
            ProviderProfile(
                name="earth-search-v0",
                description="Element84 Earth Search v0 (legacy sentinel-s2-l2a-cogs).",
                collections=("sentinel-s2-l2a-cogs",),
                api_url="https://earth-search.aws.element84.com/v0",
                asset_keys=_ESA_KEYS,
                harmonised_flag="sentinel:boa_offset_applied",
            ),
            ProviderProfile(
                name="planetary-computer",
                description="Microsoft Planetary Computer (Azure Blob COGs, SAS-signed).",
                collections=("sentinel-2-l2a",),
                api_url="https://planetarycomputer.microsoft.com/api/stac/v1",
                asset_keys=_ESA_KEYS,
                sign_hrefs=True,
            ),
        )
    }
)


def profile_names() -> list[str]:
    """Names of the known provider profiles."""
    return list(_PROFILES)


def get_profile(name: str) -> ProviderProfile:
    """The profile called ``name``; ProviderError listing the known ones otherwise."""
    try:
        return _PROFILES[name]
    except KeyError:
        raise ProviderError(
            f"unknown provider {name!r}",
            hint=f"use one of: {', '.join(_PROFILES)} (setting CROPFLOW_STAC__PROVIDER)",
        ) from None
