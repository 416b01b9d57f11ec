"""Provider-neutral reading of Sentinel-2 item metadata: tile, processing baseline, clouds.

Each provider spells these differently (Earth Search v1 ``mgrs:*`` / ``grid:code``, Earth
Search v0 ``sentinel:*``, Planetary Computer ``s2:mgrs_tile``); these helpers try them all.
"""

from __future__ import annotations

import re
from typing import Any

import pystac

#: Properties that carry the processing baseline as text, e.g. ``"05.11"``.
_BASELINE_PROPERTIES = ("s2:processing_baseline", "sentinel:processing_baseline")
#: Properties holding an ESA product name, whose ``_Nxxyy_`` part is the baseline.
_PRODUCT_NAME_PROPERTIES = ("s2:product_uri", "sentinel:product_id", "s2:product_id")
_BASELINE_TEXT = re.compile(r"^\s*(\d{1,2})\.(\d{1,2})\s*$")
_BASELINE_IN_NAME = re.compile(r"_N(\d{2})(\d{2})_")
_TILE_IN_ID = re.compile(r"(?:^|_)T?(\d{1,2}[C-X][A-Z]{2})(?:_|$)")


def processing_baseline(item: pystac.Item) -> tuple[int, int] | None:
    """The ESA processing baseline as ``(major, minor)``, e.g. ``(5, 11)``; None if unknown.

    Read from ``s2:processing_baseline`` / ``sentinel:processing_baseline``, else from the
    ``_Nxxyy_`` part of the ESA product name (``s2:product_uri``, ``sentinel:product_id``).
    """
    props = item.properties
    for key in _BASELINE_PROPERTIES:
        value = props.get(key)
        if isinstance(value, str) and (m := _BASELINE_TEXT.match(value)):
            return int(m.group(1)), int(m.group(2))
    for key in _PRODUCT_NAME_PROPERTIES:
        value = props.get(key)
        if isinstance(value, str) and (m := _BASELINE_IN_NAME.search(value)):
            return int(m.group(1)), int(m.group(2))
    return None


def format_baseline(baseline: tuple[int, int] | None) -> str | None:
    """``(5, 11)`` -> ``"05.11"``."""
    return None if baseline is None else f"{baseline[0]:02d}.{baseline[1]:02d}"


def _mgrs(zone: Any, band: Any, square: Any) -> str | None:
    if zone is None or not band or not square:
        return None
    try:
        return f"{int(zone):02d}{str(band).upper()}{str(square).upper()}"
    except (TypeError, ValueError):
        return None


def tile_id(item: pystac.Item) -> str | None:
    """The MGRS tile of a Sentinel-2 item, e.g. ``"35MNM"``; None if the item names none."""
    props = item.properties
    tile = props.get("s2:mgrs_tile")
    if isinstance(tile, str) and tile:
        return tile.upper()
    for prefix in ("mgrs", "sentinel"):
        found = _mgrs(
            props.get(f"{prefix}:utm_zone"),
            props.get(f"{prefix}:latitude_band"),
            props.get(f"{prefix}:grid_square"),
        )
        if found:
            return found
    code = props.get("grid:code")
    if isinstance(code, str) and code.upper().startswith("MGRS-"):
        return code[5:].upper()
    if m := _TILE_IN_ID.search(item.id):
        zone = m.group(1)
        return zone.zfill(5)
    return None


def cloud_cover(item: pystac.Item) -> float | None:
    """``eo:cloud_cover`` in percent, or None when the item does not state it."""
    value = item.properties.get("eo:cloud_cover")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def product_timestamp(item: pystac.Item) -> str:
    """A sortable text saying how recent an item's processing is (for tie-breaking dedupe)."""
    props = item.properties
    for key in ("s2:generation_time", "updated", "created"):
        value = props.get(key)
        if isinstance(value, str) and value:
            return value
    return ""
