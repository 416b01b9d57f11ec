"""``cropflow serve``'s API on real products (a small prediction published by build_products).

The app runs in-process (FastAPI's TestClient speaks ASGI to it); tiles are decoded and
compared with the class map COG and the legend. On-demand map jobs on a real Prefect worker,
and the web page in a real browser, are in tests/test_ui_operator.py.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import morecantile
import numpy as np
import pytest
import rasterio
import shapely
from fastapi.testclient import TestClient
from PIL import Image
from pyproj import Transformer
from test_products_build import FIELDS, prediction  # noqa: F401 - the module's fixture

from cropflow.predict import PredictionResult
from cropflow.products import ProductsResult, build_products
from cropflow.serve.app import create_app
from cropflow.serve.catalog import read_table
from cropflow.serve.jobs import JobRecord, JobState, MapRequest, job_region, write_aoi, write_job
from cropflow.settings import ServeSettings, Settings, get_settings

TOKEN = "s3cret-token"
WEB_MERCATOR = morecantile.tms.get("WebMercatorQuad")


@pytest.fixture(scope="module")
def products(prediction: PredictionResult) -> ProductsResult:  # noqa: F811
    return build_products(prediction)


@pytest.fixture(scope="module")
def api(products: ProductsResult) -> Iterator[TestClient]:
    with TestClient(create_app(get_settings())) as client:
        yield client


def _settings(**serve: Any) -> Settings:
    s = get_settings()
    return s.model_copy(update={"serve": ServeSettings.model_validate({**dict(s.serve), **serve})})


def _pixel_lonlat(path: Path, row: int, col: int) -> tuple[float, float, int]:
    """Lon/lat of a pixel's centre of the COG at ``path``, and its value."""
    with rasterio.open(path) as src:
        x, y = src.xy(row, col)
        value = int(src.read(1)[row, col])
        lon, lat = Transformer.from_crs(src.crs, 4326, always_xy=True).transform(x, y)
    return lon, lat, value


def _tile_pixel(api: TestClient, layer_url: str, lon: float, lat: float) -> np.ndarray:
    """RGBA at (lon, lat) of the zoom-18 PNG tile holding it (finer than 10 m pixels)."""
    tile = WEB_MERCATOR.tile(lon, lat, 18)
    r = api.get(f"{layer_url}/{tile.z}/{tile.x}/{tile.y}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text[:200]
    image = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGBA"))
    bounds = WEB_MERCATOR.xy_bounds(tile)
    x, y = WEB_MERCATOR.xy(lon, lat)
    px = int((x - bounds.left) / (bounds.right - bounds.left) * 256)
    py = int((bounds.top - y) / (bounds.top - bounds.bottom) * 256)
    pixel: np.ndarray = image[py, px]
    return pixel


def test_catalog_lists_the_map_with_its_classes_model_and_layers(
    api: TestClient, products: ProductsResult
) -> None:
    listed = {m["region"]: m for m in api.get("/maps").json()}
    m = listed[products.region]
    assert m["layers"] == ["class_map", "confidence"]
    assert [(c["value"], c["name"], c["color"]) for c in m["classes"]] == [
        (1, "winter_wheat", "#f5deb3"),
        (4, "maize", "#ffd700"),
        (10, "meadow", "#228b22"),
    ]
    assert m["model"]["bands"] == ["nir", "red"] and m["tables"] == ["class_area"]
    assert api.get(f"/maps/{products.region}/legend").json() == m["classes"]
    areas = api.get(f"/maps/{products.region}/areas").json()
    assert areas["class_area"] == read_table(Path(products.paths["class_area_csv"]))
    assert areas["class_area_estimate"] is None
    assert api.get("/openapi.json").json()["paths"]["/maps"]["post"]["summary"]


@pytest.mark.parametrize(("row", "col"), [(5, 5), (20, 35), (44, 60)])
def test_point_query_and_tile_pixel_agree_with_the_class_map(
    api: TestClient, products: ProductsResult, row: int, col: int
) -> None:
    class_map = Path(products.paths["class_map"])
    lon, lat, value = _pixel_lonlat(class_map, row, col)
    point = api.get(f"/maps/{products.region}/point", params={"lon": lon, "lat": lat}).json()
    colors = {c["value"]: c["color"] for c in api.get(f"/maps/{products.region}").json()["classes"]}
    if value not in colors:  # no data there
        assert point["class_name"] is None
        return
    assert point["class_value"] == value
    with rasterio.open(class_map) as src:
        here = shapely.Point(*src.xy(row, col))
    inside = [name for name, field in FIELDS.items() if field.contains(here)]
    assert point["field_id"] == (inside[0] if inside else None)
    assert sum(point["probabilities"].values()) == pytest.approx(1.0, abs=0.05)
    assert point["confidence"] == max(point["probabilities"].values())

    # The tile holding the pixel, at a zoom finer than the 10 m pixels: its colour there.
    pixel = _tile_pixel(api, f"/maps/{products.region}/tiles/class_map", lon, lat)
    hex_color = colors[value].lstrip("#")
    expected = [int(hex_color[i : i + 2], 16) for i in (0, 2, 4)] + [255]
    assert pixel.tolist() == expected


def test_tiles_outside_the_map_are_clear_and_bad_layers_are_refused(
    api: TestClient, products: ProductsResult
) -> None:
    r = api.get(f"/maps/{products.region}/tiles/class_map/3/0/0.png")
    assert r.status_code == 200
    assert np.asarray(Image.open(io.BytesIO(r.content)).convert("RGBA"))[..., 3].max() == 0
    webp = api.get(f"/maps/{products.region}/tiles/confidence/3/0/0.webp")
    assert webp.status_code == 200 and webp.headers["content-type"] == "image/webp"
    bad = api.get(f"/maps/{products.region}/tiles/probability/3/0/0.png")
    assert bad.status_code == 404 and bad.json()["detail"]["field"] == "layer"
    assert api.get(f"/maps/{products.region}/tiles/class_map/3/9/0.png").status_code == 404
    assert api.get(f"/maps/{products.region}/tiles/class_map/3/0/0.gif").status_code == 422
    far = api.get(f"/maps/{products.region}/point", params={"lon": 0, "lat": 0})
    assert far.status_code == 422 and "outside the map" in far.json()["detail"]["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/maps/..%2F..%2Fetc/legend",
        "/maps/%2e%2e/legend",
        "/maps/..%2Fdemo%2Fstac/areas",
        "/maps/nope/legend",
        "/static/app/../../catalog.py",
        "/static/app/..%2F..%2Fcatalog.py",
        "/static/app/%2e%2e/%2e%2e/jobs.py",
    ],
)
def test_no_request_path_reaches_the_file_system(api: TestClient, path: str) -> None:
    r = api.get(path)
    assert r.status_code == 404, (path, r.text[:200])
    assert "import" not in r.text


def test_map_requests_need_a_token_and_are_checked_field_by_field(
    products: ProductsResult,
) -> None:
    ok = {"aoi": [13.60, 52.05, 13.62, 52.06], "start": "2024-03-01", "end": "2024-10-31"}
    with TestClient(create_app(get_settings())) as closed:
        r = closed.post("/maps", json=ok)
        assert r.status_code == 403 and "CROPFLOW_SERVE__TOKEN" in r.json()["detail"]["hint"]

    with TestClient(create_app(_settings(token=TOKEN, max_aoi_km2=10.0), _Busy())) as app:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN + "x"}):
            r = app.post("/maps", json=ok, headers=headers)
            assert r.status_code == 401 and r.json()["detail"]["field"] == "authorization"

        bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
        cases: list[tuple[dict[str, Any], str, str]] = [
            ({**ok, "aoi": bowtie}, "aoi", "not a valid polygon"),
            ({**ok, "aoi": [13.0, 52.0, 14.0, 53.0]}, "aoi", "km²"),
            ({**ok, "aoi": [52.05, 13.60, 52.06]}, "aoi", "bbox"),
            ({**ok, "end": "2024-02-01"}, "start/end", "not after start"),
            ({**ok, "start": "2099-01-01", "end": "2099-02-01"}, "start/end", "future"),
            ({**ok, "start": "not a date"}, "start", "date"),
            ({"aoi": ok["aoi"], "end": ok["end"]}, "start", "required"),
            ({**ok, "alias": "../x"}, "alias", "alias"),
            ({**ok, "model": "no-such-model"}, "model", "no-such-model"),
        ]
        for body, field, words in cases:
            r = app.post("/maps", json=body, headers=bearer)
            assert r.status_code == 422, (body, r.text)
            detail = r.json()["detail"]
            assert detail["field"] == field, (body, detail)
            assert words.lower() in str(detail).lower(), (body, detail)

        big = app.post(
            "/maps",
            content=b'{"aoi": "' + b"x" * 2_000_000 + b'"}',
            headers={**bearer, "Content-Type": "application/json"},
        )
        assert big.status_code == 413 and big.json()["detail"]["field"] == "body"

        def chunks() -> Iterator[bytes]:  # no Content-Length: refused once past the limit
            yield b'{"aoi": "'
            for _ in range(40):
                yield b"x" * 50_000
            yield b'"}'

        chunked = app.post("/maps", content=chunks(), headers=bearer)
        assert chunked.status_code == 413, chunked.text[:200]


class _Busy:
    """A job backend whose runs never end: the one way to hold jobs open in this test."""

    def __init__(self) -> None:
        self.submitted: list[dict[str, Any]] = []

    def submit(self, deployment: str, parameters: dict[str, Any]) -> str:
        self.submitted.append(parameters)
        return f"run-{len(self.submitted)}"

    def state(self, run_id: str) -> JobState:
        return JobState(state="RUNNING", state_name="Running")


def test_identical_requests_share_a_job_and_too_many_jobs_get_429(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A job accepted earlier (its record, as POST /maps writes it) is still running."""
    monkeypatch.setenv("CROPFLOW_WORKDIR", str(tmp_path))
    settings = _settings(token=TOKEN, max_active_jobs=1)
    body = {"aoi": [13.60, 52.05, 13.62, 52.06], "start": "2024-03-01", "end": "2024-10-31"}
    req = MapRequest.model_validate(body)
    region = job_region(req, settings, write_aoi(req, settings))
    write_job(settings, JobRecord(id=req.key(), region=region["name"], run_id="run-0", request=req))
    assert region["name"] == f"aoi-{req.key()}"
    assert region["season"] == {"start": "2024-03-01", "end": "2024-10-31"}
    assert Path(region["aoi"]).is_file() and region["registered_model"] == "cropflow-demo"
    assert "labels" not in region and "schedule" not in region

    busy = _Busy()
    with TestClient(create_app(settings, busy)) as app:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        again = app.post("/maps", json=body, headers=bearer)
        assert again.status_code == 202 and again.json()["id"] == req.key()
        other = app.post("/maps", json={**body, "end": "2024-09-30"}, headers=bearer)
        assert other.status_code == 429, other.text
        assert busy.submitted == []
        status = app.get(f"/maps/jobs/{req.key()}").json()
        assert status["state"] == "RUNNING" and not status["done"] and status["map"] is None
        assert app.get("/maps/jobs/..%2F..%2Fx").status_code == 404
        assert app.get("/maps/jobs/0123456789abcdef").status_code == 404


def test_true_colour_composite_is_a_layer_of_the_season_median(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A cube with red, green and blue gets truecolor.tif (median over dates, 0-0.3 stretched,
    clear where no date saw the ground), served as a tile layer."""
    from affine import Affine

    from cropflow.classes import ClassDef, ClassMap
    from cropflow.predict import PredictParams, predict
    from cropflow.predict.testing import tiny_bundle, write_cube

    folder = tmp_path_factory.mktemp("rgb")
    t, h, w = 3, 40, 60
    per_date = {"red": [0.03, 0.06, 0.30], "green": [0.09, 0.12, 0.0], "blue": [0.15, 0.0, 0.03]}
    data = {
        b: np.stack([np.full((h, w), v, np.float32) for v in vals]) for b, vals in per_date.items()
    }
    for a in data.values():
        a[:, :10, :10] = np.nan  # never seen
        a[0, 20:, 30:] = np.nan  # seen on two dates only
    cube = write_cube(folder / "rgb.zarr", data, ["2024-05-01", "2024-06-01", "2024-07-01"],
                      Affine(10, 0, 500000, 0, -10, 5300000), "EPSG:32633")  # fmt: skip
    classes = ClassMap(classes=[ClassDef(id=1, name="a", color="#ff0000"),
                                ClassDef(id=2, name="b", color="#00ff00")])  # fmt: skip
    ltae = {"name": "ltae", "n_head": 2, "d_k": 4, "d_model": 8, "mlp_widths": [8],
            "decoder_widths": [8]}  # fmt: skip
    bundle = tiny_bundle(ltae, ["red", "green", "blue"], t, classes, "pixel", gain=2)
    params = PredictParams(cube=str(cube), key="rgb", region="serve-rgb", executor="local")
    products = build_products(predict(params, bundle))

    with rasterio.open(products.paths["truecolor"]) as src:
        rgba = src.read()

    def scale(v: float) -> int:
        return int(np.clip(v / 0.3 * 254 + 1, 1, 255))

    assert rgba[:, 5, 5].tolist() == [0, 0, 0, 0]
    assert rgba[:, 15, 15].tolist() == [scale(0.06), scale(0.09), scale(0.03), 255]
    # Two dates: the median of the last two.
    assert rgba[:, 30, 40].tolist() == [scale(0.18), scale(0.06), scale(0.015), 255]

    with TestClient(create_app(get_settings())) as api:
        m = api.get("/maps/serve-rgb").json()
        assert m["layers"] == ["class_map", "confidence", "truecolor"]
        lon, lat, _ = _pixel_lonlat(Path(products.paths["truecolor"]), 15, 15)
        pixel = _tile_pixel(api, "/maps/serve-rgb/tiles/truecolor", lon, lat)
        expected = [scale(0.06), scale(0.09), scale(0.03), 255]
        assert np.abs(pixel.astype(int) - expected).max() <= 2, pixel
