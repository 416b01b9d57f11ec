"""Collection profiles: how one provider publishes one kind of collection, as data (YAML).

A profile says which STAC collections it matches, which asset holds each band (by any name:
``red``, ``ndvi``, ``vv``, ``elevation``...), what kind of quantity the band is, how stored
numbers become values (scale, offset and the rule that decides them), the nodata value, the
native resolution, and the cloud/quality mask. Nothing downstream sees a provider's asset keys:
the cube, the model contract and the products name bands as the profile does.

Built-in profiles live in ``cropflow/resources/profiles/<name>.yaml``; more can be added in a
folder (``CROPFLOW_STAC__PROFILES_DIR``) or given as a file path wherever a profile name is
accepted (``provider:`` of a region file, ``--provider``, ``CROPFLOW_STAC__PROVIDER``).
``docs/DATA.md`` documents the format with complete examples. In short::

    name: my-ndvi                       # optional; the file name otherwise
    description: MODIS NDVI composites
    collections: [mod13q1-ndvi]         # collection ids (fnmatch patterns); first = default
    api_url: null                       # the public STAC API, if any
    defaults: {kind: index, dtype: int16, scale: 0.0001, offset: 0, nodata: -3000}
    bands:
      ndvi: {asset: ndvi, resolution: 232}
    mask: null                          # or {band, encoding: classes|bits, nodata, groups, default}

Scale and offset are decided per item by the ordered sources in ``scale_from`` / ``offset_from``:
``item`` (the asset's ``raster:bands``), ``profile`` (the values declared here),
``s2-harmonised-flag`` (offset 0 when the item property named by ``harmonised_flag`` is true) and
``s2-baseline`` (ESA's rule: offset -0.1 from processing baseline 04.00 on, else 0). The first
source that knows decides; when none does, the item is refused before any pixel is read,
with the fix (declare ``scale``/``offset`` in the profile). Categorical bands are never scaled.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
import pystac
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pyproj import CRS
from pyproj.exceptions import CRSError

from cropflow.bands import BandRule
from cropflow.errors import ConfigError, ProviderError
from cropflow.stac.metadata import processing_baseline

#: Suffixes of profile files.
PROFILE_SUFFIXES = (".yaml", ".yml")
#: ESA's L2A quantification: stored DN per unit of reflectance.
BOA_QUANTIFICATION = 10000.0
#: ESA's BOA_ADD_OFFSET (in DN) from processing baseline 04.00 on.
BOA_ADD_OFFSET_DN = -1000.0
#: The first processing baseline that stores the +1000 DN offset.
OFFSET_BASELINE = (4, 0)


class BandKind(StrEnum):
    """What a band measures; it decides the default compositing and the cube's attributes."""

    REFLECTANCE = "reflectance"
    INDEX = "index"
    BACKSCATTER = "backscatter"
    CATEGORICAL = "categorical"
    STATIC = "static"
    OTHER = "other"


#: Compositing of a band's observations within a period, by kind (a band may override it).
DEFAULT_COMPOSITE: dict[BandKind, str] = {
    BandKind.REFLECTANCE: "median",
    BandKind.INDEX: "median",
    BandKind.BACKSCATTER: "mean_db",
    BandKind.CATEGORICAL: "first",
    BandKind.STATIC: "median",
    BandKind.OTHER: "median",
}

Composite = Literal["median", "mean", "mean_db", "first"]
RadiometrySource = Literal["item", "profile", "s2-harmonised-flag", "s2-baseline"]
Nodata = float | Literal["nan", "NaN", "inf", "-inf"]


def parse_nodata(value: Any) -> float | None:
    """A nodata value as a float: numbers, and the raster extension's ``"nan"``/``"inf"``/
    ``"-inf"`` strings; None when absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("nan", "inf", "+inf", "-inf"):
            return float(text)
        try:
            return float(text)
        except ValueError:
            return None
    return None


def _check_dtype(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise ValueError(
            f"{value!r} is not a data type (use e.g. uint16, int16, float32)"
        ) from None
    if dtype.kind not in "uif":
        raise ValueError(f"{value!r} is not a numeric data type")
    return dtype.name


class BandDefaults(BaseModel):
    """Fields every band of a profile takes unless it states its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: BandKind | None = Field(None, description="What the band measures.")
    unit: str | None = Field(None, description="Unit of the values after scaling, e.g. '1', 'dB'.")
    dtype: str | None = Field(
        None, description="Stored data type (checked against the items and the COGs)."
    )
    scale: float | None = Field(None, description="value = stored * scale + offset.")
    offset: float | None = Field(None, description="value = stored * scale + offset.")
    nodata: Nodata | None = Field(None, description="Stored value meaning 'no data' ('nan' ok).")
    resolution: float | None = Field(None, gt=0, description="Native pixel size in metres.")
    scale_from: list[RadiometrySource] | None = Field(
        None, description="Where the scale comes from, first that knows wins."
    )
    offset_from: list[RadiometrySource] | None = Field(
        None, description="Where the offset comes from, first that knows wins."
    )
    composite: Composite | None = Field(
        None,
        description="Compositing in a period: median, mean, mean_db (mean in linear power, "
        "written in dB; a band whose unit is dB is made linear first) or first; unset: by kind "
        "(backscatter mean_db, categorical first, else median).",
    )

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str | None) -> str | None:
        return _check_dtype(value)


class BandSpec(BandDefaults):
    """One band: the asset (and band of the asset) that holds it, and how to read it."""

    asset: str | dict[str, str] = Field(
        description="Asset key in the items, or collection id (fnmatch pattern) -> asset key "
        "where collections of one profile name it differently (HLS: B8A in HLSS30, B05 in "
        "HLSL30)."
    )
    band_index: int = Field(1, ge=1, description="Band of the asset's file (1 = first).")

    @field_validator("asset")
    @classmethod
    def _asset(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        if isinstance(value, str) and not value:
            raise ValueError("asset key is empty")
        if isinstance(value, dict) and (not value or not all(value.values())):
            raise ValueError("asset: give collection pattern -> asset key pairs")
        return value

    def asset_for(self, collection_id: str | None) -> str | None:
        """The asset key in items of ``collection_id`` (None: no pattern matches it)."""
        if isinstance(self.asset, str):
            return self.asset
        for pattern, key in self.asset.items():
            if collection_id is not None and fnmatch.fnmatchcase(collection_id, pattern):
                return key
        return None


class BitField(BaseModel):
    """A field of a bit-packed quality band: ``length`` bits from bit ``offset``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    offset: int = Field(ge=0, le=31, description="First bit (0 = least significant).")
    length: int = Field(1, ge=1, le=16, description="Number of bits.")
    values: list[int] = Field(
        default_factory=lambda: [1], min_length=1, description="Field values that select."
    )


MaskValue = int | BitField


class MaskSpec(BaseModel):
    """The cloud/quality mask: a categorical band and the values (or bits) to mask."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    band: str = Field(description="The profile band (kind categorical) the mask reads.")
    encoding: Literal["classes", "bits"] = Field(
        description="classes: each value is a class (Sentinel-2 SCL); bits: flags packed in "
        "bits (Landsat qa_pixel, HLS Fmask)."
    )
    nodata: list[MaskValue] = Field(
        default_factory=list,
        description="Values (classes) or bits (bits: bit offsets or bit fields) meaning no data.",
    )
    groups: dict[str, list[MaskValue]] = Field(
        min_length=1, description="Named groups (cloud, shadow, ...) -> values or bits."
    )
    default: list[str] = Field(description="Groups masked when a cube asks for the default.")

    @model_validator(mode="after")
    def _known_groups(self) -> MaskSpec:
        unknown = [g for g in self.default if g not in self.groups]
        if unknown:
            raise ValueError(f"default mask groups {unknown} are not in groups {list(self.groups)}")
        return self

    def _selects(self, values: np.ndarray, entries: list[MaskValue]) -> np.ndarray:
        out = np.zeros(values.shape, dtype=bool)
        for entry in entries:
            if self.encoding == "classes":
                if not isinstance(entry, int):
                    raise ConfigError(
                        f"mask of band {self.band!r}: a bit field {entry} in a 'classes' mask",
                        hint="give class values as numbers, or set encoding: bits",
                    )
                out |= values == entry
            else:
                field = entry if isinstance(entry, BitField) else BitField(offset=entry)
                bits = (values >> field.offset) & ((1 << field.length) - 1)
                out |= np.isin(bits, field.values)
        return out

    def lookup(self, groups: list[str], n_values: int) -> tuple[np.ndarray, np.ndarray]:
        """(masked, nodata) lookup tables over stored values 0..n_values-1."""
        values = np.arange(n_values, dtype=np.int64)
        masked = self._selects(values, [v for g in groups for v in self.groups[g]])
        return masked, self._selects(values, self.nodata)

    def fill_value(self) -> int:
        """A stored value meaning no data (0 when none is declared)."""
        if not self.nodata:
            return 0
        first = self.nodata[0]
        if isinstance(first, int):
            return first if self.encoding == "classes" else 1 << first
        return first.values[0] << first.offset


class CollectionProfile(BaseModel):
    """One provider's way of publishing one kind of collection (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Profile name.")
    description: str = Field("", description="What the profile reads, in a line.")
    collections: list[str] = Field(
        min_length=1, description="Collection ids (fnmatch patterns); the first is the default."
    )
    api_url: str | None = Field(None, description="Public STAC API root, if any.")
    sign: Literal["none", "planetary-computer"] = Field(
        "none", description="Sign asset hrefs (Planetary Computer SAS tokens)."
    )
    harmonised_flag: str | None = Field(
        None, description="Item property that, when true, says the S2 offset was removed."
    )
    defaults: BandDefaults = Field(default_factory=BandDefaults)
    bands: dict[str, BandSpec] = Field(min_length=1, description="Band name -> its asset.")
    default_bands: list[str] | None = Field(
        None, description="Bands of a cube that names none. Unset: every non-categorical band."
    )
    mask: MaskSpec | None = Field(None, description="Cloud/quality mask; unset: none.")
    source: str | None = Field(None, description="Where the profile was read from.")

    @field_validator("bands")
    @classmethod
    def _band_names(cls, bands: dict[str, BandSpec]) -> dict[str, BandSpec]:
        bad = [b for b in bands if not b or not (b[0].isalpha() and b.replace("_", "").isalnum())]
        if bad:
            raise ValueError(
                f"band names {bad} must start with a letter and hold letters, digits and '_'"
            )
        reserved = {"valid_count", "interpolated", "spatial_ref", "time", "x", "y"}
        clash = sorted(reserved & set(bands))
        if clash:
            raise ValueError(f"band names {clash} are reserved for cube variables")
        return bands

    @model_validator(mode="after")
    def _consistent(self) -> CollectionProfile:
        unknown = [b for b in self.default_bands or [] if b not in self.bands]
        if unknown:
            raise ValueError(f"default_bands {unknown} are not in bands {list(self.bands)}")
        for name in self.bands:
            spec = self.spec(name)
            for source in (*(spec.scale_from or ()), *(spec.offset_from or ())):
                if source == "s2-harmonised-flag" and not self.harmonised_flag:
                    raise ValueError(
                        f"band {name!r} takes its offset from 's2-harmonised-flag' but the "
                        "profile sets no harmonised_flag"
                    )
        if self.mask is not None:
            if self.mask.band not in self.bands:
                raise ValueError(f"mask band {self.mask.band!r} is not in bands {list(self.bands)}")
            if self.spec(self.mask.band).kind is not BandKind.CATEGORICAL:
                raise ValueError(f"mask band {self.mask.band!r} must have kind: categorical")
        return self

    # --- What the profile says about a band ---------------------------------------------------

    @property
    def default_collection(self) -> str:
        """The collection searched when none is given (the first, if it is no pattern)."""
        return self.collections[0]

    @property
    def sign_hrefs(self) -> bool:
        return self.sign == "planetary-computer"

    @property
    def reference(self) -> str:
        """How to find this profile again: its file path, or its built-in name."""
        return self.source or self.name

    def spec(self, band: str) -> BandSpec:
        """The band's specification with the profile's defaults filled in."""
        try:
            own = self.bands[band]
        except KeyError:
            raise ProviderError(
                f"unknown band {band!r} for collection profile {self.name!r}",
                hint=f"use a band of the profile: {', '.join(self.bands)} (or add it to the "
                "profile's bands)",
            ) from None
        merged = self.defaults.model_dump(exclude_none=True) | own.model_dump(exclude_none=True)
        merged.setdefault("kind", BandKind.REFLECTANCE)
        return BandSpec.model_validate(merged)

    def kind(self, band: str) -> BandKind:
        """What ``band`` measures."""
        kind = self.spec(band).kind
        return kind if kind is not None else BandKind.REFLECTANCE

    def composite(self, band: str) -> Composite:
        """How ``band`` is composited within a period."""
        spec = self.spec(band)
        if spec.composite is not None:
            return spec.composite
        value = DEFAULT_COMPOSITE[self.kind(band)]
        for rule in get_args(Composite):
            if value == rule:
                return cast(Composite, rule)
        return "median"

    def cube_bands(self) -> list[str]:
        """The bands of a cube that names none."""
        if self.default_bands is not None:
            return list(self.default_bands)
        return [b for b in self.bands if self.kind(b) is not BandKind.CATEGORICAL]

    def matches(self, collection_id: str | None) -> bool:
        """Whether a collection id is one this profile maps."""
        if collection_id is None:
            return True
        return any(fnmatch.fnmatchcase(collection_id, p) for p in self.collections)

    # --- Items ---------------------------------------------------------------------------------

    def check_item(self, item: pystac.Item) -> None:
        """ProviderError unless the item is from a collection this profile maps."""
        if not self.matches(item.collection_id):
            raise ProviderError(
                f"item {item.id!r} is from collection {item.collection_id!r}, which collection "
                f"profile {self.name!r} does not map (it maps {', '.join(self.collections)})",
                hint="use the profile of that collection (a built-in one or your own YAML "
                "file, see docs/DATA.md), or add the collection id to this profile's collections",
            )

    def bands_available(self, item: pystac.Item) -> list[str]:
        """Band names (profile order) whose asset this item has."""
        return [
            b for b, spec in self.bands.items() if spec.asset_for(item.collection_id) in item.assets
        ]

    def band_rule(self, item: pystac.Item, band: str) -> BandRule:
        """How to read ``band`` of ``item``: asset, href, scale, offset, nodata, resolution.

        ProviderError, before any pixel is read, when the profile does not fit the item."""
        self.check_item(item)
        spec = self.spec(band)
        key = spec.asset_for(item.collection_id)
        asset = item.assets.get(key) if key is not None else None
        if key is None or asset is None:
            data_assets = [k for k, a in item.assets.items() if "data" in (a.roles or ["data"])]
            has = ", ".join(data_assets) or "none"
            mapped = ", ".join(self.bands_available(item)) or "none"
            raise ProviderError(
                f"item {item.id!r} has no asset {key or spec.asset!r} for band {band!r} of "
                f"collection profile {self.name!r}; its assets are {has}, and the profile's "
                f"bands it has are {mapped}",
                hint="ask only for bands the items have, or set the band's `asset` in the profile "
                "to one of the item's asset keys",
            )
        raster = _raster_band(asset, spec.band_index)
        self._check_dtype(item, band, spec, key, raster)
        if spec.kind is BandKind.CATEGORICAL:
            scale, offset = 1.0, 0.0
        else:
            scale = self._decide(item, band, spec, raster, "scale")
            offset = self._decide(item, band, spec, raster, "offset")
        nodata = parse_nodata(raster.get("nodata"))
        if nodata is None:
            nodata = parse_nodata(spec.nodata)
        href = asset.get_absolute_href() or asset.href
        if self.sign_hrefs:
            from cropflow.stac.signing import unsigned

            href = unsigned(href)  # signed afresh when read (tokens expire)
        return BandRule(
            band=band,
            asset_key=key,
            href=href,
            scale=scale,
            offset=offset,
            nodata=nodata,
            resolution=_resolution(item, key, raster, spec),
            band_index=spec.band_index,
            kind=str(spec.kind),
            dtype=spec.dtype,
            sign=self.sign,
        )

    def _check_dtype(
        self, item: pystac.Item, band: str, spec: BandSpec, key: str, raster: Mapping[str, Any]
    ) -> None:
        stated = raster.get("data_type")
        if spec.dtype is None or not isinstance(stated, str):
            return
        try:
            same = np.dtype(stated) == np.dtype(spec.dtype)
        except TypeError:
            return  # a data type numpy does not know (e.g. cint16): the COG header decides
        if not same:
            raise ProviderError(
                f"collection profile {self.name!r} declares band {band!r} (asset "
                f"{key!r}) as {spec.dtype}, but item {item.id!r} says {stated}",
                hint=f"set dtype: {stated} for that band in the profile (or remove dtype)",
            )

    def _decide(
        self,
        item: pystac.Item,
        band: str,
        spec: BandSpec,
        raster: Mapping[str, Any],
        what: Literal["scale", "offset"],
    ) -> float:
        sources = (spec.scale_from if what == "scale" else spec.offset_from) or ["item", "profile"]
        for source in sources:
            value = self._from_source(item, spec, raster, what, source)
            if value is not None:
                return value
        raise ProviderError(
            f"the {what} of band {band!r} of item {item.id!r} is unknown: "
            f"collection profile {self.name!r} looks in {', '.join(sources)} and none states it",
            hint=f"declare `{what}:` for the band (or in `defaults:`) in the profile, and add "
            f"'profile' to its `{what}_from` list",
        )

    def _from_source(
        self,
        item: pystac.Item,
        spec: BandSpec,
        raster: Mapping[str, Any],
        what: Literal["scale", "offset"],
        source: RadiometrySource,
    ) -> float | None:
        if source == "item":
            return _as_float(raster.get(what))
        if source == "profile":
            return spec.scale if what == "scale" else spec.offset
        if source == "s2-harmonised-flag":
            flag = self.harmonised_flag
            harmonised = flag is not None and item.properties.get(flag) is True
            return 0.0 if (what == "offset" and harmonised) else None
        baseline = processing_baseline(item)
        if what == "scale":
            return 1.0 / BOA_QUANTIFICATION if baseline is not None else None
        if baseline is None:
            return None
        return BOA_ADD_OFFSET_DN / BOA_QUANTIFICATION if baseline >= OFFSET_BASELINE else 0.0


def _raster_band(asset: pystac.Asset, band_index: int) -> Mapping[str, Any]:
    bands = asset.extra_fields.get("raster:bands")
    if isinstance(bands, list) and len(bands) >= band_index and isinstance(bands[0], dict):
        entry = bands[band_index - 1]
        return entry if isinstance(entry, dict) else {}
    return {}


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def proj_field(item: pystac.Item, asset_key: str, name: str) -> object:
    """A projection-extension field of an asset, else of its item (None when absent)."""
    asset = item.assets.get(asset_key)
    if asset is not None and name in asset.extra_fields:
        return asset.extra_fields[name]
    return item.properties.get(name)


def stac_crs(item: pystac.Item, asset_key: str) -> CRS | None:
    """The CRS an asset (or its item) states in the projection extension, if any."""
    for name in ("proj:code", "proj:epsg", "proj:wkt2"):
        value = proj_field(item, asset_key, name)
        if value is None or isinstance(value, bool):
            continue
        try:
            return CRS.from_epsg(value) if isinstance(value, int) else CRS.from_user_input(value)
        except CRSError:  # an unreadable CRS is the same as none
            continue
    return None


def is_metric(crs: CRS) -> bool:
    """Whether a CRS is projected with metre axes."""
    return bool(crs.is_projected) and all(
        (a.unit_name or "").lower() in ("metre", "meter", "m") for a in crs.axis_info[:2]
    )


def _resolution(
    item: pystac.Item, key: str, raster: Mapping[str, Any], spec: BandSpec
) -> float | None:
    """The native pixel size in metres: the asset's proj:transform in a metric CRS, else the
    raster extension's spatial_resolution (metres by definition), else the profile's."""
    transform = proj_field(item, key, "proj:transform")
    crs = stac_crs(item, key)
    metric = crs is not None and is_metric(crs)
    if isinstance(transform, list) and len(transform) >= 6 and transform[0] and metric:
        return abs(float(transform[0]))
    res = raster.get("spatial_resolution")
    if isinstance(res, int | float) and not isinstance(res, bool) and res > 0:
        return float(res)
    return spec.resolution


# --- Loading --------------------------------------------------------------------------------


def _clean(msg: str) -> str:
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def profile_from_mapping(data: Mapping[str, Any], source: str) -> CollectionProfile:
    """Validate a profile given as a mapping; ConfigError naming ``source`` and each bad field."""
    try:
        return CollectionProfile.model_validate(dict(data))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(file)"
            msg = _clean(err["msg"])
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            problems.append(f"{loc}: {msg}")
        raise ConfigError(
            f"collection profile {source} is invalid: {'; '.join(problems)}",
            hint="fix those fields (the format is in docs/DATA.md, 'Bring a collection'; the "
            "built-in profiles in cropflow/resources/profiles/ are complete examples)",
        ) from None


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read collection profile {path}: {exc.strerror or exc}",
            hint="check the path (relative paths are relative to the file that names them)",
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"collection profile {path} is not valid YAML: {exc}", hint="fix the YAML syntax"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"collection profile {path} does not hold a mapping of fields",
            hint="write `field: value` lines (see docs/DATA.md, 'Bring a collection')",
        )
    return data


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merged key by key, everything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _base_path(ref: str, child: Path) -> Path:
    if looks_like_path(ref):
        path = Path(ref).expanduser()
        return path if path.is_absolute() else (child.parent / path)
    sibling = _named_files(child.parent).get(ref)
    if sibling is not None and sibling.resolve() != child.resolve():
        return sibling
    for folder in _profile_dirs():
        found = _named_files(folder).get(ref)
        if found is not None and found.resolve() != child.resolve():
            return found
    raise ConfigError(
        f"collection profile {child} extends {ref!r}, which is no known profile",
        hint=f"extend one of: {', '.join(profile_names())}, or a profile file path",
    )


def _resolved_mapping(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The file's fields on top of those of the profile it ``extends`` (recursively)."""
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise ConfigError(f"collection profiles extend each other in a loop: {chain}")
    data = _read_mapping(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(
            f"collection profile {path}: extends must be a profile name or file path",
            hint="write e.g. `extends: earth-search-v1`",
        )
    base = _resolved_mapping(_base_path(parent, path), (*seen, path.resolve()))
    base.pop("name", None)
    return _merge(base, data)


def load_profile_file(path: str | Path) -> CollectionProfile:
    """Read and validate a profile YAML file (its name defaults to the file name; a profile
    may ``extends:`` another by name or path and override some of its fields)."""
    path = Path(path).expanduser()
    data = _resolved_mapping(path)
    data.setdefault("name", path.stem)
    data["source"] = str(path.resolve())
    return profile_from_mapping(data, str(path))


def _builtin_dir() -> Path:
    return Path(str(resources.files("cropflow") / "resources" / "profiles"))


def _profile_dirs() -> list[Path]:
    from cropflow.settings import get_settings

    extra = get_settings().stac.profiles_dir
    return [d for d in (extra, _builtin_dir()) if d is not None]


def _named_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    files = [p for p in folder.iterdir() if p.suffix in PROFILE_SUFFIXES]
    return {p.stem: p for p in sorted(files, key=lambda p: p.stem)}


def profile_names() -> list[str]:
    """Names of the known profiles: the settings' folder first, then the built-in ones."""
    names: dict[str, None] = {}
    for folder in _profile_dirs():
        names.update(dict.fromkeys(_named_files(folder)))
    return list(names)


def looks_like_path(ref: str) -> bool:
    """Whether a profile reference names a file rather than a profile."""
    return ref.endswith(PROFILE_SUFFIXES) or "/" in ref or ref.startswith(("~", "."))


@lru_cache(maxsize=64)
def _cached_file(path: str, mtime_ns: int, size: int) -> CollectionProfile:
    return load_profile_file(path)


def _load_cached(path: Path) -> CollectionProfile:
    st = path.stat()
    return _cached_file(str(path.resolve()), st.st_mtime_ns, st.st_size)


def get_profile(ref: str) -> CollectionProfile:
    """The profile called ``ref`` (the settings' folder, then the built-ins), or read from the
    file ``ref``; ProviderError listing the known ones otherwise."""
    if looks_like_path(ref):
        path = Path(ref.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise ProviderError(
                f"collection profile file {ref!r} does not exist",
                hint="give an existing YAML file, or one of the profile names: "
                f"{', '.join(profile_names())}",
            )
        return _load_cached(path)
    for folder in _profile_dirs():
        found = _named_files(folder).get(ref)
        if found is not None:
            profile = _load_cached(found)
            if folder == _builtin_dir():  # built-ins are found by name, wherever installed
                return profile.model_copy(update={"source": None})
            return profile
    raise ProviderError(
        f"unknown provider {ref!r}: no collection profile of that name",
        hint=f"use one of: {', '.join(profile_names())} (setting CROPFLOW_STAC__PROVIDER), "
        "or the path of your own profile YAML (docs/DATA.md)",
    )
