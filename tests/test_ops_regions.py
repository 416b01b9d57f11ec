"""Region files: the shipped ones load, bad ones are refused naming file and field, seasons."""

from __future__ import annotations

import textwrap
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cropflow.errors import AOIError, ConfigError
from cropflow.regions import (
    REGIONS_DIR,
    RegionConfig,
    SeasonWindow,
    as_region,
    get_region,
    load_region_file,
    load_regions,
)
from cropflow.settings import get_settings
from cropflow.stac.search import check_datetime

EXAMPLES = REGIONS_DIR.parent / "examples"

GOOD = """\
aoi: [13.60, 52.05, 13.75, 52.12]
season: {start: "03-01", end: "10-31"}
provider: earth-search-v1
collections: [sentinel-2-l2a]
schedule: {cron: "0 3 * * 1", timezone: Europe/Berlin}
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_every_shipped_region_and_example_file_is_valid() -> None:
    regions = load_regions(REGIONS_DIR)
    assert "demo" in [r.name for r in regions]
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert examples, "deployments/examples/ holds at least one region example"
    for path in examples:
        assert load_region_file(path).name == path.stem


def test_demo_region_fills_placeholders_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CROPFLOW_WORKDIR", str(tmp_path / "w"))
    monkeypatch.setenv("CROPFLOW_STACK__STAC_PORT", "18123")
    demo = get_region("demo")
    assert demo.schedule is not None and demo.schedule.timezone == "Europe/Berlin"
    assert demo.stac_api_url() == "http://127.0.0.1:18123"
    demo_dir = get_settings().demo_dir.resolve()
    assert demo.labels_path() == demo_dir / "labels" / "parcels.gpkg"
    # The AOI is the demo catalog, which does not exist yet: a clear error, naming the file.
    with pytest.raises(AOIError, match=r"stac/items\.json"):
        demo.aoi_value()


def test_relative_paths_resolve_against_the_region_file(tmp_path: Path) -> None:
    (tmp_path / "fields.geojson").write_text(
        '{"type": "Polygon", "coordinates": [[[13.6, 52.0], [13.7, 52.0], [13.7, 52.1], '
        "[13.6, 52.0]]]}"
    )
    (tmp_path / "regions").mkdir()
    path = _write(
        tmp_path / "regions",
        "fields",
        """\
        aoi: ../fields.geojson
        season: {start: 2023-10-01, end: 2024-07-31}
        """,
    )
    region = load_region_file(path)
    assert region.aoi == str((tmp_path / "fields.geojson").resolve())
    params = region.search_params()
    assert params.aoi == region.aoi
    assert params.datetime == "2023-10-01/2024-07-31"
    # Embedded in a deployment and validated again in the worker: same config.
    assert as_region(region.model_dump(mode="json")) == region


BAD_CASES = {
    "typo": (GOOD + "seasn: {start: '03-01'}\n", "seasn", "Extra inputs are not permitted"),
    "end_before_start": (
        GOOD.replace('{start: "03-01", end: "10-31"}', "{start: 2024-06-01, end: 2024-03-01}"),
        "season.end",
        "before it starts",
    ),
    "mixed_season": (
        GOOD.replace('end: "10-31"', "end: 2024-10-31"),
        "season.end",
        "both be dates or both be month-days",
    ),
    "no_such_day": (GOOD.replace('"03-01"', '"02-30"'), "season.start", "not a valid month-day"),
    "leap_day": (GOOD.replace('"03-01"', '"02-29"'), "season.start", "02-29"),
    "year_with_dates": (
        GOOD.replace(
            '{start: "03-01", end: "10-31"}', "{start: 2024-03-01, end: 2024-10-31, year: 2023}"
        ),
        "season.year",
        "only to month-days",
    ),
    "bad_cron": (GOOD.replace('"0 3 * * 1"', '"61 3 * * 1"'), "schedule", "Invalid cron"),
    "bad_timezone": (GOOD.replace("Europe/Berlin", "Mars/Olympus"), "schedule", "timezone"),
    "bbox_lon": (GOOD.replace("13.60", "213.60"), "aoi", "longitudes"),
    "missing_geojson": (
        GOOD.replace("[13.60, 52.05, 13.75, 52.12]", "fields/nowhere.geojson"),
        "aoi",
        "does not exist",
    ),
    "unknown_placeholder": (
        GOOD.replace("[13.60, 52.05, 13.75, 52.12]", '"{home}/aoi.geojson"'),
        "aoi",
        "unknown placeholder",
    ),
    "provider": (GOOD.replace("earth-search-v1", "earth-search-v9"), "provider", "unknown"),
    "collection": (
        GOOD.replace("[sentinel-2-l2a]", "[landsat-c2-l2]"),
        "collections",
        "not mapped by collection profile 'earth-search-v1'",
    ),
    "labels_without_mapping": (GOOD + "labels: " + __file__ + "\n", "mapping", "go together"),
    "url": (GOOD + "api_url: ftp://example.org/stac\n", "api_url", "not an http(s) URL"),
    "crs": (GOOD + "grid: {crs: 'EPSG:999999', resolution: 10}\n", "grid.crs", "CRS"),
    "resolution": (GOOD + "grid: {resolution: -10}\n", "grid.resolution", "greater than 0"),
    "name": (GOOD + "name: Other Name\n", "name", "differs from the file name"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_region_file_is_refused_naming_file_and_field(case: str, tmp_path: Path) -> None:
    text, field, reason = BAD_CASES[case]
    path = _write(tmp_path, "brandenburg", text)
    with pytest.raises(ConfigError) as refused:
        load_region_file(path)
    message = refused.value.message
    assert str(path) in message
    assert f"{field}:" in message
    assert reason in message
    assert refused.value.hint, "every refusal says how to fix it"


def test_a_good_file_is_accepted_and_unknown_field_hint_lists_fields(tmp_path: Path) -> None:
    region = load_region_file(_write(tmp_path, "brandenburg", GOOD))
    assert region.name == "brandenburg" and region.schedule is not None
    path = _write(tmp_path, "typo", GOOD + "shedule: {cron: '0 3 * * 1'}\n")
    with pytest.raises(ConfigError) as refused:
        load_region_file(path)
    assert "schedule" in (refused.value.hint or "")


def test_load_regions_names_every_bad_file(tmp_path: Path) -> None:
    _write(tmp_path, "good", GOOD)
    _write(tmp_path, "bad-one", GOOD.replace("13.60", "213.60"))
    _write(tmp_path, "bad-two", "season: [1, 2\n")
    with pytest.raises(ConfigError) as refused:
        load_regions(tmp_path)
    assert "bad-one.yaml" in str(refused.value) and "bad-two.yaml" in str(refused.value)
    assert "not valid YAML" in str(refused.value)
    (tmp_path / "bad-one.yaml").unlink()
    (tmp_path / "bad-two.yaml").unlink()
    assert [r.name for r in load_regions(tmp_path)] == ["good"]


def test_unknown_region_lists_the_known_ones(tmp_path: Path) -> None:
    _write(tmp_path, "north", GOOD)
    with pytest.raises(ConfigError) as unknown:
        get_region("south", tmp_path)
    assert "north" in (unknown.value.hint or "")


# --- Seasons --------------------------------------------------------------------------------

month_days = st.dates(min_value=date(2001, 1, 1), max_value=date(2001, 12, 31)).map(
    lambda d: d.strftime("%m-%d")
)
years = st.one_of(
    st.sampled_from([None, "current", "previous", "latest"]),
    st.integers(min_value=1990, max_value=2090),
)


@settings(max_examples=300, deadline=None)
@given(
    start=month_days,
    end=month_days,
    year=years,
    today=st.dates(min_value=date(1995, 1, 1), max_value=date(2095, 12, 31)),
)
def test_relative_season_intervals(
    start: str, end: str, year: str | int | None, today: date
) -> None:
    if start == end:
        with pytest.raises(ValueError, match="same month-day"):
            SeasonWindow(start=start, end=end, year=year)
        return
    season = SeasonWindow(start=start, end=end, year=year)
    first, last = season.interval(today)
    assert first.strftime("%m-%d") == start and last.strftime("%m-%d") == end
    assert first < last and (last - first) < timedelta(days=366)
    assert (last.year == first.year + 1) == (end < start)  # wraps into the next year
    if year in (None, "current"):
        assert first.year == today.year
    elif year == "previous":
        assert first.year == today.year - 1
    elif year == "latest":
        assert first <= today < date(first.year + 1, first.month, first.day)
    else:
        assert first.year == year
    assert check_datetime(season.datetime_range(today)) == f"{first}/{last}"


def test_winter_season_in_spring_is_the_one_that_started_last_autumn() -> None:
    season = SeasonWindow(start="10-01", end="07-31", year="latest")
    assert season.interval(date(2025, 3, 15)) == (date(2024, 10, 1), date(2025, 7, 31))
    assert season.interval(date(2025, 10, 2)) == (date(2025, 10, 1), date(2026, 7, 31))


def test_region_round_trips_through_yaml(tmp_path: Path) -> None:
    region = load_region_file(_write(tmp_path, "brandenburg", GOOD))
    data = region.model_dump(mode="json", exclude_defaults=True)
    data["name"] = "brandenburg-copy"
    again = load_region_file(_write(tmp_path, "brandenburg-copy", yaml.safe_dump(data)))
    assert again.model_dump(exclude={"name"}) == region.model_dump(exclude={"name"})
    assert isinstance(again, RegionConfig)
