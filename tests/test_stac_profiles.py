"""Provider profiles against every real item in ../shared/fixtures/stac/.

Expected offsets come from each item's own metadata (processing baseline, the providers'
"offset applied" flags), written out per file below, not from the profile code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pystac
import pytest
from stac_helpers import FIXTURE_STAC, read_items, serve_thread

from cropflow.bands import S2_SPECTRAL, SCL
from cropflow.errors import ProviderError
from cropflow.stac.metadata import processing_baseline, tile_id
from cropflow.stac.providers import VOCABULARY, get_profile, profile_names

ALL_BANDS = [*S2_SPECTRAL, SCL]

# file -> (profile, expected reflectance offset per item, expected tiles, why)
S2_CASES: dict[str, tuple[str, float, set[str], str]] = {
    "earthsearch-v1_sentinel-2-l2a_S2B_24MVV_20250731_0_L2A.json": (
        "earth-search-v1",
        0.0,
        {"24MVV"},
        "baseline 05.11 but earthsearch:boa_offset_applied=true: pixels already harmonised",
    ),
    "earthsearch-v1_search_sentinel-2-l2a+landsat-c2-l2_20231008.json": (
        "earth-search-v1",
        0.0,
        {"13TDE"},
        "baseline 05.09, earthsearch:boa_offset_applied=true",
    ),
    "earthsearch-v1_sentinel-2-c1-l2a_S2B_T24MWV_20250731T130245_L2A.json": (
        "earth-search-v1",
        -0.1,
        {"24MWV"},
        "Collection 1: ESA DN unchanged, baseline 05.11, no flag",
    ),
    "earthsearch-v0_sentinel-s2-l2a-cogs_S2B_20EPT_20250731_0_L2A.json": (
        "earth-search-v0",
        0.0,
        {"20EPT"},
        "baseline 05.11, sentinel:boa_offset_applied=true",
    ),
    "S2A_28QCH_20200714_0_L2A.json": (
        "earth-search-v0",
        0.0,
        {"28QCH"},
        "baseline 02.14 (from the product id N0214)",
    ),
    "site2-2020_jun_jul-35MNM.geojson": ("planetary-computer", 0.0, {"35MNM"}, "baseline 02.12"),
    "sentinel-2-l2a-pc.json": (
        "planetary-computer",
        -0.1,
        {"47XML", "47XMJ", "46XES", "46XER"},
        "baseline 05.10: DN = reflectance * 10000 + 1000",
    ),
    "pc_sentinel-2-l2a_S2A_MSIL2A_20190101T000001_R116_T60VUK_20201007T214652.json": (
        "planetary-computer",
        0.0,
        {"60VUK"},
        "baseline 02.12",
    ),
    "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531_raster_ext.json": (
        "planetary-computer",
        0.0,
        {"06VVN"},
        "baseline 02.12",
    ),
}

# file -> (profile, collection of the non-Sentinel-2 items)
OTHER_CASES: dict[str, tuple[str, str]] = {
    "earthsearch-v1_sentinel-1-grd_S1A_IW_GRDH_1SSH_20250731T135702_20250731T135722_060328_077F7E.json": (  # noqa: E501
        "earth-search-v1",
        "sentinel-1-grd",
    ),
    "earthsearch-v1_cop-dem-glo-30_Copernicus_DSM_COG_10_S90_00_W180_00_DEM.json": (
        "earth-search-v1",
        "cop-dem-glo-30",
    ),
    "earthsearch-v1_search_sentinel-2-l2a+landsat-c2-l2_20231008.json": (
        "earth-search-v1",
        "landsat-c2-l2",
    ),
    "sentinel-1-rtc-pc.json": ("planetary-computer", "sentinel-1-rtc"),
    "cop-dem-glo-30-pc.json": ("planetary-computer", "cop-dem-glo-30"),
    "landsat-c2-l2-pc.json": ("planetary-computer", "landsat-c2-l2"),
}


def test_every_fixture_item_file_is_covered() -> None:
    files = {p.name for p in FIXTURE_STAC.iterdir()} - {
        "earthsearch-v1_collection_sentinel-2-l2a.json"
    }
    assert files == set(S2_CASES) | set(OTHER_CASES)


def _s2_items(name: str) -> list[pystac.Item]:
    items = [pystac.Item.from_dict(d) for d in read_items(name)]
    return [it for it in items if it.collection_id != "landsat-c2-l2"]


# --- Planetary Computer signing: a local SAS token service ----------------------------------


@dataclass
class TokenService:
    token: str
    requests: list[str]


@pytest.fixture(autouse=True)
def pc_token(monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenService | None]:
    """A local SAS token endpoint (PC_SDK_SAS_URL); None without ``planetary-computer``.

    Autouse: no test here may ask the real Planetary Computer. Without the package installed
    hrefs stay unsigned, which the tests then expect.
    """
    try:
        from planetary_computer.settings import Settings
    except ImportError:
        yield None
        return
    token = "st=2026-01-01&se=2099-01-01&sp=rl&sig=cropflow-test"
    requests_seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests_seen.append(self.path)
            expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            body = json.dumps({"token": token, "msft:expiry": expiry}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serve_thread(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
        monkeypatch.setenv("PC_SDK_SAS_URL", url)
        Settings.get.cache_clear()
        try:
            yield TokenService(token, requests_seen)
        finally:
            Settings.get.cache_clear()


# --- Sentinel-2 items: band names and radiometry --------------------------------------------


@pytest.mark.parametrize("name", sorted(S2_CASES))
def test_s2_fixture_through_its_profile(name: str, pc_token: TokenService | None) -> None:
    profile_name, offset, tiles, why = S2_CASES[name]
    profile = get_profile(profile_name)
    items = _s2_items(name)
    assert items
    assert {tile_id(it) for it in items} == tiles
    for item in items:
        raw = item.to_dict(transform_hrefs=False)
        assert profile.bands_available(item) == ALL_BANDS
        for band in ALL_BANDS:
            rule = profile.band_rule(item, band)
            asset = raw["assets"][rule.asset_key]
            assert rule.band == band
            # the asset is the right band: its own eo:bands say so (where it has them)
            eo = (asset.get("eo:bands") or [{}])[0]
            if band != SCL and eo:
                assert eo.get("name") in (S2_SPECTRAL[band][1], band), (band, eo)
            if band == SCL:
                assert (rule.scale, rule.offset) == (1.0, 0.0)
                assert rule.resolution == 20
            else:
                assert rule.scale == pytest.approx(1e-4)
                assert rule.offset == pytest.approx(offset), why
                assert rule.resolution == S2_SPECTRAL[band][0]
            assert rule.nodata == 0
            if profile.sign_hrefs and pc_token:
                assert rule.href == f"{asset['href']}?{pc_token.token}"
            else:
                assert rule.href == asset["href"]
    if profile.sign_hrefs and pc_token:
        # one token per (account, container), asked of the service, then cached
        assert pc_token.requests == ["/sentinel2l2a01/sentinel2-l2"]


def test_profiles_read_the_right_asset_keys() -> None:
    pc = _s2_items("site2-2020_jun_jul-35MNM.geojson")[0]
    es1 = _s2_items("earthsearch-v1_sentinel-2-l2a_S2B_24MVV_20250731_0_L2A.json")[0]
    es0 = _s2_items("earthsearch-v0_sentinel-s2-l2a-cogs_S2B_20EPT_20250731_0_L2A.json")[0]
    assert get_profile("earth-search-v1").band_rule(es1, "nir08").asset_key == "nir08"
    assert get_profile("earth-search-v0").band_rule(es0, "nir08").asset_key == "B8A"
    assert get_profile("earth-search-v0").band_rule(es0, "scl").asset_key == "SCL"
    assert get_profile("planetary-computer").bands_available(pc)[:3] == ["coastal", "blue", "green"]


def test_baselines_read_from_every_convention() -> None:
    expected = {
        "earthsearch-v1_sentinel-2-l2a_S2B_24MVV_20250731_0_L2A.json": (5, 11),
        "earthsearch-v0_sentinel-s2-l2a-cogs_S2B_20EPT_20250731_0_L2A.json": (5, 11),
        "S2A_28QCH_20200714_0_L2A.json": (2, 14),
        "sentinel-2-l2a-pc.json": (5, 10),
        "site2-2020_jun_jul-35MNM.geojson": (2, 12),
    }
    for name, baseline in expected.items():
        assert {processing_baseline(it) for it in _s2_items(name)} == {baseline}, name


def test_earth_search_flag_overrides_the_items_raster_offset() -> None:
    """The evidence behind the Earth Search rule, read from the real files.

    The flagged v1 item's raster:bands says -0.1, the collection's item_assets say 0: the
    profile follows the flag (pixels harmonised), i.e. the collection.
    """
    item = _s2_items("earthsearch-v1_sentinel-2-l2a_S2B_24MVV_20250731_0_L2A.json")[0]
    assert item.properties["earthsearch:boa_offset_applied"] is True
    assert item.assets["red"].extra_fields["raster:bands"][0]["offset"] == -0.1
    collection = json.loads(
        (FIXTURE_STAC / "earthsearch-v1_collection_sentinel-2-l2a.json").read_text()
    )
    claimed = collection["item_assets"]["red"]["raster:bands"][0]
    assert claimed["offset"] == 0 and claimed["scale"] == 0.0001
    rule = get_profile("earth-search-v1").band_rule(item, "red")
    assert (rule.scale, rule.offset) == (claimed["scale"], claimed["offset"])

    # the same item unflagged (as a v1 item of a not-yet-harmonised scene): ESA's -0.1
    unflagged = item.clone()
    unflagged.properties["earthsearch:boa_offset_applied"] = False
    assert get_profile("earth-search-v1").band_rule(unflagged, "red").offset == pytest.approx(-0.1)
    # ... and an old baseline: no offset
    old = unflagged.clone()
    old.properties["s2:processing_baseline"] = "03.01"
    assert get_profile("earth-search-v1").band_rule(old, "red").offset == 0.0


def test_pc_baseline_rule_boundary() -> None:
    item = _s2_items("site2-2020_jun_jul-35MNM.geojson")[0]
    pc = get_profile("planetary-computer")
    for baseline, offset in [("03.99", 0.0), ("04.00", -0.1), ("04.01", -0.1), ("99.99", -0.1)]:
        item.properties["s2:processing_baseline"] = baseline
        assert pc.band_rule(item, "red").offset == pytest.approx(offset), baseline
    del item.properties["s2:processing_baseline"]
    del item.properties["s2:product_uri"]
    with pytest.raises(ProviderError, match="no processing baseline"):
        pc.band_rule(item, "red")
    # SCL does not need the baseline
    assert pc.band_rule(item, "scl").offset == 0.0


def test_local_demo_takes_its_raster_bands_as_written() -> None:
    """The demo catalog is cropflow's own: its raster:bands offset is the truth."""
    item = _s2_items("earthsearch-v1_sentinel-2-l2a_S2B_24MVV_20250731_0_L2A.json")[0]
    demo = get_profile("local-demo")
    assert demo.band_rule(item, "red").offset == pytest.approx(-0.1)
    for asset in item.assets.values():
        for rb in asset.extra_fields.get("raster:bands", []):
            rb.pop("offset", None)
    assert demo.band_rule(item, "red").offset == pytest.approx(-0.1), "baseline 05.11 fallback"


# --- Non-Sentinel-2 items and bad requests --------------------------------------------------


@pytest.mark.parametrize("name", sorted(OTHER_CASES))
def test_non_s2_items_get_a_clear_provider_error(name: str) -> None:
    profile_name, collection = OTHER_CASES[name]
    profile = get_profile(profile_name)
    items = [
        pystac.Item.from_dict(d) for d in read_items(name) if d.get("collection") == collection
    ]
    assert items
    for item in items:
        with pytest.raises(ProviderError) as err:
            profile.band_rule(item, "red")
        message = str(err.value)
        assert item.id in message and collection in message and profile_name in message
        assert err.value.hint


def test_missing_asset_names_item_band_and_what_it_has() -> None:
    item = _s2_items("sentinel-2-l2a-pc.json")[0]
    del item.assets["B05"]
    pc = get_profile("planetary-computer")
    assert "rededge1" not in pc.bands_available(item)
    with pytest.raises(ProviderError) as err:
        pc.band_rule(item, "rededge1")
    message = str(err.value)
    assert item.id in message and "'rededge1'" in message and "rededge2" in message


def test_unknown_band_and_provider() -> None:
    item = _s2_items("sentinel-2-l2a-pc.json")[0]
    with pytest.raises(ProviderError, match="unknown band 'B04'") as err:
        get_profile("planetary-computer").band_rule(item, "B04")
    assert "red" in (err.value.hint or "")
    with pytest.raises(ProviderError, match="unknown provider 'sentinelhub'") as err:
        get_profile("sentinelhub")
    for name in profile_names():
        assert name in (err.value.hint or "")
    assert set(profile_names()) == {
        "local-demo",
        "earth-search-v1",
        "earth-search-v0",
        "planetary-computer",
    }
    assert set(VOCABULARY) == set(ALL_BANDS)


def test_pc_token_failure_is_a_provider_error(monkeypatch: pytest.MonkeyPatch) -> None:
    settings_mod = pytest.importorskip("planetary_computer.settings")
    from cropflow.stac.server import free_port

    monkeypatch.setenv("PC_SDK_SAS_URL", f"http://127.0.0.1:{free_port()}/token")
    monkeypatch.setenv("CROPFLOW_STAC__MAX_RETRIES", "0")
    settings_mod.Settings.get.cache_clear()
    item = _s2_items("sentinel-2-l2a-pc.json")[0]
    try:
        with pytest.raises(ProviderError, match="SAS token") as err:
            get_profile("planetary-computer").band_rule(item, "red")
    finally:
        settings_mod.Settings.get.cache_clear()
    assert "blob.core.windows.net" in str(err.value)
    assert "PC_SDK" in (err.value.hint or "")
